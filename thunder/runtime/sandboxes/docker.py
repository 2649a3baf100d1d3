"""Sandboxes as Docker containers: create and start one by image, remove it.

Minimal, and not wired into the proxy: ``unavailable()`` says why when no
engine answers ``docker info`` (none runs where this was developed, so this
module is untested there).
"""

from __future__ import annotations

import asyncio

from thunder.runtime.sandboxes.provider import SetupFailed


class DockerSandboxProvider:
    """A container per sandbox, by image (``docker create`` + ``start``; ``docker rm -f``).

    Minimal and not exercised by the test suite where no engine runs."""

    def __init__(self, docker: str = "docker") -> None:
        self.docker = docker

    async def _run(self, *args: str, timeout_s: float) -> tuple[int, str]:
        try:
            process = await asyncio.create_subprocess_exec(
                self.docker, *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT)
        except OSError as exc:
            return 127, str(exc)
        try:
            out, _ = await asyncio.wait_for(process.communicate(), timeout_s)
        except asyncio.TimeoutError:
            process.kill()
            await process.wait()
            return 124, f"docker {args[0]} timed out after {timeout_s:g} s"
        return process.returncode or 0, out.decode(errors="replace").strip()

    async def unavailable(self, timeout_s: float = 3.0) -> str | None:
        """None when an engine answers ``docker info``; else why not."""
        code, out = await self._run("info", "--format", "{{.ServerVersion}}", timeout_s=timeout_s)
        return None if code == 0 else f"no Docker engine reachable ({out.splitlines()[-1] if out else code})"

    async def create(self, image: str, name: str, timeout_s: float = 600.0) -> str:
        """Create and start a container; returns its id (SetupFailed on error)."""
        code, out = await self._run("create", "--name", name, "--label", "thunder.sandbox=1", image,
                                    timeout_s=timeout_s)
        if code != 0:
            raise SetupFailed(f"docker create {image}: {out}")
        container = out.splitlines()[-1]
        code, out = await self._run("start", container, timeout_s=timeout_s)
        if code != 0:
            await self.remove(container)
            raise SetupFailed(f"docker start {image}: {out}")
        return container

    async def remove(self, container: str, timeout_s: float = 60.0) -> str | None:
        """``docker rm -f``; None on success, else the error."""
        code, out = await self._run("rm", "-f", container, timeout_s=timeout_s)
        return None if code == 0 else out


__all__ = ["DockerSandboxProvider"]
