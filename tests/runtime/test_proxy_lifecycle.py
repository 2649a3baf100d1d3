"""Program lifecycle details of the live proxy: idle reclaim, concurrent requests
of one program, Continuum's pins (recorded, not enforced), backends whose
/metrics does not give a KV capacity."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
from fake_backend import FakeBackend, proxy_url, running_proxy

from thunder.core.program import Phase
from thunder.runtime.engines.prometheus import parse_text, total

CHAT = {"model": "fake", "messages": [{"role": "user", "content": "tell me " * 30}], "max_tokens": 3}


def run(coro):
    return asyncio.run(coro)


async def post(client, pid):
    async with client.post("/v1/chat/completions", json={**CHAT, "program_id": pid}) as response:
        return response.status, await response.json()


async def with_fake(test, policy="vllm", backend_options=None, **config):
    fake = FakeBackend(**(backend_options or {}))
    await fake.start()
    try:
        async with running_proxy([fake.url], policy=policy, **config) as server:
            async with aiohttp.ClientSession(proxy_url(server)) as client:
                return await test(fake, server, client)
    finally:
        await fake.stop()


def test_a_program_idle_past_the_timeout_is_reclaimed_and_logged(caplog):
    async def test(fake, server, client):
        await post(client, "idle")
        await post(client, "busy")
        for _ in range(6):  # "busy" keeps sending; "idle" never comes back nor releases
            await asyncio.sleep(0.1)
            await post(client, "busy")
        assert list(server.cluster.views) == ["busy"]
        assert ("reclaim", "idle") in [(d[1], d[2]) for d in server.records.decisions]
        assert server.records.programs[-1]["program_id"] == "idle"
    with caplog.at_level(logging.WARNING, logger="thunder.runtime.cluster"):
        run(with_fake(test, idle_timeout_s=0.3, control_interval_s=0.05))
    assert any("program idle idle for" in r.getMessage() and "reclaimed" in r.getMessage() for r in caplog.records)


def test_concurrent_requests_of_one_program_are_all_served():
    async def test(fake, server, client):
        results = await asyncio.gather(*(post(client, "fan") for _ in range(4)))
        assert [status for status, _ in results] == [200] * 4
        program = server.cluster.programs["fan"]
        view = server.cluster.views["fan"]
        assert program.in_flight == 0 and view.phase is Phase.ACTING and view.steps_done == 4
    run(with_fake(test, backend_options={"delay_s": 0.05}))


def test_continuum_pins_are_recorded_but_not_enforced():
    async def test(fake, server, client):
        await post(client, "c1")
        pins = [d for d in server.records.decisions if d[1] == "pin"]
        assert len(pins) == 1 and "not enforceable" in pins[0][4]
        async with client.get("/programs/c1") as response:
            shown = await response.json()
        assert shown["pinned_until_s"] is not None and shown["pin_enforced"] is False
        async with client.get("/metrics") as response:
            assert total(parse_text(await response.text()), "thunder:pins_total") == 1
    run(with_fake(test, policy="continuum"))


def test_a_backend_without_kv_capacity_is_unhealthy_unless_configured():
    async def unknown(fake, server, client):
        state = server.cluster.backends[0]
        assert not state.healthy and "capacity unknown" in state.reason
        status, body = await post(client, "x")
        assert status == 503 and "capacity unknown" in body["error"]["message"]

    async def configured(fake, server, client):
        assert server.cluster.backends[0].capacity_tokens == 5000
        assert (await post(client, "x"))[0] == 200

    run(with_fake(unknown, backend_options={"cache_info": False}))
    run(with_fake(configured, backend_options={"cache_info": False}, capacity_tokens=5000))
