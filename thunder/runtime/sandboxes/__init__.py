"""thunder/runtime/sandboxes."""
