"""`measure_together`: a cluster's engines calibrated at once, their measurements pooled."""

from __future__ import annotations

import asyncio

import pytest

from thunder.core.probes import LoadProbe, Measurements, PrefixCacheCheck, Probe, ProbeRun, ServerFacts
from thunder.runtime.engines import measure as calibrate
from thunder.runtime.engines.measure import CalibrateConfig, CalibrationError, measure_together

PROBE = Probe("decode-4x32", 4, 32, 64)
PREFIX = PrefixCacheCheck(prompt_tokens=1000, first_cached_tokens=0, repeat_cached_tokens=992,
                          extended_prompt_tokens=1100, extended_cached_tokens=992, first_latency_s=0.04,
                          repeat_latency_s=0.01, extended_latency_s=0.02)


def facts(num_blocks: int = 512) -> ServerFacts:
    return ServerFacts(version="0.32.0", model="tiny", max_model_len=4096, block_size=32, num_blocks=num_blocks,
                       cache_config={})


def measured(latency: float, client_s: float, engine_s: float, num_blocks: int = 512) -> Measurements:
    load = LoadProbe(clients=8, requests_each=6, prompt_tokens=1024, output_tokens=32,
                     mean_client_latency_s=client_s, mean_engine_s=engine_s)
    return Measurements(facts=facts(num_blocks), runs=(ProbeRun(PROBE, (latency,) * 4),), prefix=PREFIX,
                        preemptions=1.0, duration_s=10.0 + latency, load=load, cached_probe_tokens=0)


def run_with(monkeypatch: pytest.MonkeyPatch, by_endpoint: dict[str, Measurements]) -> Measurements:
    async def fake_measure(config, probes_for, on_probe=None):  # type: ignore[no-untyped-def]
        await asyncio.sleep(0)
        return by_endpoint[config.endpoint]

    monkeypatch.setattr(calibrate, "measure", fake_measure)
    configs = [CalibrateConfig(endpoint=url) for url in by_endpoint]
    return asyncio.run(measure_together(configs, lambda f: (PROBE,)))


def test_measurements_of_engines_calibrated_together_are_pooled(monkeypatch: pytest.MonkeyPatch) -> None:
    pooled = run_with(monkeypatch, {"http://a": measured(0.2, 0.30, 0.26), "http://b": measured(0.3, 0.40, 0.32)})
    assert [run.latencies_s[0] for run in pooled.runs] == [0.2, 0.3]  # every run of both, as extra repeats
    assert pooled.preemptions == 2.0 and pooled.duration_s == pytest.approx(10.3)
    assert pooled.load is not None
    assert pooled.load.mean_client_latency_s == pytest.approx(0.35)
    assert pooled.load.mean_engine_s == pytest.approx(0.29)


def test_engines_that_differ_are_not_pooled(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(CalibrationError, match="http://b differs from http://a"):
        run_with(monkeypatch, {"http://a": measured(0.2, 0.3, 0.26), "http://b": measured(0.2, 0.3, 0.26, 1024)})
