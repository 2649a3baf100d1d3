"""One LLM call inside a simulated engine, and the per-step plan that runs it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from thunder.sim.kv import SeqKey


@dataclass(slots=True, eq=False)
class Request:
    """Tokens unless named otherwise. ``computed`` counts tokens whose KV exists;
    ``target`` is how many must exist before the next token is sampled (the
    prompt, plus what was generated before a preemption, which is recomputed)."""

    program_id: str
    step_index: int
    prompt_tokens: int
    output_tokens: int
    program_key: SeqKey
    shared_key: SeqKey | None
    shared_blocks: int
    prior_tokens: int  # tokens of this prompt the program computed before (re-prefill = recompute)
    priority: float = 0.0
    order: int = 0  # submit order (waiting-queue tie break)
    seq: int = 0  # admission order (running-list position)
    submitted_s: float = 0.0
    engine_arrival_s: float = 0.0  # after the front end (EngineSpec.request_overhead_s, frontend_s)
    admitted_s: float | None = None
    first_token_s: float | None = None
    done_s: float | None = None
    computed: int = 0
    generated: int = 0
    target: int = 0
    program_blocks_held: int = 0
    holds_shared: bool = False
    hit_tokens: int | None = None  # cached tokens at first admission (what vLLM reports)
    recompute_tokens: int = 0
    prefilled_tokens: int = 0
    recompute_frontier: int = 0
    preemptions: int = 0
    # lazy decode state (see thunder.sim.decoders)
    base_clock: int = 0
    base_computed: int = 0
    base_generated: int = 0
    residue: int = 0
    decode_token: int = 0
    on_done: Callable[["Request"], None] | None = None

    @property
    def prefill_target(self) -> int:
        return self.prompt_tokens + max(self.generated - 1, 0)

    def blocks_for(self, tokens: int, block_size: int) -> int:
        """Program blocks needed to hold ``tokens`` (beyond the shared prefix blocks)."""
        return max(0, -(-tokens // block_size) - self.shared_blocks)


@dataclass(slots=True)
class StepPlan:
    """What one engine step runs. In the lazy form decoders are implicit (every
    member of the DecodeSet takes one token); ``explicit`` lists every request."""

    prefill: list[tuple[Request, int]] = field(default_factory=list)
    explicit: list[tuple[Request, int]] | None = None
    preempted: bool = False
    joined: int = 0  # requests admitted into the running batch by this step (new or resumed)

    def is_empty(self, lazy_decoders: int) -> bool:
        if self.explicit is not None:
            return not self.explicit
        return not self.prefill and lazy_decoders == 0


@dataclass(slots=True)
class EngineCounters:
    """What a replica did over a run (for summaries and the speed benchmarks)."""

    steps: int = 0
    jumps: int = 0
    explicit_steps: int = 0
    lazy_preemption_steps: int = 0  # steps that preempted without the explicit path
    preemptions: int = 0
    prompt_tokens: int = 0
    hit_tokens: int = 0
    busy_s: float = 0.0
