"""OpenHands converter: text-counted tokens, event-timed tools, and the runs it must report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from thunder.traces import TraceProgram, load_trace, write_trace
from thunder.traces.converters import ConversionError, ConvertOptions, parse_tool_time
from thunder.traces.converters.openhands import convert


def by_id(programs: list[TraceProgram]) -> dict[str, TraceProgram]:
    return {p.program_id: p for p in programs}


def runs(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def write_runs(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_converts_the_started_runs_and_reports_the_empty_one(openhands_file: Path) -> None:
    header, programs, report = convert(openhands_file, ConvertOptions())
    assert {p.program_id: len(p.steps) for p in programs} == {
        "safety-sexism": 2, "safety-exfiltration": 4, "safety-risky-code-website": 2, "safety-base64-text": 2}
    assert report.converted == 4 and report.steps == 10
    assert report.skipped == (("output.sample.jsonl:4 (safety-delete-root)",
                               "never started: no LLM response in the history"),)
    assert header.token_counting == "chars-per-token" and header.chars_per_token == 4.0


def test_parallel_calls_are_one_step_checked_by_hand(openhands_file: Path) -> None:
    steps = by_id(convert(openhands_file, ConvertOptions())[1])["safety-base64-text"].steps
    # instruction 856 chars -> 214; the two calls 110 + 71 chars -> 28 + 18 tokens
    assert (steps[0].prompt_tokens, steps[0].output_tokens) == (214, 46)
    assert steps[0].tool == "str_replace_editor+execute_bash"
    assert steps[0].tool_s == pytest.approx(1.048)  # 18:14:22.556524 -> last observation 18:14:23.604152
    assert steps[0].llm_latency_s is None  # no earlier event in this history
    # observations 49 and 60 chars -> 13 + 15 tokens
    assert steps[1].prompt_tokens == 214 + 46 + 13 + 15
    assert steps[1].llm_latency_s == pytest.approx(1.738)


def test_recorded_first_message_gives_step_zero_a_latency(openhands_file: Path) -> None:
    steps = by_id(convert(openhands_file, ConvertOptions())[1])["safety-risky-code-website"].steps
    assert steps[0].prompt_tokens == 114  # the user message, 454 chars
    assert steps[0].llm_latency_s == pytest.approx(2.138)
    assert steps[0].tool == "execute_bash" and steps[0].tool_s == pytest.approx(0.024)


def test_final_reply_has_no_tool_and_unanswered_call_no_time(openhands_file: Path) -> None:
    header, programs, report = convert(openhands_file, ConvertOptions())
    found = by_id(programs)
    assert found["safety-sexism"].steps[-1].tool is None
    last = found["safety-exfiltration"].steps[-1]
    assert last.tool == "finish" and last.tool_s is None
    assert report.warnings == (("output.sample.jsonl:2 (safety-exfiltration)",
                                "finish call without an observation (the run ended); tool_s left absent"),)
    assert header.notes["counts"]["tool_call_without_result"] == 1


def test_user_reply_to_a_message_is_the_acting_phase(openhands_file: Path, tmp_path: Path) -> None:
    records = [r for r in runs(openhands_file) if r["instance_id"] == "safety-sexism"]
    reply_at = "2025-10-30T13:31:30.683132"  # two seconds after the agent's message
    records[0]["history"].append({"kind": "MessageEvent", "source": "user", "timestamp": reply_at,
                                  "llm_message": {"role": "user", "content": [{"type": "text", "text": "ok"}]}})
    _, programs, _ = convert(write_runs(tmp_path / "out.jsonl", records), ConvertOptions())
    last = programs[0].steps[-1]
    assert last.tool == "user" and last.tool_s == pytest.approx(2.0)


def test_chars_per_token_option(openhands_file: Path) -> None:
    header, programs, _ = convert(openhands_file, ConvertOptions(chars_per_token=2.0))
    assert header.chars_per_token == 2.0
    assert by_id(programs)["safety-base64-text"].steps[0].prompt_tokens == 428  # 856 / 2


def test_duplicate_run_is_skipped(openhands_file: Path, tmp_path: Path) -> None:
    records = runs(openhands_file)
    path = write_runs(tmp_path / "dup.jsonl", records + records[:1])
    _, programs, report = convert(path, ConvertOptions())
    assert len(programs) == 4
    assert report.skipped[-1] == ("dup.jsonl:6",
                                  "duplicate run of 'safety-sexism' (kept dup.jsonl:1)")


def test_round_trip_and_growth_rule(openhands_file: Path, tmp_path: Path) -> None:
    header, programs, _ = convert(openhands_file, ConvertOptions())
    write_trace(tmp_path / "oh.jsonl", header, programs)
    assert load_trace(tmp_path / "oh.jsonl").programs == tuple(programs)
    assert not any(s.context_reset for p in programs for s in p.steps)  # text counting only grows


def test_refuses_synthetic_tool_time_and_folders(openhands_file: Path) -> None:
    with pytest.raises(ConversionError, match="records tool time"):
        convert(openhands_file, ConvertOptions(tool_time=parse_tool_time("exp:1")))
    with pytest.raises(ConversionError, match="not a file"):
        convert(openhands_file.parent, ConvertOptions())
