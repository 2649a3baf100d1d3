"""Synthetic workloads: seeded, valid under trace v1, and close to their sources."""

from __future__ import annotations

import numpy as np
import pytest

from thunder.traces import load_trace, write_trace
from thunder.traces.synth import WORKLOADS, LogNormal, setup_time_distribution, synthesize

# Pooled per-step medians of the public mini-swe-agent SWE-bench runs (99 runs,
# 7,924 steps), as printed by benchmarks/fit_coding_workload.py.
REAL_CODING = {"steps_per_program": 73, "prompt_tokens": 19_608, "output_tokens": 90,
               "tool_s": 0.265, "prompt_delta_tokens": 327}
# Medians are compared within 10%: 2,000 programs (~160k steps) keep the
# sampling error of a per-step median well under 2%, of steps per program ~3%.
TOLERANCE = 0.10


def draw(workload: str, programs: int, seed: int = 0, **options):
    header, programs_iter = synthesize(workload, programs, seed, **options)
    return header, list(programs_iter)


def columns(programs):
    steps = [s for p in programs for s in p.steps]
    return {
        "steps_per_program": np.array([len(p.steps) for p in programs]),
        "prompt_tokens": np.array([s.prompt_tokens for s in steps]),
        "output_tokens": np.array([s.output_tokens for s in steps]),
        "tool_s": np.array([s.tool_s for s in steps if s.tool_s is not None]),
        "prompt_delta_tokens": np.array([b.prompt_tokens - a.prompt_tokens
                                         for p in programs for a, b in zip(p.steps, p.steps[1:])]),
    }


@pytest.fixture(scope="module")
def coding_2000():
    return draw("coding", 2000, seed=1)[1]


@pytest.mark.parametrize("workload", sorted(WORKLOADS))
def test_same_seed_same_trace_other_seed_other_trace(workload):
    first, again, other = draw(workload, 20, 7), draw(workload, 20, 7), draw(workload, 20, 8)
    assert first == again
    assert [p.steps for p in first[1]] != [p.steps for p in other[1]]


@pytest.mark.parametrize("workload", sorted(WORKLOADS))
def test_every_workload_validates_and_round_trips(workload, tmp_path):
    header, programs = draw(workload, 40, rate=0.5)
    path = tmp_path / f"{workload}.jsonl"
    assert write_trace(path, header, programs) == 40
    loaded = load_trace(path)
    assert loaded.programs == tuple(programs)
    assert loaded.header.notes["workload"] == workload
    assert len({p.program_id for p in programs}) == 40
    for program in programs:
        assert program.workflow == workload
        assert program.shared_prefix_tokens > 0 and program.shared_prefix_id
        assert program.steps[0].prompt_tokens > program.shared_prefix_tokens


@pytest.mark.parametrize("name", sorted(REAL_CODING))
def test_coding_medians_match_the_real_runs(coding_2000, name):
    median = float(np.median(columns(coding_2000)[name]))
    assert median == pytest.approx(REAL_CODING[name], rel=TOLERANCE)


def test_coding_tail_of_tool_time_matches_the_real_runs(coding_2000):
    tool_s = np.sort(columns(coding_2000)["tool_s"])[::-1]
    # real runs: the slowest 1% of tool calls take 29% of all tool time; p99 3.4 s
    assert tool_s[: tool_s.size // 100].sum() / tool_s.sum() == pytest.approx(0.29, abs=0.06)
    assert np.quantile(tool_s, 0.99) == pytest.approx(3.37, rel=0.25)


def test_coding_last_step_calls_no_tool_and_others_run_bash(coding_2000):
    for program in coding_2000[:50]:
        assert program.steps[-1].tool is None and program.steps[-1].tool_s is None
        assert {s.tool for s in program.steps[:-1]} <= {"bash"}


def test_science_has_setup_times_disk_and_ports():
    programs = draw("science", 300)[1]
    setup = np.array([p.env.setup_s for p in programs])
    disk = np.array([p.env.disk_bytes for p in programs])
    assert (setup > 0).all() and (disk >= 4e9).all()
    assert {p.env.ports for p in programs} == {4}
    # OpenHands sandboxes average over 10 GB (paper); the Terminal-Bench median is ~6.6 s
    assert disk.mean() > 10e9
    assert np.median(setup) == pytest.approx(6.6, rel=0.35)
    tool_s = np.array([s.tool_s for p in programs for s in p.steps if s.tool_s is not None])
    assert np.quantile(tool_s, 0.95) > 30  # long script and notebook runs


def test_routing_tool_latency_is_heavy_tailed():
    programs = draw("routing", 500)[1]
    tool_s = np.array([s.tool_s for p in programs for s in p.steps])
    assert np.quantile(tool_s, 0.99) / np.median(tool_s) > 8
    assert np.quantile(tool_s, 0.99) > 40
    assert all(p.env is None for p in programs)
    assert all(p.steps[-1].tool == "answer" for p in programs)
    assert all(3 <= len(p.steps) <= 20 for p in programs)
    assert np.median([s.prompt_tokens for p in programs for s in p.steps]) < 10_000


def test_arrivals_are_poisson_and_leave_the_programs_unchanged():
    _, closed = draw("routing", 400, seed=3)
    _, open_loop = draw("routing", 400, seed=3, rate=2.0)
    assert all(p.arrival_s is None for p in closed)
    arrivals = np.array([p.arrival_s for p in open_loop])
    assert (np.diff(arrivals) >= 0).all()
    assert np.diff(arrivals).mean() == pytest.approx(0.5, rel=0.15)
    assert [p.steps for p in closed] == [p.steps for p in open_loop]


def test_overrides_replace_parameters():
    _, programs = draw("coding", 30, shared_prefix_tokens=0, with_env=False,
                       steps=LogNormal(median=5, sigma=0.0))
    assert all(p.shared_prefix_tokens == 0 and p.shared_prefix_id is None for p in programs)
    assert all(p.env is None and len(p.steps) == 5 for p in programs)


def test_context_window_ends_programs_early(tmp_path):
    header, programs = draw("science", 50, max_context_tokens=20_000)
    assert all(s.prompt_tokens + s.output_tokens <= 20_000
               for p in programs for s in p.steps[1:])
    write_trace(tmp_path / "t.jsonl", header, programs)
    assert len(load_trace(tmp_path / "t.jsonl").programs) == 50


@pytest.mark.parametrize("kwargs, message", [
    ({"workload": "chat"}, "unknown workload 'chat'"),
    ({"programs": 0}, "programs must be >= 1"),
    ({"rate": -1.0}, "rate must be a positive"),
    ({"no_such_knob": 3}, "unknown coding parameter(s) no_such_knob"),
])
def test_bad_requests_raise_value_error(kwargs, message):
    args = {"workload": "coding", "programs": 3, "seed": 0} | kwargs
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        synthesize(**args)


def test_setup_time_table_is_bundled_and_matches_terminal_bench():
    table = setup_time_distribution()
    assert len(table.probs) == 101 and table.probs[50] == 0.5
    # 2,371 public Terminal-Bench trials: median 6.6 s, p95 183 s, max ~5,800 s
    assert table.quantile(0.5) == pytest.approx(6.6, abs=0.1)
    assert table.quantile(0.95) == pytest.approx(183, rel=0.01)
    assert table.values[-1] > 5000


@pytest.mark.slow
def test_ten_thousand_coding_programs_draw_in_seconds():
    import time

    start = time.perf_counter()
    _, programs = synthesize("coding", 10_000, 0)
    steps = sum(len(p.steps) for p in programs)
    assert steps > 700_000
    assert time.perf_counter() - start < 10
