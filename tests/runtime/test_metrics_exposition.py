"""The proxy's ``/metrics`` read back by ``prometheus_client``'s own parser:
every family has its type and help, names carry the ``thunder:`` namespace,
counters end in ``_total``, histograms are cumulative, and the values follow
what the proxy did. Fast: an in-process fake backend, no vLLM. Also here: a
503 from the proxy tells the client when to retry."""

from __future__ import annotations

import asyncio

import aiohttp
from fake_backend import FakeBackend, proxy_url, running_proxy
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

CHAT = {"model": "fake", "messages": [{"role": "user", "content": "hello " * 40}], "max_tokens": 5}

FAMILIES = {
    "thunder:programs": "gauge", "thunder:pauses": "counter", "thunder:restores": "counter",
    "thunder:migrations": "counter", "thunder:pins": "counter", "thunder:reclaims": "counter",
    "thunder:queue_length": "gauge", "thunder:held_requests": "gauge", "thunder:dispatch_paused": "gauge",
    "thunder:sync_held_requests": "gauge", "thunder:sync_paused_seconds": "counter", "thunder:sync_pauses": "counter", "thunder:queue_wait_seconds": "histogram",
    "thunder:requests": "counter", "thunder:backend_healthy": "gauge", "thunder:backend_capacity_tokens": "gauge",
    "thunder:backend_program_tokens": "gauge", "thunder:backend_running_requests": "gauge",
    "thunder:backend_engine_waiting_requests": "gauge", "thunder:backend_kv_usage": "gauge",
    "thunder:backend_prefix_cache_hit_rate": "gauge", "thunder:prompt_tokens": "counter",
    "thunder:cached_tokens": "counter", "thunder:kv_hit_rate": "gauge", "thunder:proxy_overhead_seconds": "histogram",
}


def scrape_and_requests() -> tuple[str, FakeBackend]:
    async def scenario() -> tuple[str, FakeBackend]:
        fake = FakeBackend()
        await fake.start()
        try:
            async with running_proxy([fake.url], policy="thunder-paper", options={"decay_base": 1.0}) as server:
                async with aiohttp.ClientSession(proxy_url(server)) as client:
                    for program_id in ("m1", "m1", "m2"):
                        async with client.post("/v1/chat/completions",
                                               json={**CHAT, "program_id": program_id}) as response:
                            assert response.status == 200
                    async with client.post("/programs/m2/release") as response:
                        assert response.status == 200
                    async with client.get("/metrics") as response:
                        assert response.status == 200
                        assert response.headers["Content-Type"].startswith("text/plain")
                        return await response.text(), fake
        finally:
            await fake.stop()
    return asyncio.run(scenario())


def by_name(text: str) -> tuple[dict[str, str], dict[str, str], dict[tuple[str, tuple], float], list[Sample]]:
    kinds, helps, values, samples = {}, {}, {}, []
    for family in text_string_to_metric_families(text):
        kinds[family.name], helps[family.name] = family.type, family.documentation
        for sample in family.samples:
            samples.append(sample)
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return kinds, helps, values, samples


def test_every_family_parses_with_its_type_and_help() -> None:
    text, _ = scrape_and_requests()
    kinds, helps, _, samples = by_name(text)
    assert kinds == FAMILIES
    assert all(helps[name] for name in kinds)
    assert all(s.name.startswith("thunder:") for s in samples)
    counters = [s for s in samples if kinds.get(s.name.removesuffix("_total")) == "counter"]
    assert counters and all(s.name.endswith("_total") for s in counters)


def test_values_follow_what_the_proxy_did() -> None:
    text, fake = scrape_and_requests()
    _, _, value, _ = by_name(text)
    assert value[("thunder:programs", (("phase", "acting"), ("status", "active")))] == 1  # m1; m2 released
    assert value[("thunder:requests_total", (("outcome", "ok"),))] == 3
    assert value[("thunder:restores_total", ())] == 2
    assert value[("thunder:backend_capacity_tokens", (("backend", "0"), ("url", fake.url)))] == 1024 * 16
    assert value[("thunder:backend_healthy", (("backend", "0"), ("url", fake.url)))] == 1
    assert value[("thunder:prompt_tokens_total", ())] == 3 * (len("hello " * 40) // 4)
    assert 0 < value[("thunder:kv_hit_rate", ())] < 1  # m1's second turn found its first cached


def test_histograms_are_cumulative_and_end_in_inf() -> None:
    text, _ = scrape_and_requests()
    _, _, value, samples = by_name(text)
    for name in ("thunder:proxy_overhead_seconds", "thunder:queue_wait_seconds"):
        buckets = [s for s in samples if s.name == name + "_bucket"]
        assert buckets[-1].labels["le"] == "+Inf"
        counts = [s.value for s in buckets]
        assert counts == sorted(counts) and counts[-1] == value[(name + "_count", ())] == 3


def test_a_503_says_when_to_retry() -> None:
    async def scenario() -> tuple[int, str | None, dict]:
        fake = FakeBackend(cache_info=False)  # no KV capacity: the backend is unhealthy
        await fake.start()
        try:
            async with running_proxy([fake.url]) as server:
                async with aiohttp.ClientSession(proxy_url(server)) as client:
                    async with client.post("/v1/chat/completions", json=CHAT) as response:
                        return response.status, response.headers.get("Retry-After"), await response.json()
        finally:
            await fake.stop()
    status, retry_after, body = asyncio.run(scenario())
    assert status == 503 and retry_after == "1" and body["error"]["type"] == "no_backend"
