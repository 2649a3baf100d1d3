"""Real sandboxes on the proxy's own host: a work directory, a loopback port, processes.

OS mechanics only; which sandbox to prepare or tear down, and when, is the
tool-resource policy's call, applied by ``LiveToolHost`` (``tool_host``).

* ``allocate`` makes a work directory under the root and hands out a
  loopback port from a range, bind-tested and remembered in a registry so
  that no port is handed out twice (the kernel would happily reuse one we
  closed a moment ago).
* ``run_setup`` runs a shell command in the directory (its own process
  group, stdout and stderr to ``.thunder-setup.log`` there) with a time
  limit; ``start_process`` starts a long-running command the same way.
  Commands see ``PORT`` and ``SANDBOX_DIR`` in their environment.
* ``release`` kills the process tree (SIGTERM to the group and to every
  descendant found in /proc, then SIGKILL after a grace period), checks the
  port is free again before unregistering it, and deletes the directory. It
  returns what it could not do; the caller retries and reports. It is
  idempotent: a retry does only what is left.

Process trees are found and killed by ``process_tree``; containers, by
``docker_sandboxes`` (minimal, not wired into the proxy).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from thunder.runtime.sandboxes.process_tree import kill_tree, process_tree

log = logging.getLogger(__name__)

SETUP_LOG = ".thunder-setup.log"
PROCESS_LOG = ".thunder-process.log"
_TAIL_BYTES = 2000
_POLL_S = 0.05


@dataclass(frozen=True, slots=True)
class SandboxSpec:
    """What a sandbox is made of. Units: bytes, seconds."""

    setup_command: str | None = None  # run once in the directory before the sandbox is ready
    process_command: str | None = None  # long-running, started after setup, killed on release
    disk_quota_bytes: int = 1 << 30  # what the sandbox reserves on the host (the policy plans with it)
    expected_setup_s: float = 0.0  # a hint for the policy (EnvResources.setup_s)
    wait_for_port: bool = False  # ready only once the process accepts connections on PORT


@dataclass(frozen=True, slots=True)
class Allocation:
    """One prepared instance of a sandbox: its directory and port."""

    name: str
    path: Path
    port: int


class SetupFailed(Exception):
    """The setup command failed, timed out, or the process did not come up."""


class NoFreePort(Exception):
    """Every port of the range is held or bound by someone else."""


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Can we bind it? SO_REUSEADDR so that closed connections in TIME_WAIT do not
    count as held, while a listening socket still does (Linux semantics)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


class PortRegistry:
    """Loopback ports ``first..last`` handed out at most once until released."""

    def __init__(self, first: int, last: int, host: str = "127.0.0.1") -> None:
        self.first, self.last, self.host = first, last, host
        self.held: set[int] = set()
        self._cursor = first  # round robin: a port just freed is the last to be reused

    @property
    def capacity(self) -> int:
        return self.last - self.first + 1

    def allocate(self) -> int:
        for _ in range(self.capacity):
            port = self._cursor
            self._cursor = self.first if port >= self.last else port + 1
            if port not in self.held and port_is_free(port, self.host):
                self.held.add(port)
                return port
        raise NoFreePort(f"no free port in {self.first}-{self.last} ({len(self.held)} held by sandboxes)")

    def release(self, port: int) -> None:
        self.held.discard(port)


def tree_bytes(path: Path) -> int:
    """Disk held under ``path``: allocated blocks of every file, hard links once, no symlinks followed."""
    total, seen = 0, set()
    stack = [str(path)]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue  # vanished or unreadable while we walk: measure what is there
        for entry in entries:
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(info.st_mode):
                stack.append(entry.path)
            elif (info.st_dev, info.st_ino) not in seen:
                seen.add((info.st_dev, info.st_ino))
                total += getattr(info, "st_blocks", 0) * 512 or info.st_size
    return total


def _tail(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(max(0, path.stat().st_size - _TAIL_BYTES))
            return handle.read().decode(errors="replace").strip()
    except OSError:
        return ""


# -- the provider ----------------------------------------------------------------------

class LocalSandboxProvider:
    """Sandboxes as directories, ports and process groups on this host."""

    def __init__(self, root: Path, ports: PortRegistry, term_grace_s: float = 2.0,
                 remove_tree: Callable[[Path], None] = shutil.rmtree) -> None:
        self.root = root
        self.ports = ports
        self.term_grace_s = term_grace_s
        self.remove_tree = remove_tree  # injectable: tests make deletion fail
        self.sigkills = 0  # process trees that ignored SIGTERM
        self._processes: dict[str, asyncio.subprocess.Process] = {}
        self._serial = 0

    def allocate(self, sandbox_id: str) -> Allocation:
        """A fresh directory and port (raises OSError or NoFreePort, leaving nothing held)."""
        self._serial += 1
        name = f"{sandbox_id}-{self._serial}"  # an instance prepared again gets a new directory
        path = self.root / name
        path.mkdir(parents=True)
        try:
            port = self.ports.allocate()
        except NoFreePort:
            path.rmdir()
            raise
        return Allocation(name, path, port)

    def _env(self, alloc: Allocation) -> dict[str, str]:
        return {**os.environ, "PORT": str(alloc.port), "SANDBOX_DIR": str(alloc.path)}

    async def _spawn(self, alloc: Allocation, command: str, log_name: str) -> asyncio.subprocess.Process:
        with (alloc.path / log_name).open("ab") as output:
            return await asyncio.create_subprocess_shell(
                command, cwd=alloc.path, env=self._env(alloc), stdin=asyncio.subprocess.DEVNULL,
                stdout=output, stderr=asyncio.subprocess.STDOUT,
                start_new_session=True)  # its own group: killpg reaches everything it forks

    async def run_setup(self, alloc: Allocation, command: str, timeout_s: float) -> None:
        """Run ``command`` to completion in the directory; SetupFailed on error or timeout.
        Cancelled (the sandbox is torn down meanwhile): the setup's tree is killed first."""
        process = await self._spawn(alloc, command, SETUP_LOG)
        try:
            code = await asyncio.wait_for(process.wait(), timeout_s)
        except asyncio.TimeoutError:
            await self._kill(process)
            raise SetupFailed(f"setup timed out after {timeout_s:g} s") from None
        except asyncio.CancelledError:
            await self._kill(process)
            raise
        if code != 0:
            await self._kill(process)  # a failed setup may leave background children
            raise SetupFailed(f"setup exited with {code}: {_tail(alloc.path / SETUP_LOG)}")

    async def start_process(self, alloc: Allocation, command: str, wait_for_port: bool, timeout_s: float) -> None:
        """Start the long-running command; with ``wait_for_port``, return once it accepts
        connections on the sandbox's port (SetupFailed if it exits or times out first)."""
        process = await self._spawn(alloc, command, PROCESS_LOG)
        self._processes[alloc.name] = process
        if not wait_for_port:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not await _accepts(alloc.port):
            if process.returncode is not None:
                raise SetupFailed(f"process exited with {process.returncode} before listening on "
                                  f"{alloc.port}: {_tail(alloc.path / PROCESS_LOG)}")
            if loop.time() >= deadline:
                raise SetupFailed(f"process not listening on port {alloc.port} after {timeout_s:g} s")
            await asyncio.sleep(_POLL_S)

    def process_pid(self, alloc: Allocation) -> int | None:
        process = self._processes.get(alloc.name)
        return process.pid if process is not None else None

    async def _kill(self, process: asyncio.subprocess.Process) -> set[int]:
        survivors, escalated = await kill_tree(process.pid, self.term_grace_s)
        if escalated:
            self.sigkills += 1
            log.warning("sandbox process %d ignored SIGTERM for %.1f s: killed", process.pid, self.term_grace_s)
        if process.returncode is None and process.pid not in survivors:
            await process.wait()  # reap it, so no zombie of ours is left
        return survivors

    async def release(self, alloc: Allocation) -> list[str]:
        """Kill the tree, free the port, delete the directory. Returns what is still held
        (empty: everything is gone); what succeeded is not redone on a retry."""
        problems = []
        process = self._processes.get(alloc.name)
        if process is not None:
            survivors = await self._kill(process)
            if survivors:
                problems.append(f"processes {sorted(survivors)} still alive")
            else:
                del self._processes[alloc.name]
        if alloc.port in self.ports.held:
            if port_is_free(alloc.port, self.ports.host):
                self.ports.release(alloc.port)
            else:
                problems.append(f"port {alloc.port} still bound")
        if alloc.path.exists():
            try:
                self.remove_tree(alloc.path)
            except OSError as exc:
                problems.append(f"cannot delete {alloc.path}: {exc}")
        return problems

    def disk_bytes(self, alloc: Allocation) -> int:
        return tree_bytes(alloc.path)


async def _accepts(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    return True


__all__ = ["Allocation", "LocalSandboxProvider", "NoFreePort", "PortRegistry", "SandboxSpec", "SetupFailed",
           "kill_tree", "port_is_free", "process_tree", "tree_bytes"]
