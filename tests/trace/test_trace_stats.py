"""trace_stats on a hand-written trace whose every number is known."""

from __future__ import annotations

import json

import pytest

from thunder.traces import TraceError
from thunder.traces.stats import render_stats, trace_stats

# Program a: three steps, cached tokens on two, no tool on the last.
# Program b: env, one tool step, then a context reset without a tool.
LINES = [
    {"type": "header", "format_version": 1, "source": "hand-written"},
    {"program_id": "a", "workflow": "w1", "arrival_s": 0.5, "steps": [
        {"prompt_tokens": 100, "output_tokens": 10, "cached_tokens": 50, "tool": "t", "tool_s": 1.0},
        {"prompt_tokens": 130, "output_tokens": 20, "cached_tokens": 100, "tool": "t", "tool_s": 3.0},
        {"prompt_tokens": 200, "output_tokens": 5}]},
    {"program_id": "b", "workflow": "w2", "shared_prefix_tokens": 40, "shared_prefix_id": "sys",
     "env": {"setup_s": 10.0, "disk_bytes": 2_000_000_000, "ports": 1}, "steps": [
        {"prompt_tokens": 50, "output_tokens": 5, "tool": "t", "tool_s": 2.0},
        {"prompt_tokens": 40, "output_tokens": 5, "context_reset": True}]},
]


@pytest.fixture()
def stats(tmp_path):
    path = tmp_path / "tiny.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in LINES))
    return trace_stats(path)


def test_counts(stats):
    assert (stats["programs"], stats["steps"]) == (2, 5)
    assert stats["workflows"] == {"w1": 1, "w2": 1}
    assert stats["programs_with_arrival_s"] == 1
    assert stats["steps_without_tool_s"] == 2
    assert stats["context_resets"] == 1
    assert stats["source"] == "hand-written"


def test_distributions(stats):
    assert stats["steps_per_program"] == {"count": 2, "mean": 2.5, "median": 2.5,
                                          "p95": pytest.approx(2.95), "p99": pytest.approx(2.99),
                                          "max": 3.0}
    prompt = stats["prompt_tokens"]
    assert (prompt["count"], prompt["mean"], prompt["median"], prompt["max"]) == (5, 104.0, 100.0, 200.0)
    # sorted 40, 50, 100, 130, 200: p95 sits 0.8 of the way from 130 to 200
    assert prompt["p95"] == pytest.approx(186.0)
    output = stats["output_tokens"]
    assert (output["mean"], output["median"], output["max"]) == (9.0, 5.0, 20.0)
    # growth over steps after the first without a reset: 130-100, 200-130
    growth = stats["context_growth_tokens"]
    assert (growth["count"], growth["mean"], growth["median"], growth["max"]) == (2, 50.0, 50.0, 70.0)
    tool = stats["tool_s"]
    assert (tool["count"], tool["mean"], tool["median"], tool["max"]) == (3, 2.0, 2.0, 3.0)
    assert stats["tool_s_total"] == 6.0


def test_cached_share_env_and_shared_prefix(stats):
    assert stats["steps_with_cached_tokens"] == 2
    assert stats["cached_share"] == pytest.approx(150 / 230)
    assert stats["env_setup_s"]["median"] == 10.0
    assert stats["env_disk_bytes"]["max"] == 2e9
    assert stats["shared_prefix_tokens"] == {"count": 1, "mean": 40.0, "median": 40.0,
                                             "p95": 40.0, "p99": 40.0, "max": 40.0}


def test_absent_fields_give_none(tmp_path):
    path = tmp_path / "bare.jsonl"
    path.write_text(json.dumps({"format_version": 1, "program_id": "x", "workflow": "w",
                                "steps": [{"prompt_tokens": 5, "output_tokens": 1}]}) + "\n")
    stats = trace_stats(path)
    assert stats["cached_share"] is None
    assert stats["tool_s"] is None and stats["context_growth_tokens"] is None
    assert stats["env_setup_s"] is None and stats["env_disk_bytes"] is None
    assert "n/a" in render_stats(stats)


def test_render_is_an_aligned_table(stats):
    text = render_stats(stats)
    table = text.split("\n\n", 1)[1].splitlines()
    assert table[0].split() == ["count", "mean", "median", "p95", "p99", "max"]
    assert len({len(row) for row in table}) == 1  # right-aligned to the same width
    assert any(row.startswith("tool time (s)") and row.endswith("3.000") for row in table)
    assert any(row.startswith("env disk (GB)") and row.endswith("2.00") for row in table)
    assert "65.2% over 2 steps" in text


def test_broken_trace_raises_trace_error(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"type": "header", "format_version": 1}\n')
    with pytest.raises(TraceError, match="no programs"):
        trace_stats(path)
