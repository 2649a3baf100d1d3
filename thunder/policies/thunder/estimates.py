"""Online estimates a policy learns from what it observes: output lengths and tool durations.

Both are fed only by what either world can see (the simulator's records, or a
live response's ``usage`` and the gap between a response and the program's
next request), so the same policy decides the same way in both.

* ``OutputLengths``: the tokens a running request may still generate. The
  estimate is a high quantile of the program's own recent outputs once it has
  a few, else of every program's, else a prior; capped by the request's
  ``max_tokens`` when the client sent one (a hard bound).
* ``ToolDurations``: how likely an acting program is to need its KV again
  soon. For a tool running for ``t`` seconds, ``return_probability`` is the
  share of that tool's past durations longer than ``t`` that ended within
  ``t + horizon``: a short, predictable tool (always 0.3 s) scores ~1 until it
  is overdue, and a long or erratic one scores low, so its cache is given up
  (Continuum's insight that tool time is predictable per tool, applied as a
  weight instead of a fixed TTL).

Windows are bounded (the last ``window`` samples), so the estimates follow a
workload that changes and cost O(window) memory.
"""

from __future__ import annotations

from bisect import bisect_right, insort
from collections import deque
from dataclasses import dataclass, field


@dataclass(slots=True)
class SampleWindow:
    """The last ``window`` samples, kept sorted as well for quantiles and counts."""

    window: int
    recent: deque[float] = field(default_factory=deque)
    ordered: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        if len(self.recent) == self.window:
            old = self.recent.popleft()
            del self.ordered[bisect_right(self.ordered, old) - 1]
        self.recent.append(value)
        insort(self.ordered, value)

    def __len__(self) -> int:
        return len(self.ordered)

    def quantile(self, q: float) -> float:
        """The sample at rank ceil(q * n) (nearest rank; no interpolation)."""
        n = len(self.ordered)
        rank = min(n - 1, max(0, int(-(-q * n // 1)) - 1))
        return self.ordered[rank]

    def count_above(self, value: float) -> int:
        return len(self.ordered) - bisect_right(self.ordered, value)


class OutputLengths:
    """Learned output length per program and overall (tokens)."""

    def __init__(self, quantile: float, prior_tokens: int, min_samples: int, window: int = 512,
                 program_window: int = 16) -> None:
        self.quantile = quantile
        self.prior_tokens = prior_tokens
        self.min_samples = min_samples
        self._all = SampleWindow(window)
        self._per_program: dict[str, SampleWindow] = {}
        self._program_window = program_window

    def observe(self, program_id: str, output_tokens: int) -> None:
        self._all.add(float(output_tokens))
        own = self._per_program.get(program_id)
        if own is None:
            own = self._per_program[program_id] = SampleWindow(self._program_window)
        own.add(float(output_tokens))

    def forget(self, program_id: str) -> None:
        self._per_program.pop(program_id, None)

    def estimate(self, program_id: str, max_tokens: int | None) -> int:
        """Tokens to reserve for the program's next (or running) request's output."""
        own = self._per_program.get(program_id)
        if own is not None and len(own) >= self.min_samples:
            tokens = own.quantile(self.quantile)
        elif len(self._all) >= self.min_samples:
            tokens = self._all.quantile(self.quantile)
        else:
            tokens = float(self.prior_tokens)
        if max_tokens is not None:
            tokens = min(tokens, float(max_tokens))
        return int(tokens)


class ToolDurations:
    """Learned tool durations, per tool name and overall (seconds)."""

    def __init__(self, horizon_s: float, min_samples: int, window: int = 256) -> None:
        self.horizon_s = horizon_s
        self.min_samples = min_samples
        self._window = window
        self._all = SampleWindow(window)
        self._per_tool: dict[str | None, SampleWindow] = {}

    def observe(self, tool: str | None, duration_s: float) -> None:
        self._all.add(duration_s)
        own = self._per_tool.get(tool)
        if own is None:
            own = self._per_tool[tool] = SampleWindow(self._window)
        own.add(duration_s)

    def return_probability(self, tool: str | None, elapsed_s: float) -> float | None:
        """P(the tool ends within ``horizon_s`` | it has run ``elapsed_s``), from the
        tool's own past durations once it has ``min_samples``, else from every tool's;
        None before that (the caller falls back). A tool running longer than any
        duration seen scores 0: it is overdue and unpredictable, so its KV is given up."""
        for samples in (self._per_tool.get(tool), self._all):
            if samples is None or len(samples) < self.min_samples:
                continue
            longer = samples.count_above(elapsed_s)
            if longer == 0:
                return 0.0
            still_running = samples.count_above(elapsed_s + self.horizon_s)
            return (longer - still_running) / longer
        return None
