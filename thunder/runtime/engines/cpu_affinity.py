"""Give a vLLM engine core CPUs of its own (Linux).

On a small CPU machine the engine core shares cores with its API server, the proxy and the
clients, and whatever the kernel schedules beside it stretches its steps. Pinning it keeps
those apart. On the two-core development machine it made no difference larger than the
run-to-run noise (``benchmarks/engine_steps.py --pin-engine``, every step timed inside vLLM:
replay steps at 0.94-1.06x the calibrated step model pinned, 0.83-1.20x unpinned, four runs),
so it is off by default. Affinity is per thread, so every thread of a process is placed;
threads started later inherit their creator's.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

ENGINE_CORE_NAME = "VLLM::EngineCor"  # "VLLM::EngineCore" cut to the kernel's 15 characters


def process_group(pgid: int, proc: Path = Path("/proc")) -> dict[int, str]:
    """pid -> command name of every process in group ``pgid``."""
    members: dict[int, str] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text(errors="replace")
        except OSError:
            continue  # ended meanwhile
        name = stat[stat.find("(") + 1:stat.rfind(")")]
        fields = stat[stat.rfind(")") + 2:].split()
        if int(fields[2]) == pgid:  # state, ppid, pgrp
            members[int(entry.name)] = name
    return members


def pin_process(pid: int, cpus: Iterable[int], proc: Path = Path("/proc")) -> int:
    """Set the affinity of every thread of ``pid``; returns how many were placed."""
    placed = 0
    target = set(cpus)
    for thread in (proc / str(pid) / "task").iterdir():
        try:
            os.sched_setaffinity(int(thread.name), target)
        except (ProcessLookupError, FileNotFoundError):
            continue  # the thread ended
        placed += 1
    return placed


def place_engine_core(pgid: int, engine_cpus: Iterable[int]) -> dict[str, list[int]]:
    """Pin the engine-core process of the vLLM server led by ``pgid`` to ``engine_cpus`` and
    the group's other processes (API server, helpers) to the CPUs left; returns name -> CPUs.
    Raises ``ValueError`` for CPUs the server may not use, ``LookupError`` when the group has
    no engine core (a layout this does not know)."""
    engine = set(engine_cpus)
    usable = os.sched_getaffinity(pgid)  # what the server was started with
    if not engine or not engine <= usable:
        raise ValueError(f"engine CPUs {sorted(engine)} are not a non-empty subset of {sorted(usable)}")
    rest = usable - engine or usable  # one CPU in all: nothing to keep off it
    members = process_group(pgid)
    if ENGINE_CORE_NAME not in members.values():
        raise LookupError(f"no {ENGINE_CORE_NAME} process in group {pgid}: {sorted(set(members.values()))}")
    placement: dict[str, list[int]] = {}
    for pid, name in members.items():
        cpus = engine if name == ENGINE_CORE_NAME else rest
        pin_process(pid, cpus)
        placement[f"{name} ({pid})"] = sorted(cpus)
    return placement
