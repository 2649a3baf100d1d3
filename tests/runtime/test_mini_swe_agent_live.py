"""mini-swe-agent, a real agent framework from PyPI, through ``thunder serve``
in front of a real vLLM (CPU build, tiny model).

Runs ``examples/mini_swe_agent_batch.py`` as a user would: two agents at once
on local tasks, a step limit of 3. The tiny model answers gibberish, so each
agent gets format errors and tries again: real multi-turn traffic whose
prompts grow turn by turn. One agent ends its program with the example's
release hook, the other has none and is reclaimed by ``--idle-timeout-s``.
Skipped without the vLLM venv, or when mini-swe-agent is not installed
(``pip install -e '.[agents]'``; ``scripts/test.sh`` installs it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from serve_process import thunder_serve
from vllm_fixture import VllmBackend, make_vllm_backend_fixture

from thunder.runtime.engines.launcher import REPO_ROOT

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

vllm_backend = make_vllm_backend_fixture()  # the shared default server: 16k tokens of KV

EXAMPLE = REPO_ROOT / "examples" / "mini_swe_agent_batch.py"
# What a user adds to mini-swe-agent's own config to go through the proxy: configuration only.
CLI_CONFIG = """\
agent:
  step_limit: 3
  max_consecutive_format_errors: 0
model:
  model_name: hosted_vllm/{model}
  model_class: litellm_textbased
  cost_tracking: ignore_errors
  model_kwargs:
    api_base: {proxy}/v1
    api_key: unused
    max_tokens: 16
    extra_body:
      program_id: cli-task
"""


def quiet_env(tmp_path: Path) -> dict[str, str]:
    """mini-swe-agent without first-run setup prompts, network look-ups or long retries."""
    return {**os.environ, "MSWEA_CONFIGURED": "1", "MSWEA_SILENT_STARTUP": "1",
            "MSWEA_GLOBAL_CONFIG_DIR": str(tmp_path / "mswea-config"), "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            # a failing call is retried twice, not mini-swe-agent's default ten times
            "MSWEA_MODEL_RETRY_STOP_AFTER_ATTEMPT": "2"}


def test_two_mini_swe_agents_through_the_proxy(vllm_backend: VllmBackend, tmp_path: Path) -> None:
    pytest.importorskip("minisweagent", reason="mini-swe-agent is not installed: pip install -e '.[agents]'")
    summary_path = tmp_path / "summary.json"
    with thunder_serve([vllm_backend.url], "--policy", "thunder", "--idle-timeout-s", "2",
                       workdir=tmp_path) as proxy:
        run = subprocess.run([sys.executable, str(EXAMPLE), "--proxy", proxy.url, "--model", vllm_backend.model,
                              "--agents", "2", "--step-limit", "3", "--max-tokens", "16", "--reclaim-wait-s", "30",
                              "--out", str(summary_path)],
                             capture_output=True, text=True, timeout=300, check=False, env=quiet_env(tmp_path))
        assert run.returncode == 0, run.stderr[-4000:]
        metrics = httpx.get(proxy.url + "/metrics", timeout=10).text
    summary = json.loads(summary_path.read_text())
    assert [a["exit_status"] for a in summary["agents"]] == ["LimitsExceeded"] * 2
    assert [a["model_calls"] for a in summary["agents"]] == [3, 3]
    assert summary["programs_left"] == []  # released or reclaimed: nothing leaks
    profiles = summary["profiles"]
    assert profiles["mini-0"]["ended_by"] == "release" and profiles["mini-1"]["ended_by"] == "idle reclaim"
    for profile in profiles.values():
        # Three model calls, three steps of one program: the id arrived on every call
        # (mini-0 sends it in the body, mini-1 as a header).
        assert profile["steps"] == 3
        assert profile["output_tokens"] <= 3 * 16
        # Each turn extends the last one's prompt: vLLM finds the start of it cached.
        assert 0 < profile["cached_tokens"] < profile["prompt_tokens"]
        assert profile["tool_s"] > 0  # the acting time between the turns
    reclaims = [s.value for f in text_string_to_metric_families(metrics) for s in f.samples
                if s.name == "thunder:reclaims_total"]
    assert reclaims == [1]


def test_the_mini_command_with_a_yaml_config_only(vllm_backend: VllmBackend, tmp_path: Path) -> None:
    pytest.importorskip("minisweagent", reason="mini-swe-agent is not installed: pip install -e '.[agents]'")
    with thunder_serve([vllm_backend.url], "--policy", "thunder", "--idle-timeout-s", "1",
                       workdir=tmp_path) as proxy:
        config = tmp_path / "thunder.yaml"
        config.write_text(CLI_CONFIG.format(model=vllm_backend.model, proxy=proxy.url))
        workdir = tmp_path / "task"
        workdir.mkdir()
        run = subprocess.run([sys.executable, "-m", "minisweagent.run.mini", "-c", "mini_textbased.yaml",
                              "-c", str(config), "--yolo", "--exit-immediately", "-t", "Create hello.txt.",
                              "-o", str(tmp_path / "trajectory.json")],
                             cwd=workdir, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300,
                             check=False, env=quiet_env(tmp_path))
        assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
        trajectory = json.loads((tmp_path / "trajectory.json").read_text())
        assert trajectory["info"]["exit_status"] == "LimitsExceeded"
        program = httpx.get(proxy.url + "/programs/cli-task", timeout=10).json()
        assert program["steps_done"] == 3  # all three calls of the run were one program
        # No release call from the CLI: the idle timeout reclaims the program.
        for _ in range(100):
            if httpx.get(proxy.url + "/programs/cli-task", timeout=10).status_code == 404:
                break
            time.sleep(0.1)
        decisions = httpx.get(proxy.url + "/programs/export.csv", params={"table": "decisions"}, timeout=10).text
    assert "reclaim,cli-task" in decisions
