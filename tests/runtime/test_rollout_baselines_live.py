"""The rollout baselines that only route (gateway, autellix) run in the live proxy too:
two in-process fake backends, the real proxy, programs that stay where their cache is."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from fake_backend import FakeBackend, proxy_url, running_proxy

CHAT = {"model": "fake", "messages": [{"role": "user", "content": "x" * 12_000}], "max_tokens": 4}


async def post(client: aiohttp.ClientSession, pid: str) -> int:
    async with client.post("/v1/chat/completions", json={**CHAT, "program_id": pid}) as response:
        await response.read()
        return response.status


@pytest.mark.parametrize("policy", ["gateway", "autellix"])
def test_a_program_keeps_its_backend_behind_the_live_proxy(policy):
    async def scenario():
        fakes = [FakeBackend(), FakeBackend()]
        for fake in fakes:
            await fake.start()
        try:
            async with running_proxy([f.url for f in fakes], policy=policy) as server:
                async with aiohttp.ClientSession(proxy_url(server)) as client:
                    for _ in range(3):
                        for pid in ("a", "b"):
                            assert await post(client, pid) == 200
                by_program: dict[str, set[int]] = {}
                for row in server.records.steps:
                    by_program.setdefault(row["program_id"], set()).add(row["backend"])
                assert all(len(backends) == 1 for backends in by_program.values()), by_program
                assert len(server.records.steps) == 6
        finally:
            for fake in fakes:
                await fake.stop()

    asyncio.run(scenario())
