"""`thunder calibrate` against a real vLLM (CPU build, tiny model): a short smoke run.

Timings on a shared CPU are noisy, so this checks what must hold whatever the
load: the KV geometry read from /metrics, the prefix-cache rule, a profile the
simulator loads, non-negative coefficients that explain most of the variance.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner
from vllm_fixture import VllmBackend, make_vllm_backend_fixture

from thunder.cli import app
from thunder.sim.presets import load_engine_spec

vllm_backend = make_vllm_backend_fixture()


@pytest.mark.vllm
def test_calibrate_writes_a_profile_the_simulator_loads(vllm_backend: VllmBackend, tmp_path) -> None:
    out = tmp_path / "profile.json"
    result = CliRunner().invoke(app, ["calibrate", "--endpoint", vllm_backend.url, "-o", str(out),
                                      "--repeats", "1", "--name", "tiny-live", "--serving-flags", "test fixture"])
    assert result.exit_code == 0, result.output
    profile = json.loads(out.read_text())
    cal = profile["calibration"]
    assert (profile["num_blocks"], profile["block_size"]) == (vllm_backend.kv_capacity_tokens // 32, 32)
    assert cal["engine_version"].startswith("0.")
    assert cal["serving_flags"] == "test fixture"
    assert cal["prefix_cache"]["matches_simulator"], cal["prefix_cache"]
    assert cal["preemptions_while_probing"] == 0
    assert all(v >= 0 for v in cal["fit"]["coefficients"].values())
    # Fit quality is recorded, not asserted: one repeat on a shared 2-core machine can be
    # swamped by outside load (the fit's quality is measured in benchmarks/fidelity.py).
    fit = cal["fit"]
    assert fit["r2"] <= 1.0 and fit["rows"] > 0, fit
    assert 0.0 <= fit["median_abs_rel_error"] <= fit["max_abs_rel_error"], fit
    assert cal["load_probe"]["mean_engine_s"] is not None
    spec = load_engine_spec(str(out))
    assert spec.name == "tiny-live" and spec.capacity_tokens == vllm_backend.kv_capacity_tokens
    assert spec.step_time.overhead_s + spec.step_time.per_decode_seq_s > 0


@pytest.mark.vllm
def test_calibrate_measures_repeated_endpoints_together(vllm_backend: VllmBackend, tmp_path) -> None:
    # One server named twice stands in for a cluster's two engines: the CLI runs both
    # calibrations at once and fits one profile to the pooled measurements.
    out = tmp_path / "profile.json"
    result = CliRunner().invoke(app, ["calibrate", "--endpoint", vllm_backend.url, "--endpoint", vllm_backend.url,
                                      "-o", str(out), "--repeats", "1"])
    assert result.exit_code == 0, result.output
    profile = json.loads(out.read_text())
    assert profile["calibration"]["engines_measured_together"] == 2
    assert "2 identical engines measured at the same time" in profile["sources"]["engine"]
    probes = {p["probe"] for p in profile["calibration"]["latencies_s"]}
    assert len(profile["calibration"]["latencies_s"]) == 2 * len(probes)  # one run of every probe per engine
    assert profile["frontend_s"] > 0 and profile["admit_full_prompt"] is True
