"""Synthetic agent traces: seeded generators for three agentic workloads.

What lives here: one module per workload (``coding``, ``routing``,
``science``) holding its parameters as a frozen dataclass and a vectorised
``draw``; shared samplers (``distributions``); the bundled environment-setup
table (``setup_times``); and ``build``, which turns a draw into trace v1
programs. The rule that keeps it clean: numbers come from a source named next
to them (a fit script under ``benchmarks/`` or the paper), never from the raw
data at run time, so the package works without the recorded runs.

How it works: ``synthesize`` draws every per-program and per-step quantity as
numpy arrays from ``numpy.random.default_rng`` seeded by the caller (same
seed, same trace), computes prompts with trace v1's growth rule, and yields
``TraceProgram`` values lazily. See docs/synthetic-traces.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from thunder.traces.format import TraceHeader, TraceProgram
from thunder.traces.synth import coding, routing, science
from thunder.traces.synth.build import cap_context, iter_built
from thunder.traces.synth.distributions import Choice, LogNormal, Quantiles
from thunder.traces.synth.setup_times import setup_time_distribution
from thunder.traces.synth.workload import Drawn

__all__ = ["WORKLOADS", "Workload", "synthesize", "setup_time_distribution",
           "LogNormal", "Quantiles", "Choice"]


@dataclass(frozen=True, slots=True)
class Workload:
    """A named workload model: its default parameters and its draw function."""

    name: str
    params: Any
    draw: Callable[[Any, np.random.Generator, int], Drawn]
    source: str


WORKLOADS: dict[str, Workload] = {
    "coding": Workload("coding", coding.CodingParams(), coding.draw,
                       "fitted to the public mini-swe-agent SWE-bench runs "
                       "(benchmarks/fit_coding_workload.py)"),
    "routing": Workload("routing", routing.RoutingParams(), routing.draw,
                        "ToolOrchestra-like on HLE; assumed parameters sized from the "
                        "ThunderAgent paper's tool-latency figure"),
    "science": Workload("science", science.ScienceParams(), science.draw,
                        "OpenHands-like on ScienceAgentBench; setup times fitted to the public "
                        "Terminal-Bench leaderboard trials, disk from the ThunderAgent paper"),
}


def synthesize(workload: str, programs: int, seed: int, *, rate: float | None = None,
               **overrides: Any) -> tuple[TraceHeader, Iterator[TraceProgram]]:
    """Draw ``programs`` programs of ``workload``; deterministic for ``seed``.

    ``rate`` (programs per second) gives every program a Poisson ``arrival_s``;
    without it no program has one (a closed loop: the replayer decides when to
    start them). Arrivals come from their own random stream, so adding a rate
    does not change the programs themselves. ``overrides`` replace fields of
    the workload's parameter dataclass (e.g. ``shared_prefix_tokens=0`` or
    ``steps=LogNormal(30, 0.3)``). Everything is drawn before returning;
    the iterator only builds the ``TraceProgram`` values.
    Raises ``ValueError`` for an unknown workload or parameter, or a bad count or rate.
    """
    model = _workload(workload)
    if programs < 1:
        raise ValueError(f"programs must be >= 1, got {programs}")
    if rate is not None and not (rate > 0 and np.isfinite(rate)):
        raise ValueError(f"rate must be a positive number of programs per second, got {rate}")
    params = _with_overrides(model, overrides)
    draw_seed, arrival_seed = np.random.SeedSequence(seed).spawn(2)
    drawn = model.draw(params, np.random.default_rng(draw_seed), programs)
    drawn = cap_context(drawn, params.max_context_tokens)
    arrival_s = None
    if rate is not None:
        gaps = np.random.default_rng(arrival_seed).exponential(1.0 / rate, programs)
        arrival_s = np.cumsum(gaps)
    header = TraceHeader(
        source=f"synthetic: {model.source}",
        created_by="thunder trace synth",
        notes={"workload": workload, "programs": programs, "seed": seed,
               "rate_per_s": rate, "overrides": {k: repr(v) for k, v in sorted(overrides.items())}},
    )
    programs_iter = iter_built(drawn, id_prefix=f"{workload}-s{seed}-",
                               shared_prefix_id=f"{workload}-system-prompt", arrival_s=arrival_s)
    return header, programs_iter


def _workload(name: str) -> Workload:
    try:
        return WORKLOADS[name]
    except KeyError:
        raise ValueError(f"unknown workload {name!r} (known: {', '.join(sorted(WORKLOADS))})") from None


def _with_overrides(model: Workload, overrides: dict[str, Any]) -> Any:
    known = {f.name for f in fields(model.params)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown {model.name} parameter(s) {', '.join(unknown)} "
                         f"(known: {', '.join(sorted(known))})")
    return replace(model.params, **overrides)
