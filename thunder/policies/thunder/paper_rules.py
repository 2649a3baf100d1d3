"""The paper policy's configuration and orderings (ThunderAgent Eq. 10-11).

Apart from ``paper.py`` so the step implementations (``steps.py``) and the
tool-resource policy (``thunder.policies.tools``, which restores environments in
the scheduler's order) can use them without importing the policy itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from thunder.core.options import option, require, require_choice
from thunder.core.program import Phase, Program, ProgramId
from thunder.policies.thunder.index import queued_since_s

PLACEMENTS = ("best-fit", "most-free")
DECAY_WHEN = ("always", "restore-only")


@dataclass(frozen=True, slots=True)
class ThunderConfig:
    interval_s: float = option(5.0, "dt: seconds between periodic checks (read by the mechanism)")
    decay_base: float = option(2.0, "x in f(t) = x^-t, t = seconds acting; 1 disables decay")
    lambda_max: float = option(1.0, "high watermark: pause while demand > lambda_max * capacity")
    lambda_min: float = option(1.0, "low watermark: restore onto a backend only if demand < lambda_min * capacity")
    shared_prefix_once: bool = option(True, "count each distinct shared prefix once per backend")
    placement: str = option("best-fit", "where restores go: " + " | ".join(PLACEMENTS))
    decay_when: str = option("always", "apply f(t) in the thrashing check and restores, or in restores only: "
                             + " | ".join(DECAY_WHEN))
    decide_on_events: bool = option(True, "run the control step on every event, not only on the dt tick")
    starvation_s: float = option(60.0, "a program queued this long gets strict restore priority (s)")

    def __post_init__(self) -> None:
        require(self.interval_s > 0, "interval_s must be > 0")
        require(self.decay_base >= 1, "decay_base must be >= 1 (1 disables decay)")
        require(0 < self.lambda_min <= self.lambda_max, "need 0 < lambda_min <= lambda_max")
        require(self.starvation_s >= 0, "starvation_s must be >= 0 (math.inf disables aging)")
        require_choice("placement", self.placement, PLACEMENTS)
        require_choice("decay_when", self.decay_when, DECAY_WHEN)


def pause_order(program: Program) -> tuple[int, int, ProgramId]:
    """S_pause (Eq. 11) as a sort key: acting first, then shortest context."""
    return (0 if program.phase is Phase.ACTING else 1, program.context_tokens, program.program_id)


def restore_class(program: Program) -> int:
    """S_restore's state term (Eq. 10): 0 reasoning (request ready), 1 new, 2 acting."""
    if program.is_new:
        return 1
    return 0 if program.phase is Phase.REASONING else 2


def aged_order(program: Program) -> tuple[int, int, ProgramId]:
    """S_restore (Eq. 10) among programs on the same side of the aging bound."""
    return (restore_class(program), program.context_tokens, program.program_id)


def restore_order(aged_before_s: float) -> Callable[[Program], tuple[bool, int, int, ProgramId]]:
    """S_restore with the aging guard as a sort key: aged first, then Eq. 10, shortest, id."""
    return lambda p: (queued_since_s(p) > aged_before_s, restore_class(p), p.context_tokens, p.program_id)
