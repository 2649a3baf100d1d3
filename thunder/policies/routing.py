"""Backend choice for request-level routers (vLLM's router, Continuum).

Pure helpers over ``BackendView`` snapshots. Tie-break order is always the
lowest ``backend_id``, so replays give the same answer.
"""

from __future__ import annotations

from typing import Sequence

from thunder.core.program import BackendId, Program
from thunder.core.view import BackendView


def least_loaded(backends: Sequence[BackendView]) -> BackendId | None:
    """The healthy backend with the fewest running tokens, then fewest waiting
    requests, then the lowest id; None when no backend is healthy."""
    healthy = [b for b in backends if b.healthy]
    if not healthy:
        return None
    best = min(healthy, key=lambda b: (b.running_tokens, b.waiting_requests, b.backend_id))
    return best.backend_id


def previous_backend(backends: Sequence[BackendView], program: Program) -> BackendId | None:
    """The backend ``program`` used before, if it is still healthy (session affinity)."""
    if program.backend is None:
        return None
    for backend in backends:
        if backend.backend_id == program.backend:
            return backend.backend_id if backend.healthy else None
    return None


def sticky(backends: Sequence[BackendView], program: Program) -> BackendId | None:
    """Where a KV-aware router sends ``program``: back to where its cache is,
    else (new program, or its backend is gone) to the least-loaded backend."""
    before = previous_backend(backends, program)
    return before if before is not None else least_loaded(backends)
