"""``thunder trace convert``: what it writes and what it prints."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from thunder.cli import app
from thunder.traces import load_trace

runner = CliRunner()


def test_converts_a_folder_and_prints_warnings(mini_swe_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "swe.jsonl"
    result = runner.invoke(app, ["trace", "convert", "--from", "mini-swe-agent", str(mini_swe_dir), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "wrote 4 programs, 190 steps" in result.output
    assert "skipped 0" in result.output
    assert "warning django__django-11630/django__django-11630.traj.json: message 32" in result.output
    assert len(load_trace(out).programs) == 4


def test_prints_every_skipped_run(openhands_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "oh.jsonl"
    result = runner.invoke(app, ["trace", "convert", "--from", "openhands", str(openhands_file),
                                 "--output", str(out), "--chars-per-token", "3.5"])
    assert result.exit_code == 0, result.output
    assert "wrote 4 programs, 10 steps" in result.output
    assert "skipped output.sample.jsonl:4 (safety-delete-root): never started" in result.output
    assert load_trace(out).header.chars_per_token == 3.5


def test_tool_time_and_seed(tau_file: Path, tmp_path: Path) -> None:
    outputs = []
    for name in ("a.jsonl", "b.jsonl"):
        result = runner.invoke(app, ["trace", "convert", "--from", "tau-bench", str(tau_file), "-o",
                                     str(tmp_path / name), "--tool-time", "lognormal:0.5,1", "--seed", "4"])
        assert result.exit_code == 0, result.output
        outputs.append((tmp_path / name).read_text())
    assert outputs[0] == outputs[1]
    assert "lognormal:0.5,1 with seed 4" in outputs[0]


def test_bad_requests_fail_with_a_message(mini_swe_dir: Path, tau_file: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "x.jsonl")
    cases = [
        (["--from", "nope", str(mini_swe_dir)], "unknown format 'nope'"),
        (["--from", "tau-bench", str(tau_file), "--tool-time", "gauss:1"], "unknown distribution"),
        (["--from", "mini-swe-agent", str(mini_swe_dir), "--tool-time", "const:1"], "records tool time"),
        (["--from", "tau-bench", str(tau_file), "--chars-per-token", "0"], "positive number"),
        (["--from", "mini-swe-agent", str(tmp_path)], "no *.traj.json files"),
    ]
    for args, message in cases:
        result = runner.invoke(app, ["trace", "convert", *args, "-o", out])
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, (args, result.output)
    assert not Path(out).exists()


def test_nothing_converted_prints_the_skips_and_fails(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_text('{"instance_id": "a", "history": []}\n')
    out = tmp_path / "x.jsonl"
    result = runner.invoke(app, ["trace", "convert", "--from", "openhands", str(tmp_path / "empty.jsonl"),
                                 "-o", str(out)])
    assert result.exit_code == 2
    assert "skipped empty.jsonl:1 (a): never started" in result.output
    assert "no programs converted" in result.output and not out.exists()
