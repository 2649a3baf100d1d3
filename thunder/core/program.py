"""The LLM program, paper Eq. 1: P = <id, c, T, L, phase, status>.

``Program`` is the frozen view a policy sees. The mechanisms (simulator,
live proxy) own the mutable truth and hand policies a fresh ``Program`` each
time something about it changes; a policy never mutates one.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

ProgramId = str
BackendId = int


class Phase(Enum):
    REASONING = "reasoning"  # an LLM request is in flight or ready to be sent
    ACTING = "acting"  # a tool call is running; no request in flight


class Status(Enum):
    ACTIVE = "active"  # bound to a backend; its requests are dispatched there
    PAUSED = "paused"  # in the global waiting queue; no backend; requests are held


@dataclass(frozen=True, slots=True)
class Program:
    """One agent workflow as the scheduler sees it.

    Units: tokens and seconds. ``context_tokens`` is c: the program's whole
    context (last prompt + tokens generated since), i.e. what its KV cache
    holds when fully resident. ``phase_since_s`` is when the current phase
    began (for an acting program, when its tool started: t in f(t) = x^-t).
    ``steps_done == 0`` marks a new program that has never run.
    ``waiting`` is true when a request is ready and held by the mechanism.
    ``max_output_tokens`` is the ready or in-flight request's ``max_tokens``
    (None if the client set none); ``group_id`` names the rollout group the
    program belongs to, if any.
    """

    program_id: ProgramId
    context_tokens: int
    phase: Phase
    status: Status
    backend: BackendId | None
    phase_since_s: float
    arrived_s: float
    steps_done: int = 0
    waiting: bool = False
    marked_for_pause: bool = False
    tool: str | None = None
    shared_prefix_id: str | None = None
    shared_prefix_tokens: int = 0
    pinned_until_s: float | None = None
    paused_since_s: float | None = None
    # What the mechanism knows of the request in flight or ready: the client's
    # ``max_tokens`` (None: not given). A policy may reserve KV for decode growth by it.
    max_output_tokens: int | None = None
    last_output_tokens: int | None = None  # tokens its last completed request generated (usage)
    group_id: str | None = None  # a rollout group (e.g. one GRPO prompt's samples); None: none

    @property
    def is_new(self) -> bool:
        return self.steps_done == 0

    def acting_for_s(self, now_s: float) -> float:
        """Seconds spent in the current acting phase (0 while reasoning)."""
        if self.phase is not Phase.ACTING:
            return 0.0
        return max(0.0, now_s - self.phase_since_s)
