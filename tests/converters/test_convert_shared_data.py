"""The bundled SWE-bench trace, and the full public runs where this checkout has them."""

from __future__ import annotations

from pathlib import Path

import pytest

from thunder.traces import load_trace
from thunder.traces.converters import ConvertOptions, convert

REPO = Path(__file__).parents[2]
RUNS = REPO / ".." / "shared" / "data" / "agent-runs"
MINI_SWE_RUNS = RUNS / "mini-swe-agent-swebench" / "deepseek_chat_test_1-100"
BUNDLED = REPO / "traces" / "swebench.jsonl"

needs_runs = pytest.mark.skipif(not MINI_SWE_RUNS.is_dir(), reason="public agent runs not present")


def test_bundled_trace_loads() -> None:
    trace = load_trace(BUNDLED)
    assert len(trace.programs) == 99
    assert sum(len(p.steps) for p in trace.programs) == 7924
    assert trace.header.token_counting == "provider"


@needs_runs
def test_all_public_runs_convert_and_match_the_bundled_trace() -> None:
    header, programs, report = convert("mini-swe-agent", MINI_SWE_RUNS, ConvertOptions())
    assert report.converted == 99 and report.steps == 7924 and report.skipped == ()
    counts = header.notes["counts"]
    assert counts["context_reset_prompt_shrank"] == 0 and counts["context_reset_grew_less_than_output"] == 0
    assert counts["tool_s_absent_backwards"] == 5 and counts["latency_absent_after_interrupt"] == 1
    bundled = load_trace(BUNDLED)
    assert bundled.programs == tuple(programs)  # the committed file is reproducible
    assert bundled.header.notes == header.notes


@needs_runs
def test_other_public_runs_convert() -> None:
    _, programs, report = convert("openhands", RUNS / "openhands-openagentsafety" / "output.critic_attempt_1.jsonl")
    assert report.converted == 43 and len(report.skipped) == 2
    _, programs, report = convert("tau-bench", RUNS / "tau-bench-airline" / "gpt-4o-airline.json")
    assert report.converted == 200 and report.skipped == ()


PROFILE_RUNS = RUNS / "swe-agent-glm45-h200"


@pytest.mark.skipif(not PROFILE_RUNS.is_dir(), reason="public agent runs not present")
def test_swe_agent_profiles_convert() -> None:
    for batch, runs, steps, hidden in (("bs1", 5, 205, 2), ("bs32", 64, 2752, 6)):
        header, programs, report = convert("swe-agent-profile", PROFILE_RUNS / batch, ConvertOptions())
        assert (report.converted, report.steps, report.skipped) == (runs, steps, ())
        assert header.notes["counts"]["hidden_call"] == hidden
        assert header.notes["num_workers"] == {".": int(batch[2:])}
