"""mini-swe-agent converter: counts, hand-checked values, and every oddity it must report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from thunder.traces import TraceProgram, load_trace, write_trace
from thunder.traces.converters import ConversionError, ConvertOptions, parse_tool_time
from thunder.traces.converters.mini_swe_agent import convert

RUN = "django__django-14752"
BACKWARDS_RUN = "django__django-11630"  # message 32: tool result stamped 1.081 s before its call


def by_id(programs: list[TraceProgram]) -> dict[str, TraceProgram]:
    return {p.program_id: p for p in programs}


def copy_run(source_dir: Path, run_id: str, target_dir: Path, edit: Any = None, folder: str | None = None) -> Path:
    """Copy one fixture run into ``target_dir/<folder>/``, optionally editing its JSON."""
    data = json.loads((source_dir / run_id / f"{run_id}.traj.json").read_text())
    if edit is not None:
        edit(data)
    path = target_dir / (folder or run_id) / f"{run_id}.traj.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def test_converts_every_fixture_run(mini_swe_dir: Path) -> None:
    header, programs, report = convert(mini_swe_dir, ConvertOptions())
    assert report.converted == 4 and report.skipped == ()
    assert report.steps == 190 == sum(len(p.steps) for p in programs)
    assert {p.program_id: len(p.steps) for p in programs} == {
        "django__django-11630": 64, "django__django-12453": 42, RUN: 31, "django__django-14915": 53}
    assert all(p.workflow == "mini-swe-agent" for p in programs)
    assert header.token_counting == "provider"


def test_values_checked_by_hand(mini_swe_dir: Path) -> None:
    run = by_id(convert(mini_swe_dir, ConvertOptions())[1])[RUN]
    first, fourth = run.steps[0], run.steps[3]
    # usage of the first assistant message; tool 1775812897.5195434 - call 1775812897.2183168
    assert (first.prompt_tokens, first.output_tokens, first.cached_tokens) == (1995, 93, 320)
    assert first.llm_latency_s is None  # step 0: 'created' is whole seconds
    assert first.tool == "bash" and first.tool_s == pytest.approx(0.301)
    # step 3: call 1775812907.5968325, its result 1775812907.8569713, previous result 1775812903.674624
    assert (fourth.prompt_tokens, fourth.output_tokens, fourth.cached_tokens) == (3997, 83, 3136)
    assert fourth.tool_s == pytest.approx(0.260)
    assert fourth.llm_latency_s == pytest.approx(3.922)


def test_final_submit_keeps_its_tool_without_a_time(mini_swe_dir: Path) -> None:
    header, programs, _ = convert(mini_swe_dir, ConvertOptions())
    assert all(p.steps[-1].tool == "bash" and p.steps[-1].tool_s is None for p in programs)
    assert header.notes["counts"]["final_tool_call_without_result"] == 4


def test_backwards_timestamp_leaves_tool_time_absent_and_warns(mini_swe_dir: Path) -> None:
    header, programs, report = convert(mini_swe_dir, ConvertOptions())
    steps = by_id(programs)[BACKWARDS_RUN].steps
    assert steps[15].tool_s is None and steps[14].tool_s is not None and steps[16].tool_s is not None
    assert [w for w in report.warnings if w[0].startswith(BACKWARDS_RUN)] == [
        (f"{BACKWARDS_RUN}/{BACKWARDS_RUN}.traj.json",
         "message 32: tool result timestamp 1.081 s before the call's; tool_s left absent")]
    assert header.notes["counts"]["tool_s_absent_backwards"] == 1


def test_shared_prefix_comes_from_the_providers_cache(mini_swe_dir: Path) -> None:
    header, programs, _ = convert(mini_swe_dir, ConvertOptions())
    ids = {p.shared_prefix_id or "" for p in programs}
    assert len(ids) == 1
    (prefix_id,) = ids
    assert prefix_id.startswith("mini-swe-agent/deepseek-chat/system-")
    assert {p.shared_prefix_tokens for p in programs} == {320}
    assert "4 of 4 runs" in header.notes["shared_prefix"][prefix_id]["method"]
    assert 3.0 < header.notes["fitted_chars_per_token"] < 4.0


def test_single_file_counts_the_prefix_text(mini_swe_dir: Path) -> None:
    header, programs, report = convert(mini_swe_dir / RUN / f"{RUN}.traj.json", ConvertOptions())
    assert report.converted == 1 and len(programs[0].steps) == 31
    # One run cannot show which cached tokens are shared: the prefix text is counted instead.
    (prefix,) = header.notes["shared_prefix"].values()
    assert "characters" in prefix["method"]
    assert 0 < programs[0].shared_prefix_tokens < 320


def test_never_started_run_is_skipped_and_reported(mini_swe_dir: Path, tmp_path: Path) -> None:
    def strip_calls(data: dict[str, Any]) -> None:
        data["messages"] = [m for m in data["messages"] if m["role"] in ("system", "user")]

    copy_run(mini_swe_dir, RUN, tmp_path)
    copy_run(mini_swe_dir, "django__django-14915", tmp_path, strip_calls)
    header, programs, report = convert(tmp_path, ConvertOptions())
    assert [p.program_id for p in programs] == [RUN]
    assert report.skipped == (("django__django-14915/django__django-14915.traj.json",
                               "never started: no assistant message with provider token usage"),)
    assert header.notes["counts"]["skipped_never_started"] == 1


def test_duplicate_run_is_skipped_and_its_warnings_not_counted(mini_swe_dir: Path, tmp_path: Path) -> None:
    copy_run(mini_swe_dir, BACKWARDS_RUN, tmp_path, folder="a")
    copy_run(mini_swe_dir, BACKWARDS_RUN, tmp_path, folder="b")
    header, programs, report = convert(tmp_path, ConvertOptions())
    assert len(programs) == 1 and report.converted == 1
    assert report.skipped == ((f"b/{BACKWARDS_RUN}.traj.json",
                               f"duplicate run of {BACKWARDS_RUN!r} (kept a/{BACKWARDS_RUN}.traj.json)"),)
    assert header.notes["counts"]["tool_s_absent_backwards"] == 1
    assert len(report.warnings) == 1


def test_unreadable_file_is_skipped(mini_swe_dir: Path, tmp_path: Path) -> None:
    copy_run(mini_swe_dir, RUN, tmp_path)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "broken.traj.json").write_text("{not json")
    _, programs, report = convert(tmp_path, ConvertOptions())
    assert len(programs) == 1
    assert report.skipped[0][0] == "broken/broken.traj.json" and report.skipped[0][1].startswith("unreadable")


def test_format_error_interrupt_leaves_the_next_latency_absent(mini_swe_dir: Path, tmp_path: Path) -> None:
    def interrupt_after_step_2(data: dict[str, Any]) -> None:
        # messages: system, user, then (assistant, tool) pairs; step 2's result is message 7
        data["messages"].insert(8, {"role": "user", "content": "Tool call error: ...",
                                    "extra": {"interrupt_type": "FormatError"}})

    copy_run(mini_swe_dir, RUN, tmp_path, interrupt_after_step_2)
    header, programs, report = convert(tmp_path, ConvertOptions())
    steps = programs[0].steps
    assert steps[3].llm_latency_s is None and steps[2].llm_latency_s is not None
    assert steps[4].llm_latency_s is not None
    assert "hides a failed call" in report.warnings[0][1]
    assert header.notes["counts"]["latency_absent_after_interrupt"] == 1


def set_prompt(data: dict[str, Any], step: int, prompt_tokens: int) -> None:
    calls = [m for m in data["messages"] if m["role"] == "assistant"]
    usage = calls[step]["extra"]["response"]["usage"]
    usage["prompt_tokens"] = prompt_tokens
    usage["prompt_tokens_details"]["cached_tokens"] = 0


def test_prompt_that_does_not_extend_the_context_is_a_context_reset(mini_swe_dir: Path, tmp_path: Path) -> None:
    # Step 3's prompt is 3997 tokens, so 3000 at step 4 shrinks the context.
    def shrink_and_undergrow(data: dict[str, Any]) -> None:
        set_prompt(data, 4, 3000)  # below the previous prompt
        calls = [m for m in data["messages"] if m["role"] == "assistant"]
        usage5 = calls[5]["extra"]["response"]["usage"]
        set_prompt(data, 6, usage5["prompt_tokens"] + 1)  # grew by less than step 5's output

    path = copy_run(mini_swe_dir, RUN, tmp_path, shrink_and_undergrow)
    header, programs, report = convert(path, ConvertOptions())
    resets = [i for i, s in enumerate(programs[0].steps) if s.context_reset]
    assert resets == [4, 6]
    assert header.notes["counts"]["context_reset_prompt_shrank"] == 1
    assert header.notes["counts"]["context_reset_grew_less_than_output"] == 1
    assert len(report.warnings) == 2
    write_trace(tmp_path / "out.jsonl", header, programs)  # the marked steps validate
    assert load_trace(tmp_path / "out.jsonl").programs == tuple(programs)


def test_counts_are_stated_even_when_zero(mini_swe_dir: Path) -> None:
    counts = convert(mini_swe_dir, ConvertOptions())[0].notes["counts"]
    assert counts["context_reset_prompt_shrank"] == 0 and counts["context_reset_grew_less_than_output"] == 0


def test_round_trip_through_the_trace_file(mini_swe_dir: Path, tmp_path: Path) -> None:
    header, programs, _ = convert(mini_swe_dir, ConvertOptions())
    write_trace(tmp_path / "swe.jsonl", header, programs)
    loaded = load_trace(tmp_path / "swe.jsonl")
    assert loaded.programs == tuple(programs)
    assert loaded.header.notes == header.notes and loaded.header.token_counting == "provider"


def test_refuses_synthetic_tool_time(mini_swe_dir: Path) -> None:
    with pytest.raises(ConversionError, match="records tool time"):
        convert(mini_swe_dir, ConvertOptions(tool_time=parse_tool_time("const:1")))


def test_missing_or_empty_input_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConversionError, match="no such file"):
        convert(tmp_path / "nope", ConvertOptions())
    with pytest.raises(ConversionError, match="no \\*.traj.json files"):
        convert(tmp_path, ConvertOptions())

