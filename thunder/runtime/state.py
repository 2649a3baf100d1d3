"""Mechanism-side state of the live runtime: requests (tickets), programs, backends.

Mutable records that ``LiveCluster`` owns and never shows to a policy (a
policy sees the frozen ``Program`` and ``BackendView`` values instead), plus
the small frozen values the proxy hands in (``Usage``, ``BackendState``).
No asyncio objects live here: futures of held requests belong to the proxy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from thunder.core.program import BackendId, ProgramId

# Why held requests are failed (the proxy maps them to HTTP statuses).
RELEASED = "program released while its request was held"
NO_BACKEND = "no healthy backend"
SHUTTING_DOWN = "the proxy is shutting down"


class TicketState(Enum):
    HELD = "held"  # waiting at the proxy for the policy
    DISPATCHED = "dispatched"  # sent (or about to be sent) to ``backend``
    FINISHED = "finished"  # completed, failed or rejected: nothing more to account


@dataclass(slots=True, eq=False)
class Ticket:
    """One client request through the proxy (mechanism state, mutable)."""

    request_id: int
    program_id: ProgramId
    step: int
    ready_s: float
    prior_tokens: int  # the program's known context before this request (0: none yet)
    state: TicketState = TicketState.HELD
    backend: BackendId | None = None
    tokens: int = 0  # context counted against the backend while in flight
    dispatched_s: float | None = None
    first_token_s: float | None = None
    hold_reason: str = ""
    tool: str | None = None  # the tool the client says follows this response, if it says
    owner: LiveProgram | None = None  # the program it belongs to (ids can be reused after release)
    estimate_tokens: int = 0  # the request's size estimate (bytes / 4, or its token ids)
    sync_held: bool = False  # waited for a weight sync (``DispatchHold``)


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts from a response's ``usage``."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0


@dataclass(frozen=True, slots=True)
class BackendState:
    """What the backend adapter last learnt about one backend."""

    url: str
    healthy: bool = False
    capacity_tokens: int = 0
    block_size: int = 1
    waiting_requests: int = 0
    reason: str = "not checked yet"


@dataclass(slots=True, eq=False)
class LiveProgram:
    """Mechanism-side state of one program (never shown to a policy)."""

    program_id: ProgramId
    arrived_s: float
    one_turn: bool  # sent without a program id: released when its request ends
    last_seen_s: float
    in_flight: int = 0
    held: list[Ticket] = field(default_factory=list)
    known_tokens: int = 0  # prompt + completion of the last response
    known_estimate: int = 0  # the size estimate of the request that response answered
    known_prompt_tokens: int = 0  # that response's prompt tokens
    group_id: str | None = None  # rollout group, as the client named it
    last_step: dict[str, Any] | None = None
    last_backend: BackendId | None = None
    started_s: float | None = None
    pinned_until_s: float | None = None
    pauses: int = 0
    restores: int = 0
    migrations: int = 0
    queue_s: float = 0.0


@dataclass(slots=True)
class DispatchHold:
    """A weight-sync pause of every dispatch (``LiveCluster.hold_dispatches``)."""

    reason: str
    since_s: float
    until_s: float | None = None
    held_requests: int = 0  # requests it made wait
