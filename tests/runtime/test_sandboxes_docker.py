"""The Docker provider, only where a Docker engine answers (skipped otherwise, with why)."""

from __future__ import annotations

import asyncio

import pytest

from thunder.runtime.sandboxes.docker import DockerSandboxProvider


def test_a_container_is_created_and_removed_by_image():
    docker = DockerSandboxProvider()
    why = asyncio.run(docker.unavailable())
    if why is not None:
        pytest.skip(why)

    async def scenario():
        container = await docker.create("busybox", "thunder-test-sandbox")
        assert container
        assert await docker.remove(container) is None
    asyncio.run(scenario())
