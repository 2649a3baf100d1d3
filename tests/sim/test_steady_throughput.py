"""The fidelity benchmark's steady steps/min: throughput until a closed batch starts to drain."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from fidelity import steady_steps_per_min  # noqa: E402


def steps(done: dict[str, list[float]]) -> pd.DataFrame:
    return pd.DataFrame([{"program_id": p, "done_s": t} for p, times in done.items() for t in times])


def test_the_window_ends_when_fewer_programs_than_parallel_remain():
    # three programs, two at a time: the drain starts at the second completion (t = 6);
    # five steps are done by then, and the straggler's tail after it does not count
    table = steps({"a": [1.0, 2.0, 3.0], "b": [2.5, 6.0], "c": [4.0, 20.0, 40.0]})
    assert steady_steps_per_min(table, parallel=2) == pytest.approx(6 / 6.0 * 60)
    # all at once: the window ends at the first completion (t = 3), four steps done by then
    assert steady_steps_per_min(table, parallel=3) == pytest.approx(4 / 3.0 * 60)
    # more parallel than programs: the same
    assert steady_steps_per_min(table, parallel=16) == pytest.approx(4 / 3.0 * 60)


def test_nothing_to_measure_gives_none():
    assert steady_steps_per_min(steps({}), parallel=4) is None
    assert steady_steps_per_min(None, parallel=4) is None
