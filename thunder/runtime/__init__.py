"""The live world: asyncio proxy in front of real vLLM servers (not yet built)."""
