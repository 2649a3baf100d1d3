"""Builders for hand-made ``ClusterView`` snapshots in policy tests.

Kept in a plainly named module (not conftest.py) so test files can import
it directly: conftest modules from several test folders share one name.

Defaults: backends of 1000 tokens, time 0, programs that have run before
(``steps_done=1``). Token counts are chosen so the arithmetic is readable.
"""

from __future__ import annotations

from typing import Any, Iterable

from thunder.core.program import Phase, Program, Status
from thunder.core.view import BackendView, ClusterView


def reasoning(pid: str, tokens: int, on: int = 0, **extra: Any) -> Program:
    """ACTIVE on backend ``on``, a request in flight or ready."""
    return _program(pid, tokens, Phase.REASONING, Status.ACTIVE, on, **extra)


def acting(pid: str, tokens: int, on: int = 0, since: float = 0.0, **extra: Any) -> Program:
    """ACTIVE on backend ``on``, its tool running since ``since``."""
    return _program(pid, tokens, Phase.ACTING, Status.ACTIVE, on, phase_since_s=since, **extra)


def waiting(pid: str, tokens: int, queued_at: float = 0.0, **extra: Any) -> Program:
    """PAUSED in the global queue with its next request ready (reasoning class)."""
    return _program(pid, tokens, Phase.REASONING, Status.PAUSED, None, waiting=True,
                    paused_since_s=queued_at, **extra)


def paused_acting(pid: str, tokens: int, since: float = 0.0, queued_at: float = 0.0,
                  **extra: Any) -> Program:
    """PAUSED in the global queue while its tool runs (acting class)."""
    return _program(pid, tokens, Phase.ACTING, Status.PAUSED, None, phase_since_s=since,
                    paused_since_s=queued_at, **extra)


def new(pid: str, tokens: int, arrived: float = 0.0, **extra: Any) -> Program:
    """A program that has never run, queued on arrival (new class)."""
    return _program(pid, tokens, Phase.REASONING, Status.PAUSED, None, steps_done=0, waiting=True,
                    arrived_s=arrived, phase_since_s=arrived, **extra)


def cluster(*programs: Program, capacity: int | Iterable[int] = 1000, now: float = 0.0,
            unhealthy: Iterable[int] = ()) -> ClusterView:
    """A snapshot with backends 0..n-1 of the given capacities (one int: one backend)."""
    capacities = [capacity] if isinstance(capacity, int) else list(capacity)
    down = set(unhealthy)
    backends = tuple(BackendView(i, cap, healthy=i not in down) for i, cap in enumerate(capacities))
    return ClusterView(now_s=now, backends=backends, programs={p.program_id: p for p in programs})


def engine_loads(*running_tokens: int, waiting: Iterable[int] = ()) -> ClusterView:
    """Backends 0..n-1 as an engine reports them: running tokens (and waiting requests)."""
    waits = list(waiting) or [0] * len(running_tokens)
    backends = tuple(BackendView(i, 100_000, running_tokens=r, waiting_requests=w)
                     for i, (r, w) in enumerate(zip(running_tokens, waits)))
    return ClusterView(now_s=0.0, backends=backends)


def _program(pid: str, tokens: int, phase: Phase, status: Status, backend: int | None,
             **extra: Any) -> Program:
    fields: dict[str, Any] = {"phase_since_s": 0.0, "arrived_s": 0.0, "steps_done": 1}
    fields.update(extra)
    return Program(program_id=pid, context_tokens=tokens, phase=phase, status=status,
                   backend=backend, **fields)
