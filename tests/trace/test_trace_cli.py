"""`thunder trace synth` and `thunder trace stats` through the real command line."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from thunder.cli import app
from thunder.traces import load_trace

runner = CliRunner()


def test_synth_writes_a_valid_trace(tmp_path):
    out = tmp_path / "routing.jsonl"
    result = runner.invoke(app, ["trace", "synth", "--workload", "routing", "--programs", "12",
                                 "--seed", "3", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "wrote 12 routing programs" in result.output
    trace = load_trace(out)
    assert len(trace.programs) == 12
    assert trace.header.notes["seed"] == 3
    assert all(p.arrival_s is None for p in trace.programs)


def test_synth_is_deterministic_and_rate_adds_arrivals(tmp_path):
    paths = [tmp_path / name for name in ("a.jsonl", "b.jsonl", "c.jsonl")]
    for path, extra in zip(paths, ([], [], ["--rate", "0.25"])):
        result = runner.invoke(app, ["trace", "synth", "-w", "science", "-n", "5", "-o", str(path), *extra])
        assert result.exit_code == 0, result.output
    assert paths[0].read_bytes() == paths[1].read_bytes()
    assert all(p.arrival_s is not None for p in load_trace(paths[2]).programs)


def test_synth_default_output_is_traces_workload(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["trace", "synth", "-w", "coding", "-n", "2"])
    assert result.exit_code == 0, result.output
    assert len(load_trace(tmp_path / "traces" / "coding.jsonl").programs) == 2


def test_synth_rejects_unknown_workload(tmp_path):
    result = runner.invoke(app, ["trace", "synth", "-w", "chat", "-n", "2", "-o", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert "unknown workload 'chat'" in result.output
    assert not (tmp_path / "x").exists()


def test_stats_text_and_json(tmp_path):
    out = tmp_path / "coding.jsonl"
    runner.invoke(app, ["trace", "synth", "-w", "coding", "-n", "4", "-o", str(out)])
    text = runner.invoke(app, ["trace", "stats", str(out)])
    assert text.exit_code == 0, text.output
    assert "programs: 4" in text.output and "tool time (s)" in text.output
    as_json = runner.invoke(app, ["trace", "stats", str(out), "--json"])
    assert as_json.exit_code == 0, as_json.output
    stats = json.loads(as_json.output)
    assert stats["programs"] == 4
    assert stats["steps"] == sum(len(p.steps) for p in load_trace(out).programs)


def test_stats_reports_trace_errors(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"format_version": 1, "program_id": "p", "workflow": "w", "steps": []}\n')
    result = runner.invoke(app, ["trace", "stats", str(bad)])
    assert result.exit_code == 2
    assert "steps: must hold at least one step" in result.output
