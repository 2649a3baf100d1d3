"""Fit tool-environment setup times to the public Terminal-Bench leaderboard trials.

Usage::

    python benchmarks/fit_setup_times.py TRIALS_JSONL [-o thunder/data/terminal_bench_setup_s.json]

``TRIALS_JSONL`` holds one JSON object per Terminal-Bench trial with ISO
timestamps ``trial_started_at`` and ``agent_started_at`` (null where the
leaderboard did not publish them). Setup time is ``agent_started_at -
trial_started_at``: the harness builds and starts the task's containers and
installs the agent before the agent's first action, which is the environment
preparation a program waits for. Trials without both timestamps are skipped.

The script prints the sample size and summary quantiles, per submission and
pooled, and writes the pooled 101-quantile table (p0, p1, ..., p100) that
``thunder.traces.synth.setup_time_distribution()`` samples from.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import numpy as np

PROBS = np.linspace(0.0, 1.0, 101)


def setup_seconds(row: dict) -> float | None:
    start, agent = row.get("trial_started_at"), row.get("agent_started_at")
    if not start or not agent:
        return None
    return (datetime.fromisoformat(agent) - datetime.fromisoformat(start)).total_seconds()


def submission(row: dict) -> str:
    """The leaderboard folder a trial came from (``results/<suite>/<submission>/...``)."""
    parts = row.get("path", "").split("/")
    return parts[2] if len(parts) > 2 else "?"


def summary(values: np.ndarray) -> str:
    q = np.quantile(values, [0.05, 0.5, 0.95, 0.99])
    return (f"n={values.size} p5={q[0]:.1f}s median={q[1]:.1f}s p95={q[2]:.1f}s "
            f"p99={q[3]:.1f}s max={values.max():.1f}s mean={values.mean():.1f}s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trials", type=Path, help="trial_results.jsonl")
    parser.add_argument("-o", "--output", type=Path, help="write the quantile table here (JSON)")
    args = parser.parse_args(argv)
    groups: dict[str, list[float]] = defaultdict(list)
    rows = 0
    with open(args.trials, encoding="utf-8") as handle:
        for text in handle:
            rows += 1
            row = json.loads(text)
            seconds = setup_seconds(row)
            if seconds is not None and seconds >= 0:
                groups[submission(row)].append(seconds)
    if not groups:
        print("no trial has both trial_started_at and agent_started_at", file=sys.stderr)
        return 2
    pooled = np.concatenate([np.array(v) for v in groups.values()])
    print(f"trials={rows} with setup timestamps={pooled.size}")
    for name in sorted(groups):
        print(f"  {name}: {summary(np.array(groups[name]))}")
    print(f"pooled: {summary(pooled)}")
    if args.output:
        table = {
            "source": "public Terminal-Bench leaderboard trials (laude-institute/terminal-bench-leaderboard)",
            "measure": "agent_started_at - trial_started_at, seconds",
            "trials": int(pooled.size),
            "submissions": sorted(groups),
            "probs": [round(float(p), 2) for p in PROBS],
            "values_s": [round(float(v), 3) for v in np.quantile(pooled, PROBS)],
        }
        # one key per line, lists on one line: small diffs when the table is refitted
        body = ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}" for k, v in table.items())
        args.output.write_text("{\n" + body + "\n}\n", encoding="utf-8")
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
