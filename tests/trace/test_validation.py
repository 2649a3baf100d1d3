"""Trace format v1 validation: each broken rule raises its own TraceError.

Every case is a file's lines (dicts are written as JSON, strings verbatim)
and the error it must raise: the line number (None: the file as a whole),
the field, and a substring of the rule.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from thunder.traces import (EnvSpec, Trace, TraceError, TraceHeader, TraceProgram, TraceStep,
                           iter_programs, load_trace, write_trace)

HEADER = {"type": "header", "format_version": 1}


def step(prompt=100, output=10, **extra):
    return {"prompt_tokens": prompt, "output_tokens": output, **extra}


def program(program_id="p", steps=None, **extra):
    return {"program_id": program_id, "workflow": "w",
            "steps": [step()] if steps is None else steps, **extra}


def write_lines(path: Path, lines, final_newline: bool = True) -> Path:
    text = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines)
    path.write_text(text + ("\n" if final_newline and lines else ""), encoding="utf-8")
    return path


CASES = {
    # tokens
    "negative output tokens": ([HEADER, program(steps=[step(output=-1)])],
                               2, "steps[0].output_tokens", "must be >= 0"),
    "negative cached tokens": ([HEADER, program(steps=[step(cached_tokens=-5)])],
                               2, "steps[0].cached_tokens", "must be >= 0"),
    "zero prompt tokens": ([HEADER, program(steps=[step(prompt=0)])],
                           2, "steps[0].prompt_tokens", "must be >= 1"),
    "prompt shorter than previous prompt + output": (
        [HEADER, program(steps=[step(100, 10), step(109, 5)])],
        2, "steps[1].prompt_tokens", "must be >= previous prompt_tokens + output_tokens (109 < 100+10)"),
    "cached tokens above prompt": ([HEADER, program(steps=[step(100, cached_tokens=101)])],
                                   2, "steps[0].cached_tokens", "must be <= prompt_tokens"),
    "prompt shorter than shared prefix": (
        [HEADER, program(steps=[step(100)], shared_prefix_tokens=200, shared_prefix_id="s")],
        2, "steps[0].prompt_tokens", "must be >= shared_prefix_tokens"),
    # missing fields
    "missing program_id": ([HEADER, {"workflow": "w", "steps": [step()]}],
                           2, "program_id", "missing required field"),
    "missing workflow": ([HEADER, {"program_id": "p", "steps": [step()]}],
                         2, "workflow", "missing required field"),
    "missing steps": ([HEADER, {"program_id": "p", "workflow": "w"}], 2, "steps", "missing required field"),
    "missing output tokens": ([HEADER, program(steps=[{"prompt_tokens": 5}])],
                              2, "steps[0].output_tokens", "missing required field"),
    "null prompt tokens": ([HEADER, program(steps=[step(prompt=None)])],
                           2, "steps[0].prompt_tokens", "missing required field"),
    # wrong types
    "string tokens": ([HEADER, program(steps=[step(prompt="100")])],
                      2, "steps[0].prompt_tokens", "must be an integer, got str"),
    "bool tokens": ([HEADER, program(steps=[step(output=True)])],
                    2, "steps[0].output_tokens", "must be an integer, got bool"),
    "float tokens": ([HEADER, program(steps=[step(prompt=1.5)])],
                     2, "steps[0].prompt_tokens", "must be an integer, got float"),
    "string tool time": ([HEADER, program(steps=[step(tool="bash", tool_s="1")])],
                         2, "steps[0].tool_s", "must be a number, got str"),
    "negative tool time": ([HEADER, program(steps=[step(tool="bash", tool_s=-0.5)])],
                           2, "steps[0].tool_s", "finite number >= 0"),
    "NaN tool time": ([HEADER, '{"program_id": "p", "workflow": "w", "steps": '
                               '[{"prompt_tokens": 5, "output_tokens": 1, "tool_s": NaN}]}'],
                      2, "steps[0].tool_s", "finite number >= 0"),
    "non-string tool": ([HEADER, program(steps=[step(tool=3)])], 2, "steps[0].tool", "must be a string"),
    "string context_reset": ([HEADER, program(steps=[step(), step(context_reset="yes")])],
                             2, "steps[1].context_reset", "must be true or false"),
    "steps not a list": ([HEADER, program(steps={"0": step()})], 2, "steps", "must be a list, got dict"),
    "step not an object": ([HEADER, program(steps=[[100, 10]])], 2, "steps[0]", "must be an object"),
    "empty program_id": ([HEADER, program(program_id="")], 2, "program_id", "non-empty string"),
    "env not an object": ([HEADER, program(env=[1])], 2, "env", "must be an object, got list"),
    "negative setup time": ([HEADER, program(env={"setup_s": -1})], 2, "env.setup_s", "finite number >= 0"),
    "float disk bytes": ([HEADER, program(env={"disk_bytes": 2.5e9})],
                         2, "env.disk_bytes", "must be an integer"),
    "negative arrival": ([HEADER, program(arrival_s=-3)], 2, "arrival_s", "finite number >= 0"),
    # versions
    "unknown header version": ([{"type": "header", "format_version": 2}, program()],
                               1, "format_version", "unknown version 2"),
    "unknown program version": ([program(format_version=99)], 1, "format_version", "unknown version 99"),
    "bool version": ([program(format_version=True)], 1, "format_version", "unknown version True"),
    "list version": ([program(format_version=[1])], 1, "format_version", "unknown version [1]"),
    "no header and no version": ([program()], 1, "format_version", "missing: give a header line"),
    "header without version": ([{"type": "header"}, program()],
                               1, "format_version", "missing required field in header"),
    # file structure
    "empty file": ([], None, "file", "empty trace"),
    "blank lines only": (["", "  "], None, "file", "empty trace"),
    "header only": ([HEADER], None, "file", "no programs in trace"),
    "header not on first line": ([HEADER, program("a"), HEADER], 3, "type", "only on the first line"),
    "duplicate program_id": ([HEADER, program("a"), program("b"), program("a")],
                             4, "program_id", "duplicate program_id 'a' (first on line 2)"),
    "invalid JSON inside": ([HEADER, "{not json", program()], 2, "line", "invalid JSON"),
    "line not an object": ([HEADER, "[1, 2]"], 2, "line", "must be a JSON object, got list"),
    "blank lines keep line numbers": ([HEADER, "", program(steps=[step(output=-1)])],
                                      3, "steps[0].output_tokens", "must be >= 0"),
    # shared prefix and steps
    "shared prefix tokens without id": ([HEADER, program(shared_prefix_tokens=10)],
                                        2, "shared_prefix_id", "required when shared_prefix_tokens > 0"),
    "steps empty": ([HEADER, program(steps=[])], 2, "steps", "must hold at least one step"),
}


@pytest.mark.parametrize("lines, line, field, rule", CASES.values(), ids=CASES.keys())
def test_malformed_trace_raises_its_error(tmp_path, lines, line, field, rule):
    path = write_lines(tmp_path / "t.jsonl", lines)
    with pytest.raises(TraceError) as caught:
        load_trace(path)
    error = caught.value
    assert (error.line, error.field) == (line, field), str(error)
    assert rule in error.rule, str(error)
    assert str(error).startswith(str(path))


def test_truncated_last_line(tmp_path):
    whole = json.dumps(program("b"))
    path = write_lines(tmp_path / "t.jsonl", [HEADER, program("a"), whole[: len(whole) // 2]],
                       final_newline=False)
    with pytest.raises(TraceError) as caught:
        load_trace(path)
    assert (caught.value.line, caught.value.field) == (3, "line")
    assert "truncated last line" in caught.value.rule


def test_valid_last_line_without_newline_is_accepted(tmp_path):
    path = write_lines(tmp_path / "t.jsonl", [HEADER, program("a")], final_newline=False)
    assert len(load_trace(path).programs) == 1


def test_missing_file(tmp_path):
    with pytest.raises(TraceError) as caught:
        load_trace(tmp_path / "absent.jsonl")
    assert (caught.value.line, caught.value.field) == (None, "file")
    assert "cannot open" in caught.value.rule


def test_shrinking_prompt_is_accepted_with_context_reset(tmp_path):
    steps = [step(100, 10), step(40, 5, context_reset=True), step(45, 1)]
    path = write_lines(tmp_path / "t.jsonl", [HEADER, program(steps=steps)])
    loaded = load_trace(path).programs[0]
    assert [s.prompt_tokens for s in loaded.steps] == [100, 40, 45]
    assert [s.context_reset for s in loaded.steps] == [False, True, False]


def test_prompt_exactly_previous_prompt_plus_output_is_accepted(tmp_path):
    path = write_lines(tmp_path / "t.jsonl", [HEADER, program(steps=[step(100, 10), step(110, 1)])])
    assert len(load_trace(path).programs[0].steps) == 2


def test_errors_surface_while_streaming_after_good_programs(tmp_path):
    path = write_lines(tmp_path / "t.jsonl", [HEADER, program("a"), program("b", steps=[])])
    stream = iter_programs(path)
    assert next(stream).program_id == "a"
    with pytest.raises(TraceError, match="at least one step"):
        next(stream)


def test_write_then_load_round_trips_every_field(tmp_path):
    header = TraceHeader(source="unit test", created_by="tests", token_counting="tokenizer:x",
                         chars_per_token=3.5, notes={"k": [1, 2]})
    programs = (
        TraceProgram(
            program_id="full", workflow="coding", arrival_s=1.25,
            env=EnvSpec(setup_s=12.5, disk_bytes=2_000_000_000, ports=0),
            shared_prefix_tokens=30, shared_prefix_id="sys",
            steps=(TraceStep(100, 10, cached_tokens=30, llm_latency_s=0.8, tool="bash", tool_s=0.25),
                   TraceStep(120, 5, cached_tokens=110, tool="bash", tool_s=0.0),
                   TraceStep(60, 7, context_reset=True))),
        TraceProgram(program_id="bare", workflow="w", steps=(TraceStep(1, 0),)),
    )
    path = tmp_path / "round.jsonl"
    assert write_trace(path, header, programs) == 2
    assert load_trace(path) == Trace(header=header, programs=programs)
    # and again: the written form is a fixed point
    again = tmp_path / "again.jsonl"
    write_trace(again, header, load_trace(path).programs)
    assert again.read_bytes() == path.read_bytes()


def test_headerless_trace_loads_with_default_header(tmp_path):
    path = write_lines(tmp_path / "t.jsonl", [program("a", format_version=1)])
    trace = load_trace(path)
    assert trace.header == TraceHeader()
    assert [p.program_id for p in trace.programs] == ["a"]
