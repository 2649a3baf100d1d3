"""thunder/runtime/engines."""
