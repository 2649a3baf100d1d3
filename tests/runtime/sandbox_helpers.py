"""Shared by the sandbox tests (imported by name; no conftest.py): find and kill what a
test left running under its sandbox root, so a failing test leaves no process behind."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from thunder.runtime.sandboxes.provider import port_is_free, process_tree


def processes_under(root: Path) -> set[int]:
    """Live processes whose working directory is inside ``root``, and their trees."""
    found: set[int] = set()
    root_text = str(root.resolve())
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            cwd = os.readlink(f"/proc/{name}/cwd")
        except OSError:
            continue
        if cwd == root_text or cwd.startswith(root_text + os.sep):
            found |= process_tree(int(name))
    return found


def kill_leftovers(root: Path) -> set[int]:
    """SIGKILL every process found under ``root``; returns their pids (empty: clean)."""
    pids = processes_under(root)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return pids


def held_ports(ports: range) -> list[int]:
    return [port for port in ports if not port_is_free(port)]


# A process that forks a child which forks a grandchild, all sleeping in the sandbox:
# the tree a release must kill whole. The HTTP server binds the sandbox's port.
SERVER = f"{sys.executable} -m http.server $PORT --bind 127.0.0.1"
TREE = f"{SERVER} & sh -c 'sleep 300 & wait' & wait"
