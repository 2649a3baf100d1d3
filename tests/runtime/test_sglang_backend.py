"""The SGLang adapter against recorded (hand-constructed, see PROVENANCE.md) SGLang answers.

No SGLang server runs here: pure parsing tests on the fixture files, and one
scrape through the real HTTP client against a tiny server that replays them.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from aiohttp import web

from thunder.runtime.config import ServeConfig
from thunder.runtime.engines.prometheus import parse_text
from thunder.runtime.engines.sglang import (BACKEND_CLIENTS, SglangBackendClient, capacity_from_server_info,
                                            page_size_from_server_info, stats_from)
from thunder.runtime.payload import find_usage

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "sglang"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def server_info() -> dict:
    return json.loads(fixture("get_server_info.json"))


def test_provenance_is_written_beside_the_fixtures():
    provenance = fixture("PROVENANCE.md")
    assert "constructed, not captured" in provenance and "0.5" in provenance
    assert server_info()["version"] == "0.5.2"


def test_capacity_from_server_info_prefers_per_rank_pools_and_falls_back_to_top_level():
    info = server_info()
    assert capacity_from_server_info(info) == 608_000
    assert page_size_from_server_info(info) == 1
    two_ranks = {"internal_states": [{"max_total_num_tokens": 1000}, {"memory_usage": {"token_capacity": 500}}]}
    assert capacity_from_server_info(two_ranks) == 1500
    flat = {k: v for k, v in info.items() if k != "internal_states"}
    assert capacity_from_server_info(flat) == 608_000
    assert capacity_from_server_info({"max_total_num_tokens": None, "internal_states": [{}]}) is None
    assert capacity_from_server_info({"max_total_num_tokens": True}) is None


def test_metrics_give_load_usage_hit_rate_and_counters():
    stats = stats_from(parse_text(fixture("metrics.txt")))
    assert stats.engine.running_requests == 37
    assert stats.engine.waiting_requests == 5
    assert stats.token_usage == 0.68 and stats.engine.kv_usage == 0.68
    assert stats.used_tokens == 413_440
    assert stats.cache_hit_rate == 0.912
    assert stats.engine.prefix_queries_tokens == 12_450_816
    assert stats.engine.prefix_hits_tokens == 11_010_048  # device + host sources
    assert stats.engine.preemptions == 3
    assert stats.max_total_num_tokens is None  # this release series states it in /get_server_info only


def test_data_parallel_ranks_are_summed_and_shares_averaged():
    stats = stats_from(parse_text(fixture("metrics_dp2.txt")))
    assert stats.engine.running_requests == 21 and stats.engine.waiting_requests == 2
    assert abs(stats.token_usage - 0.4) < 1e-9
    assert abs(stats.cache_hit_rate - 0.7) < 1e-9
    assert stats.max_total_num_tokens == 139_008
    assert stats.engine.preemptions == 0  # no counter in the scrape: 0, not an error


def test_chat_completion_usage_is_read_like_vllm_usage():
    usage = find_usage(fixture("chat_completion.json").encode())
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens) == (19_608, 90, 19_264)


def test_the_adapter_is_registered_beside_vllm():
    assert BACKEND_CLIENTS["sglang"] is SglangBackendClient


async def _replaying_server(routes: dict[str, tuple[int, str]]) -> web.AppRunner:
    async def answer(request: web.Request) -> web.Response:
        status, body = routes[request.path]
        return web.Response(status=status, text=body)

    app = web.Application()
    for path in routes:
        app.router.add_get(path, answer)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner


def _url(runner: web.AppRunner) -> str:
    host, port = runner.addresses[0][:2]
    return f"http://{host}:{port}"


async def _scrape(routes: dict[str, tuple[int, str]], **config) -> tuple[SglangBackendClient, list]:
    runner = await _replaying_server(routes)
    client = SglangBackendClient(0, _url(runner), ServeConfig(backends=(_url(runner),), **config))
    await client.start()
    try:
        states = [await client.scrape() for _ in range(2)]
    finally:
        await client.close()
        await runner.cleanup()
    return client, states


def test_scrape_reads_server_info_once_and_metrics_every_time():
    routes = {"/get_server_info": (200, fixture("get_server_info.json")), "/metrics": (200, fixture("metrics.txt"))}
    client, states = asyncio.run(_scrape(routes))
    assert all(s.healthy and s.capacity_tokens == 608_000 and s.block_size == 1 for s in states)
    assert states[-1].waiting_requests == 5
    assert client.stats.running_requests == 37 and client.sglang.cache_hit_rate == 0.912


def test_capacity_falls_back_to_the_metrics_gauge_then_to_the_configuration():
    routes = {"/get_server_info": (200, "{}"), "/metrics": (200, fixture("metrics_dp2.txt"))}
    assert asyncio.run(_scrape(routes))[1][-1].capacity_tokens == 139_008
    routes = {"/get_server_info": (200, "{}"), "/metrics": (200, fixture("metrics.txt"))}
    unknown = asyncio.run(_scrape(routes))[1][-1]
    assert not unknown.healthy and "capacity unknown" in unknown.reason
    configured = asyncio.run(_scrape(routes, capacity_tokens=4096))[1][-1]
    assert configured.healthy and configured.capacity_tokens == 4096


def test_failed_scrapes_mark_the_backend_down():
    routes = {"/get_server_info": (503, "starting"), "/metrics": (200, fixture("metrics.txt"))}
    _, states = asyncio.run(_scrape(routes, failures_to_down=2))
    assert not states[-1].healthy and "HTTP 503" in states[-1].reason


def test_serve_config_picks_the_sglang_client():
    from thunder.policies.registry import make_policy
    from thunder.runtime.config import ServeConfig
    from thunder.runtime.server import ProxyServer
    from thunder.runtime.engines.sglang import SglangBackendClient

    server = ProxyServer(ServeConfig(backends=("http://127.0.0.1:9",), backend_kind="sglang"), make_policy("vllm"))
    assert all(isinstance(c, SglangBackendClient) for c in server.clients)
    import pytest
    with pytest.raises(ValueError, match="unknown backend kind"):
        ServeConfig(backends=("http://127.0.0.1:9",), backend_kind="tgi")
