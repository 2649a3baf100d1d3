"""``thunder calibrate``: measure a live vLLM server for the simulator.

Over HTTP only: ``/version``, ``/v1/models`` (model, ``max_model_len``),
``/metrics`` (``vllm:cache_config_info``: block size and number of KV blocks;
``vllm:num_preemptions_total``), then ``/v1/completions`` with prompts of
token ids, so prompt lengths are exact, and ``max_tokens`` with
``ignore_eos`` so output lengths are too. Each probe (``thunder.core.probes``)
sends its requests at once and records each one's latency, send to last byte.
Repeats are interleaved (probe order, again and again) so a burst of load
from elsewhere on the machine spreads over probes instead of skewing one.

Non-streaming on purpose: ``thunder run`` replays non-streaming, and on a
small CPU server the per-token streaming path costs CPU the engine then lacks.

Fitting is not done here (``thunder.sim.fit_profile`` does it through the
simulated engine); this module only measures.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

import aiohttp
import numpy as np

from thunder.core.probes import LoadProbe, Measurements, PrefixCacheCheck, Probe, ProbeRun, ServerFacts
from thunder.runtime.engines.prometheus import first, parse_text, total
from thunder.runtime.engines.vllm import capacity_from


class CalibrationError(RuntimeError):
    """The endpoint cannot be calibrated (unreachable, no KV geometry, a request failed)."""


@dataclass(frozen=True, slots=True)
class CalibrateConfig:
    endpoint: str  # base URL of a vLLM server (not a proxy: we want the engine alone)
    model: str | None = None  # None: the first model the server lists
    repeats: int = 5  # runs of every probe; the fit takes the median per request
    seed: int | None = None  # seed of the prompt token ids; None: a fresh one (recorded), so that a
    # second calibration of the same server does not find the first one's prompts in its prefix cache
    request_timeout_s: float = 120.0
    token_id_range: tuple[int, int] = (100, 4000)  # must lie inside the vocabulary
    prefix_prompt_tokens: int = 1000  # the prefix-cache check's prompt length
    warmup_requests: int = 4  # first requests pay one-time costs (allocations, caches)
    load_clients: int = 8  # the load probe: closed-loop clients ...
    load_requests_each: int = 6  # ... each sending this many requests
    load_prompt_tokens: int = 1024
    load_output_tokens: int = 32


class _Client:
    def __init__(self, config: CalibrateConfig, session: aiohttp.ClientSession) -> None:
        self.config = config
        self.session = session
        self.seed = config.seed if config.seed is not None else secrets.randbits(32)
        self.rng = np.random.default_rng(self.seed)
        self.model = config.model or ""
        self.cached_probe_tokens = 0  # prompt tokens the probes found cached (should stay 0)

    def fresh_ids(self, count: int) -> list[int]:
        """Random ids: two prompts share a first 32-token block with negligible probability."""
        low, high = self.config.token_id_range
        return self.rng.integers(low, high, size=count).tolist()

    async def get(self, path: str) -> tuple[int, str]:
        try:
            async with self.session.get(f"{self.config.endpoint}{path}") as response:
                return response.status, await response.text()
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise CalibrationError(f"{self.config.endpoint}{path}: {exc!r}") from exc

    async def complete(self, prompt: list[int], max_tokens: int) -> tuple[float, dict[str, Any]]:
        """(latency_s, usage) of one non-streaming completion."""
        body = {"model": self.model, "prompt": prompt, "max_tokens": max_tokens, "ignore_eos": True,
                "temperature": 0.0}
        start = time.perf_counter()
        try:
            async with self.session.post(f"{self.config.endpoint}/v1/completions", json=body) as response:
                payload = await response.json(content_type=None)
                status = response.status
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            raise CalibrationError(f"completion failed: {exc!r}") from exc
        latency = time.perf_counter() - start
        usage = payload.get("usage") if isinstance(payload, dict) else None
        if status != 200 or not usage:
            raise CalibrationError(f"completion: HTTP {status}: {str(payload)[:300]}")
        if usage.get("completion_tokens") != max_tokens:
            raise CalibrationError(f"asked for {max_tokens} tokens with ignore_eos, got {usage.get('completion_tokens')}")
        return latency, usage

    async def facts(self) -> ServerFacts:
        status, text = await self.get("/version")
        version = str(_json(text).get("version", "unknown")) if status == 200 else "unknown"
        status, text = await self.get("/v1/models")
        models = (_json(text).get("data") or []) if status == 200 else []
        if not models:
            raise CalibrationError(f"{self.config.endpoint}/v1/models lists no model (HTTP {status})")
        chosen = next((m for m in models if m.get("id") == self.config.model), models[0])
        self.model = self.model or str(chosen["id"])
        status, text = await self.get("/metrics")
        samples = parse_text(text) if status == 200 else []
        geometry = capacity_from(samples)
        info = first(samples, "vllm:cache_config_info")
        if geometry is None or info is None:
            raise CalibrationError(f"{self.config.endpoint}/metrics has no vllm:cache_config_info: "
                                   "cannot learn the KV capacity")
        capacity, block_size = geometry
        return ServerFacts(version=version, model=self.model, max_model_len=int(chosen.get("max_model_len") or 0),
                           block_size=block_size, num_blocks=capacity // block_size,
                           cache_config=dict(info.labels))

    async def preemptions(self) -> float:
        status, text = await self.get("/metrics")
        found = total(parse_text(text), "vllm:num_preemptions_total") if status == 200 else None
        return found or 0.0

    async def run_probe(self, probe: Probe) -> ProbeRun:
        prompts = [self.fresh_ids(probe.prompt_tokens) for _ in range(probe.count)]
        before = await self.request_time_sums()
        results = await asyncio.gather(*(self.complete(p, probe.output_tokens) for p in prompts))
        self.cached_probe_tokens += sum(_cached(usage) for _, usage in results)
        engine = await self.engine_seconds_since(before, probe.count)
        return ProbeRun(probe, tuple(latency for latency, _ in results),
                        engine_s=None if engine is None else engine / probe.count)

    async def engine_seconds_since(self, before: tuple[float, float] | None, requests: int,
                                   wait_s: float = 5.0) -> float | None:
        """Engine seconds vLLM's histograms added since ``before`` once they count
        ``requests`` more (they update when the API server handles the engine's stats, just
        after the responses); None without histograms, or if they never catch up."""
        deadline = time.perf_counter() + wait_s
        while before is not None:
            after = await self.request_time_sums()
            if after is None:
                return None
            if after[1] - before[1] >= requests:
                return after[0] - before[0] if after[1] - before[1] == requests else None
            if time.perf_counter() > deadline:
                return None
            await asyncio.sleep(0.01)
        return None

    async def request_time_sums(self) -> tuple[float, float] | None:
        """(seconds, requests) of vLLM's queue + inference time histograms, or None."""
        status, text = await self.get("/metrics")
        samples = parse_text(text) if status == 200 else []
        queue = total(samples, "vllm:request_queue_time_seconds_sum")
        inference = total(samples, "vllm:request_inference_time_seconds_sum")
        count = total(samples, "vllm:request_inference_time_seconds_count")
        if queue is None or inference is None or count is None:
            return None
        return queue + inference, count

    async def load_probe(self) -> LoadProbe:
        cfg = self.config
        latencies: list[float] = []

        async def client() -> None:
            for _ in range(cfg.load_requests_each):
                latency, _ = await self.complete(self.fresh_ids(cfg.load_prompt_tokens), cfg.load_output_tokens)
                latencies.append(latency)

        before = await self.request_time_sums()
        await asyncio.gather(*(client() for _ in range(cfg.load_clients)))
        total_s = await self.engine_seconds_since(before, len(latencies))
        engine = None if total_s is None else total_s / len(latencies)
        return LoadProbe(clients=cfg.load_clients, requests_each=cfg.load_requests_each,
                         prompt_tokens=cfg.load_prompt_tokens, output_tokens=cfg.load_output_tokens,
                         mean_client_latency_s=float(np.mean(latencies)), mean_engine_s=engine)

    async def prefix_check(self) -> PrefixCacheCheck:
        n = self.config.prefix_prompt_tokens
        prompt = self.fresh_ids(n)
        extended = prompt + self.fresh_ids(max(1, n // 10))
        first_s, first_usage = await self.complete(prompt, 1)
        repeat_s, repeat_usage = await self.complete(prompt, 1)
        extended_s, extended_usage = await self.complete(extended, 1)
        return PrefixCacheCheck(prompt_tokens=n, first_cached_tokens=_cached(first_usage),
                                repeat_cached_tokens=_cached(repeat_usage), extended_prompt_tokens=len(extended),
                                extended_cached_tokens=_cached(extended_usage), first_latency_s=first_s,
                                repeat_latency_s=repeat_s, extended_latency_s=extended_s)


def _json(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _cached(usage: dict[str, Any]) -> int:
    return int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)


async def discover(config: CalibrateConfig) -> ServerFacts:
    """Only the server's facts (version, model, KV geometry): no load on the engine."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=config.request_timeout_s)) as session:
        return await _Client(config, session).facts()


async def measure(config: CalibrateConfig, probes_for: Callable[[ServerFacts], Sequence[Probe]],
                  on_probe: Callable[[ProbeRun], None] | None = None) -> Measurements:
    """Learn the server's facts, then run ``probes_for(facts)`` ``config.repeats`` times."""
    started = time.perf_counter()
    timeout = aiohttp.ClientTimeout(total=config.request_timeout_s)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=256)) as session:
        client = _Client(config, session)
        facts = await client.facts()
        probes = list(probes_for(facts))
        for _ in range(config.warmup_requests):
            await client.complete(client.fresh_ids(256), 8)
        before = await client.preemptions()
        runs = []
        for _ in range(config.repeats):
            for probe in probes:
                runs.append(await client.run_probe(probe))
                if on_probe is not None:
                    on_probe(runs[-1])
        preempted = await client.preemptions() - before
        prefix = await client.prefix_check()
        load = await client.load_probe() if config.load_clients > 0 else None
    return Measurements(facts=facts, runs=tuple(runs), prefix=prefix, preemptions=preempted,
                        duration_s=time.perf_counter() - started, load=load, seed=client.seed,
                        cached_probe_tokens=client.cached_probe_tokens)


async def measure_together(configs: Sequence[CalibrateConfig],
                           probes_for: Callable[[ServerFacts], Sequence[Probe]],
                           on_probe: Callable[[ProbeRun], None] | None = None) -> Measurements:
    """Calibrate several identical engines at the same time and pool what they measured.

    Engines that share a machine (cores, memory bandwidth, the front end's CPU) are
    slower together than alone; a data-parallel cluster runs them together, so its
    profile should be measured that way. The servers must report the same facts."""
    if not configs:
        raise CalibrationError("no endpoint to calibrate")
    measured = await asyncio.gather(*(measure(config, probes_for, on_probe) for config in configs))
    head = measured[0]
    for config, other in zip(configs[1:], measured[1:]):
        if (other.facts.num_blocks, other.facts.block_size, other.facts.version) != \
                (head.facts.num_blocks, head.facts.block_size, head.facts.version):
            raise CalibrationError(f"{config.endpoint} differs from {configs[0].endpoint} (KV geometry or "
                                   "version): calibrate different engines separately")
    loads = [m.load for m in measured if m.load is not None]
    load = None
    if loads:
        engines = [lp.mean_engine_s for lp in loads]
        load = replace(loads[0], mean_client_latency_s=sum(lp.mean_client_latency_s for lp in loads) / len(loads),
                       mean_engine_s=None if None in engines else sum(engines) / len(engines))  # type: ignore[arg-type]
    return replace(head, runs=tuple(run for m in measured for run in m.runs),
                   preemptions=sum(m.preemptions for m in measured),
                   duration_s=max(m.duration_s for m in measured), load=load,
                   cached_probe_tokens=sum(m.cached_probe_tokens for m in measured))
