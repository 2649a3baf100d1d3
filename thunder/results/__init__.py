"""thunder/results."""
