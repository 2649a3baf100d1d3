"""tau-bench converter: text-counted tokens, the user as a tool, and seeded synthetic tool times."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from thunder.traces import TraceProgram, load_trace, write_trace
from thunder.traces.converters import ConversionError, ConvertOptions, parse_tool_time
from thunder.traces.converters.tau_bench import convert

TRANSFER_RUN = "task-38/trial-2"


def by_id(programs: list[TraceProgram]) -> dict[str, TraceProgram]:
    return {p.program_id: p for p in programs}


def test_converts_every_run(tau_file: Path) -> None:
    header, programs, report = convert(tau_file, ConvertOptions())
    assert {p.program_id: len(p.steps) for p in programs} == {
        TRANSFER_RUN: 4, "task-12/trial-3": 4, "task-44/trial-3": 2}
    assert report.converted == 3 and report.steps == 10 and report.skipped == ()
    assert header.token_counting == "chars-per-token" and header.chars_per_token == 4.0


def test_values_checked_by_hand(tau_file: Path) -> None:
    run = by_id(convert(tau_file, ConvertOptions())[1])[TRANSFER_RUN]
    # system 6155 chars -> 1539 tokens, shared by every run
    assert run.shared_prefix_tokens == 1539 and run.shared_prefix_id is not None
    assert run.steps[0].prompt_tokens == 1539 + 16 and run.steps[0].tool == "user"
    # messages before step 3: 1539 + 16 + 39 + 23 + 45 + 34 + 52 + 22
    assert (run.steps[3].prompt_tokens, run.steps[3].output_tokens) == (1770, 77)
    assert run.steps[3].tool == "transfer_to_human_agents"
    assert all(s.tool_s is None and s.llm_latency_s is None for s in run.steps)


def test_constant_tool_time(tau_file: Path) -> None:
    header, programs, _ = convert(tau_file, ConvertOptions(tool_time=parse_tool_time("const:0.5")))
    assert {s.tool_s for p in programs for s in p.steps} == {0.5}
    assert "const:0.5" in header.notes["tool_s"]


def test_drawn_tool_times_follow_the_seed(tau_file: Path) -> None:
    def times(spec: str, seed: int) -> list[float | None]:
        programs = convert(tau_file, ConvertOptions(tool_time=parse_tool_time(spec), seed=seed))[1]
        return [s.tool_s for p in programs for s in p.steps]

    assert times("exp:2", 7) == times("exp:2", 7)
    assert times("exp:2", 7) != times("exp:2", 8)
    assert all(t is not None and t > 0 for t in times("lognormal:0.3,1.2", 1))


def test_never_started_and_duplicate_runs_are_reported(tau_file: Path, tmp_path: Path) -> None:
    records = json.loads(tau_file.read_text())
    silent = dict(records[0], task_id=99, traj=records[0]["traj"][:2])  # system + user, no reply
    path = tmp_path / "runs.json"
    path.write_text(json.dumps(records + [records[1], silent]))
    _, programs, report = convert(path, ConvertOptions())
    assert len(programs) == 3
    # Unusable runs are reported as they are read; duplicates once all are read.
    assert report.skipped == (
        ("runs.json[4] (task-99/trial-2)", "never started: no assistant message"),
        ("runs.json[3] (task-12/trial-3)", "duplicate run of 'task-12/trial-3' (kept runs.json[1] (task-12/trial-3))"),
    )

def test_round_trip(tau_file: Path, tmp_path: Path) -> None:
    header, programs, _ = convert(tau_file, ConvertOptions(tool_time=parse_tool_time("exp:1"), seed=3))
    write_trace(tmp_path / "tau.jsonl", header, programs)
    loaded = load_trace(tmp_path / "tau.jsonl")
    assert loaded.programs == tuple(programs) and loaded.header.notes == header.notes


@pytest.mark.parametrize("spec", ["normal:1", "exp:", "exp:0", "lognormal:1", "const:-1", "exp:x", "const:nan"])
def test_bad_tool_time_specs_are_refused(spec: str) -> None:
    with pytest.raises(ConversionError):
        parse_tool_time(spec)


def test_unreadable_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(ConversionError, match="expected a JSON list"):
        convert(tmp_path / "x.json", ConvertOptions())
