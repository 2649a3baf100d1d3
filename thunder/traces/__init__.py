"""thunder/traces."""
