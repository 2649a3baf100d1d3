"""Tool-environment setup times, fitted to the public Terminal-Bench leaderboard trials.

The table ships with the package (``thunder/data/terminal_bench_setup_s.json``)
so that neither the generator nor the simulator needs the raw trials; it is
rebuilt by ``benchmarks/fit_setup_times.py``.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

from thunder.traces.synth.distributions import Quantiles

_TABLE = "terminal_bench_setup_s.json"


@cache
def setup_time_distribution() -> Quantiles:
    """Empirical setup-time distribution in seconds (101 quantiles, p0..p100).

    Setup = ``agent_started_at - trial_started_at`` over 2,371 Terminal-Bench
    trials from six leaderboard submissions: container build/start plus agent
    install. Pooled median about 6.6 s, p95 about 183 s, p99 about 860 s,
    max about 5,800 s. ``.sample(rng, n)`` draws; ``.quantile(p)`` reads it.
    """
    text = resources.files("thunder").joinpath("data", _TABLE).read_text(encoding="utf-8")
    table = json.loads(text)
    return Quantiles(probs=tuple(table["probs"]), values=tuple(table["values_s"]))
