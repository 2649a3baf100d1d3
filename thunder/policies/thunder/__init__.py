"""thunder/policies/thunder."""
