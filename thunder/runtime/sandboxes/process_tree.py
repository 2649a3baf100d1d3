"""Process trees on Linux: find every process a sandbox started, and kill them all.

A sandbox's commands run in their own process group, so ``killpg`` reaches
what they fork; a child that moved to its own session is still found as a
descendant in /proc (before its parent dies). Zombies count as gone: they
hold nothing but a table slot, and their parent or init reaps them.
Without /proc (not Linux) only the group is signalled.
"""

from __future__ import annotations

import asyncio
import os
import signal

_POLL_S = 0.05


def _proc_table() -> dict[int, tuple[int, int, str]]:
    """pid -> (ppid, pgrp, state) from /proc; empty where there is no /proc."""
    table = {}
    for name in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                text = handle.read().decode(errors="replace")
        except OSError:
            continue
        fields = text[text.rfind(")") + 2:].split()  # the command name may contain spaces
        table[int(name)] = (int(fields[1]), int(fields[2]), fields[0])
    return table


def process_tree(root_pid: int) -> set[int]:
    """The live processes of ``root_pid``'s group and all its descendants (a child that
    moved to its own session is still a descendant until its parent dies)."""
    table = _proc_table()
    if not table:  # no /proc: the group is all we can name
        return {root_pid}
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found = {pid for pid, (_, pgrp, _) in table.items() if pgrp == root_pid}
    stack = [root_pid]
    while stack:
        pid = stack.pop()
        if pid in table:
            found.add(pid)
        stack.extend(children.get(pid, ()))
    return {pid for pid in found if table.get(pid, (0, 0, "Z"))[2] not in ("Z", "X")}


def _alive(pids: set[int]) -> set[int]:
    table = _proc_table()
    if not table:
        alive = set()
        for pid in pids:
            try:
                os.kill(pid, 0)
                alive.add(pid)
            except ProcessLookupError:
                pass
            except PermissionError:
                alive.add(pid)
        return alive
    # Zombies hold nothing but a table slot; their parent (or init) reaps them.
    return {pid for pid in pids if pid in table and table[pid][2] not in ("Z", "X")}


def _signal(pids: set[int], group: int, sig: int) -> None:
    try:
        os.killpg(group, sig)
    except (ProcessLookupError, PermissionError):
        pass
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


async def kill_tree(root_pid: int, grace_s: float) -> tuple[set[int], bool]:
    """SIGTERM ``root_pid``'s group and descendants, SIGKILL what is left after ``grace_s``.
    Returns (pids still alive, whether SIGKILL was needed)."""
    pids = process_tree(root_pid)
    _signal(pids, root_pid, signal.SIGTERM)
    if await _wait_gone(pids, grace_s) == set():
        return set(), False
    pids |= process_tree(root_pid)  # children forked during the grace period
    _signal(pids, root_pid, signal.SIGKILL)
    return await _wait_gone(pids, 2.0), True


async def _wait_gone(pids: set[int], timeout_s: float) -> set[int]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    alive = _alive(pids)
    while alive and loop.time() < deadline:
        await asyncio.sleep(_POLL_S)
        alive = _alive(alive)
    return alive


__all__ = ["kill_tree", "process_tree"]
