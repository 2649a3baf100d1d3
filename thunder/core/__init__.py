"""thunder/core."""
