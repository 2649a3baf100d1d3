"""What a live run records: step, program and decision rows, plus counters.

Rows follow the one schema of ``thunder.core.records``, so the same notebook
reads a simulated and a live run. Times are seconds since the proxy
started. Row stores are bounded deques: a proxy that runs for weeks keeps the
newest ``max_records`` rows, not all of them.
"""

from __future__ import annotations

import csv
import io
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Iterable

from thunder.core import records as schema
from thunder.core.records import DECISION_COLUMNS, TABLES, DecisionRow
from thunder.runtime.state import Ticket, Usage


# Queue-wait histogram bounds (s): a held request waits from milliseconds to minutes.
WAIT_BOUNDS_S = (0.001, 0.01, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0)


@dataclass(slots=True)
class Histogram:
    """Fixed-bound histogram: counts per bucket (last one is +Inf) and the sum."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    sum_value: float = 0.0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        index = 0
        for bound in self.bounds:  # short tuples: a linear scan beats bisect's call overhead
            if value <= bound:
                break
            index += 1
        self.counts[index] += 1
        self.sum_value += value


@dataclass(slots=True)
class LiveRecords:
    max_records: int = 1_000_000
    steps: deque[dict[str, Any]] = field(default_factory=deque)
    programs: deque[dict[str, Any]] = field(default_factory=deque)
    decisions: deque[DecisionRow] = field(default_factory=deque)
    actions: Counter[str] = field(default_factory=Counter)  # pause, restore, migrate, mark, pin, reclaim ...
    outcomes: Counter[str] = field(default_factory=Counter)  # ok, aborted, hold_timeout, rejected, upstream_error
    prompt_tokens: int = 0
    cached_tokens: int = 0
    sync_pauses: int = 0  # weight-sync holds of every dispatch, ended
    sync_paused_s: float = 0.0  # their total length (s)
    queue_wait: Histogram = field(default_factory=lambda: Histogram(WAIT_BOUNDS_S))

    def __post_init__(self) -> None:
        self.steps = deque(maxlen=self.max_records)
        self.programs = deque(maxlen=self.max_records)
        self.decisions = deque(maxlen=self.max_records)

    def decision(self, time_s: float, action: str, program_id: str, backend: int | None, reason: str = "") -> None:
        self.actions[action] += 1
        self.decisions.append((time_s, action, program_id, backend, reason))

    def step(self, row: dict[str, Any]) -> None:
        self.steps.append(row)
        self.prompt_tokens += row["prompt_tokens"] or 0
        self.cached_tokens += row["cached_tokens"] or 0

    @property
    def kv_hit_rate(self) -> float:
        """Cached prompt tokens / prompt tokens over every completed request."""
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0

    def rows(self, table: str) -> Iterable[dict[str, Any]]:
        if table == "decisions":
            return (dict(zip(DECISION_COLUMNS, row)) for row in self.decisions)
        return iter(self.steps if table == "steps" else self.programs)

    def to_csv(self, table: str = "steps") -> str:
        """One table as CSV text; empty cells for unknown values (None)."""
        if table not in TABLES:
            raise ValueError(f"unknown table {table!r}; known: {', '.join(TABLES)}")
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=TABLES[table], extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows(table))
        return out.getvalue()


def step_row(ticket: Ticket, usage: Usage | None, done_s: float, block_size: int) -> dict[str, Any]:
    """The steps-table row of one completed request. Live runs cannot see engine
    admission or preemptions per request: those cells stay empty (None)."""
    recompute = None
    if usage is not None:
        # Tokens computed before (the last known context, in whole blocks: only those
        # can be cached) that the engine did not find cached now were prefilled again.
        computed = min(ticket.prior_tokens, usage.prompt_tokens) // block_size * block_size
        recompute = max(0, computed - usage.cached_tokens)
    return schema.step_row(
        program_id=ticket.program_id, step=ticket.step, backend=ticket.backend,
        ready_s=ticket.ready_s, dispatched_s=ticket.dispatched_s, engine_arrival_s=None, admitted_s=None,
        first_token_s=ticket.first_token_s, done_s=done_s,
        prompt_tokens=usage.prompt_tokens if usage else None,
        cached_tokens=usage.cached_tokens if usage else None, recompute_tokens=recompute,
        output_tokens=usage.completion_tokens if usage else None, preemptions=None,
        tool=ticket.tool, tool_s=None)
