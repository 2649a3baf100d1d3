"""Summary statistics of a trace file, and their rendering as a text table.

``trace_stats`` streams the file through the validating reader (a broken
trace raises ``TraceError`` like everywhere else) and keeps only per-step
numbers in compact arrays, never the ``TraceProgram`` values, so a
750k-step trace needs tens of MB, not GB.
"""

from __future__ import annotations

from array import array
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from thunder.traces.format import TraceProgram, TraceReader

# Distribution rows: (key in the stats dict, label, formatter of one number).
_ROWS: tuple[tuple[str, str, str], ...] = (
    ("steps_per_program", "steps per program", "count"),
    ("prompt_tokens", "prompt tokens", "count"),
    ("output_tokens", "output tokens", "count"),
    ("context_growth_tokens", "context growth per step (tokens)", "count"),
    ("tool_s", "tool time (s)", "seconds"),
    ("env_setup_s", "env setup (s)", "seconds"),
    ("env_disk_bytes", "env disk (GB)", "gigabytes"),
    ("shared_prefix_tokens", "shared prefix tokens", "count"),
)
_COLUMNS = ("count", "mean", "median", "p95", "p99", "max")


@dataclass(slots=True)
class _Accumulator:
    """Per-program and per-step numbers gathered while streaming."""

    steps: array = field(default_factory=lambda: array("q"))
    prompt: array = field(default_factory=lambda: array("q"))
    output: array = field(default_factory=lambda: array("q"))
    growth: array = field(default_factory=lambda: array("q"))
    tool_s: array = field(default_factory=lambda: array("d"))
    setup_s: array = field(default_factory=lambda: array("d"))
    disk_bytes: array = field(default_factory=lambda: array("d"))
    shared_prefix: array = field(default_factory=lambda: array("q"))
    workflows: Counter = field(default_factory=Counter)
    cached_tokens: int = 0
    prompt_tokens_with_cached: int = 0
    steps_with_cached: int = 0
    steps_without_tool_s: int = 0
    context_resets: int = 0
    arrivals: int = 0

    def add(self, program: TraceProgram) -> None:
        self.steps.append(len(program.steps))
        self.workflows[program.workflow] += 1
        self.arrivals += program.arrival_s is not None
        if program.shared_prefix_tokens:
            self.shared_prefix.append(program.shared_prefix_tokens)
        if program.env is not None:
            if program.env.setup_s is not None:
                self.setup_s.append(program.env.setup_s)
            if program.env.disk_bytes is not None:
                self.disk_bytes.append(program.env.disk_bytes)
        previous = None
        for step in program.steps:
            self.prompt.append(step.prompt_tokens)
            self.output.append(step.output_tokens)
            if step.context_reset:
                self.context_resets += 1
            elif previous is not None:
                self.growth.append(step.prompt_tokens - previous.prompt_tokens)
            if step.tool_s is None:
                self.steps_without_tool_s += 1
            else:
                self.tool_s.append(step.tool_s)
            if step.cached_tokens is not None:
                self.steps_with_cached += 1
                self.cached_tokens += step.cached_tokens
                self.prompt_tokens_with_cached += step.prompt_tokens
            previous = step


def distribution(values: array | np.ndarray) -> dict[str, float] | None:
    """count, mean, median, p95, p99, max of a sample (linear-interpolated quantiles); None if empty."""
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        return None
    median, p95, p99 = np.quantile(data, [0.5, 0.95, 0.99])
    return {"count": int(data.size), "mean": float(data.mean()), "median": float(median),
            "p95": float(p95), "p99": float(p99), "max": float(data.max())}


def trace_stats(path: str | Path) -> dict[str, Any]:
    """Summarise a trace in one validating pass.

    Growth per step is ``prompt_k - prompt_{k-1}`` (output plus whatever was
    appended), over steps after the first that do not reset the context.
    ``cached_share`` is cached over prompt tokens on the steps that report
    ``cached_tokens`` (None when none do). Tool time covers steps with
    ``tool_s``; ``steps_without_tool_s`` counts the rest.
    """
    reader = TraceReader(path)
    acc = _Accumulator()
    for program in reader:
        acc.add(program)
    header = reader.header
    return {
        "path": str(path),
        "source": header.source,
        "programs": len(acc.steps),
        "steps": len(acc.prompt),
        "workflows": dict(sorted(acc.workflows.items())),
        "programs_with_arrival_s": acc.arrivals,
        "steps_without_tool_s": acc.steps_without_tool_s,
        "context_resets": acc.context_resets,
        "steps_with_cached_tokens": acc.steps_with_cached,
        "cached_share": (acc.cached_tokens / acc.prompt_tokens_with_cached
                         if acc.prompt_tokens_with_cached else None),
        "steps_per_program": distribution(acc.steps),
        "prompt_tokens": distribution(acc.prompt),
        "output_tokens": distribution(acc.output),
        "context_growth_tokens": distribution(acc.growth),
        "tool_s": distribution(acc.tool_s),
        "tool_s_total": float(np.sum(np.asarray(acc.tool_s))),
        "env_setup_s": distribution(acc.setup_s),
        "env_disk_bytes": distribution(acc.disk_bytes),
        "shared_prefix_tokens": distribution(acc.shared_prefix),
    }


def _format(value: float, kind: str, column: str) -> str:
    if column == "count":
        return f"{int(value):,}"
    if kind == "seconds":
        return f"{value:,.3f}"
    if kind == "gigabytes":
        return f"{value / 1e9:,.2f}"
    return f"{value:,.1f}" if column == "mean" else f"{value:,.0f}"


def render_stats(stats: dict[str, Any]) -> str:
    """The stats as aligned text: a few summary lines, then one row per distribution."""
    workflows = ", ".join(f"{name} {count}" for name, count in stats["workflows"].items())
    cached = stats["cached_share"]
    lines = [
        f"trace: {stats['path']}",
        f"programs: {stats['programs']:,}  steps: {stats['steps']:,}  workflows: {workflows}",
        f"programs with arrival_s: {stats['programs_with_arrival_s']:,}  "
        f"steps without tool time: {stats['steps_without_tool_s']:,}  "
        f"context resets: {stats['context_resets']:,}",
        "cached share of prompt tokens: "
        + ("n/a (no step reports cached_tokens)" if cached is None
           else f"{cached:.1%} over {stats['steps_with_cached_tokens']:,} steps"),
        f"total tool time: {stats['tool_s_total']:,.1f} s",
        "",
    ]
    table: list[tuple[str, ...]] = [("", *_COLUMNS)]
    for key, label, kind in _ROWS:
        dist = stats.get(key)
        if dist is not None:
            table.append((label, *(_format(dist[c], kind, c) for c in _COLUMNS)))
    widths = [max(len(row[i]) for row in table) for i in range(len(_COLUMNS) + 1)]
    for row in table:
        cells = [row[0].ljust(widths[0])] + [cell.rjust(w) for cell, w in zip(row[1:], widths[1:])]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)
