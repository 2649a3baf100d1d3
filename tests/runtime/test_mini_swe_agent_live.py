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
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from serve_process import thunder_serve
from vllm_fixture import VllmBackend, make_vllm_backend_fixture

from thunder.runtime.vllm_server import REPO_ROOT

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

vllm_backend = make_vllm_backend_fixture()  # the shared default server: 16k tokens of KV

EXAMPLE = REPO_ROOT / "examples" / "mini_swe_agent_batch.py"


def test_two_mini_swe_agents_through_the_proxy(vllm_backend: VllmBackend, tmp_path: Path) -> None:
    pytest.importorskip("minisweagent", reason="mini-swe-agent is not installed: pip install -e '.[agents]'")
    summary_path = tmp_path / "summary.json"
    with thunder_serve([vllm_backend.url], "--policy", "thunder", "--idle-timeout-s", "2",
                       workdir=tmp_path) as proxy:
        run = subprocess.run([sys.executable, str(EXAMPLE), "--proxy", proxy.url, "--model", vllm_backend.model,
                              "--agents", "2", "--step-limit", "3", "--max-tokens", "16", "--reclaim-wait-s", "30",
                              "--out", str(summary_path)],
                             capture_output=True, text=True, timeout=300, check=False,
                             # a failing call is retried twice, not mini-swe-agent's default ten times
                             env={**os.environ, "MSWEA_MODEL_RETRY_STOP_AFTER_ATTEMPT": "2"})
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
