"""SWE-agent timing-profile converter: counts, hand-checked values, and located errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from thunder.cli import app
from thunder.traces import load_trace
from thunder.traces.converters import ConversionError, ConvertOptions, parse_tool_time
from thunder.traces.converters.profile_runs import ProfileError, num_workers, read_run
from thunder.traces.converters.swe_agent_profile import convert

BS1_RUN = "django__django-14017"
RESET_RUN = "django__django-15388"  # step 39's prompt is below step 38's; step 38 was asked twice


def test_counts_and_order(swe_profile_dir: Path) -> None:
    header, programs, report = convert(swe_profile_dir, ConvertOptions())
    assert report.converted == 5 and report.skipped == ()
    assert {p.program_id: len(p.steps) for p in programs} == {
        "django__django-14016": 27, BS1_RUN: 30, "django__django-14915": 22, RESET_RUN: 39,
        "django__django-15851": 23}
    assert report.steps == 141
    # the 32-worker batch ran first (epoch 1760197...), the 1-worker batch later
    assert [p.program_id for p in programs][-2:] == ["django__django-14016", BS1_RUN]
    assert header.notes["num_workers"] == {"bs1": 1, "bs32": 32}
    assert header.notes["counts"]["hidden_call"] == 3
    assert header.notes["counts"]["context_reset_prompt_shrank"] == 1


def test_values_checked_by_hand(swe_profile_dir: Path) -> None:
    programs = {p.program_id: p for p in convert(swe_profile_dir / "bs1", ConvertOptions())[1]}
    first = programs[BS1_RUN].steps[0]
    # metrics line 1; tool_execution 962.893752 -> 963.0415764, observation_packaging -> 963.1831923
    assert (first.prompt_tokens, first.output_tokens) == (639, 169)
    assert first.llm_latency_s == pytest.approx(3.177)
    assert first.tool_s == pytest.approx(0.289)
    assert first.cached_tokens is None and first.tool == "swe-agent-action"
    env = programs[BS1_RUN].env
    assert env is not None and env.setup_s == pytest.approx(7.017)  # env_prepare 949.883905 -> 956.9009895


def test_reader_keeps_ttft_decode_and_agent_time(swe_profile_dir: Path) -> None:
    run = read_run(swe_profile_dir / "bs1" / BS1_RUN)
    call = run.steps[0].call
    assert call.ttft_s == pytest.approx(0.15042806) and call.decode_s == pytest.approx(2.99268007)
    assert call.tpot_s == pytest.approx(2.99268007 / 168)
    # answer 962.56675 -> tool 962.893752, observation end 963.1831923 -> next call 963.1865602
    assert run.steps[0].agent_s == pytest.approx(0.3303699, abs=1e-6)
    assert run.before_first_call_s == pytest.approx(2.4884928, abs=1e-6)


def test_hidden_call_and_context_reset_are_reported(swe_profile_dir: Path) -> None:
    _, programs, report = convert(swe_profile_dir / "bs32", ConvertOptions())
    steps = {p.program_id: p for p in programs}[RESET_RUN].steps
    assert steps[38].context_reset and not steps[37].context_reset
    assert (RESET_RUN, "step 38: an earlier call ended 'reenter' after 66.426 s with no metrics line "
                       "(the agent asked again)") in report.warnings
    assert any(w == (RESET_RUN, "step 39: prompt does not extend the previous context (prompt_shrank); "
                                "marked context_reset") for w in report.warnings)


def test_config_gives_the_worker_count(swe_profile_dir: Path) -> None:
    assert num_workers(swe_profile_dir / "bs32") == 32
    assert num_workers(swe_profile_dir / "bs1" / BS1_RUN) is None  # no config in a run folder


def _copy(swe_profile_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "batch" / BS1_RUN
    shutil.copytree(swe_profile_dir / "bs1" / BS1_RUN, target)
    for file in target.iterdir():
        file.chmod(0o644)
    return target


@pytest.mark.parametrize("file, line, old, new, where", [
    ("prefix_cache_metrics.jsonl", 2, '"input_tokens": 2857', '"input_tokens": "many"',
     "prefix_cache_metrics.jsonl:2: input_tokens: must be an integer, got 'many'"),
    ("prefix_cache_metrics.jsonl", 1, '"prefill_time": 0.15042805671691895', '"prefill_time": -1',
     "prefix_cache_metrics.jsonl:1: prefill_time: must be a finite number >= 0, got -1"),
    ("stage_timings.jsonl", 3, '"phase":"enter"', '"phase":"start"',
     "stage_timings.jsonl:3: phase: must be 'enter' or 'exit', got 'start'"),
    ("stage_timings.jsonl", 4, '"stage":"llm_reasoning"', '"stage":"thinking"',
     "stage_timings.jsonl:4: stage: must be one of env_prepare"),
])
def test_malformed_line_skips_the_run_with_file_line_and_field(swe_profile_dir: Path, tmp_path: Path, file: str,
                                                               line: int, old: str, new: str, where: str) -> None:
    folder = _copy(swe_profile_dir, tmp_path)
    path = folder / file
    lines = path.read_text().splitlines(keepends=True)
    assert old in lines[line - 1]
    lines[line - 1] = lines[line - 1].replace(old, new)
    path.write_text("".join(lines))
    with pytest.raises(ProfileError, match=f"{file}:{line}:"):
        read_run(folder)
    _, programs, report = convert(folder.parent, ConvertOptions())
    assert programs == []
    ((source, reason),) = report.skipped
    assert source == BS1_RUN and reason.startswith("unreadable: ") and where in reason


def test_invalid_json_and_an_exit_without_enter(swe_profile_dir: Path, tmp_path: Path) -> None:
    folder = _copy(swe_profile_dir, tmp_path)
    stages = folder / "stage_timings.jsonl"
    lines = stages.read_text().splitlines(keepends=True)
    stages.write_text("".join(lines[:2] + lines[3:]))  # drop llm_reasoning step 1's enter
    with pytest.raises(ProfileError, match="stage_timings.jsonl:3: phase: exit of llm_reasoning step 1 without"):
        read_run(folder)
    stages.write_text("".join(lines[:4] + ["{not json\n"] + lines[4:]))
    with pytest.raises(ProfileError, match="stage_timings.jsonl:5: line: invalid JSON"):
        read_run(folder)


def test_refusals(swe_profile_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConversionError, match="records tool time"):
        convert(swe_profile_dir, ConvertOptions(tool_time=parse_tool_time("const:1")))
    with pytest.raises(ConversionError, match="no prefix_cache_metrics.jsonl files"):
        convert(tmp_path, ConvertOptions())


def test_cli_writes_a_valid_trace(swe_profile_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "profile.jsonl"
    result = CliRunner().invoke(app, ["trace", "convert", "--from", "swe-agent-profile",
                                      str(swe_profile_dir / "bs32"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "wrote 3 programs, 84 steps" in result.output
    assert "warning django__django-15851: step 20: an earlier call ended 'reenter'" in result.output
    trace = load_trace(out)
    assert trace.header.token_counting == "provider" and len(trace.programs) == 3
