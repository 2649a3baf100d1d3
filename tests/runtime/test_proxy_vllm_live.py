"""The proxy in front of a real vLLM (CPU build, tiny model): capacity from
/metrics, usage and cached tokens recorded, streams carry usage, the thunder
policy holds a program that does not fit. Skipped without the vLLM venv."""

from __future__ import annotations

import asyncio
import json
import random
import uuid

import aiohttp
import pytest
from fake_backend import proxy_url, running_proxy
from vllm_fixture import VllmBackend, make_vllm_backend_fixture

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

vllm_backend = make_vllm_backend_fixture()  # the shared default server: 16k tokens of KV


def words(n: int, seed: int) -> str:
    """About 3.8 tokens per word with the tiny tokenizer; a fresh uuid keeps caches apart."""
    rng = random.Random(seed)
    return uuid.uuid4().hex + " " + " ".join(f"w{rng.randrange(10_000)}" for _ in range(n))


def chat_body(backend: VllmBackend, messages: list[dict], **extra) -> dict:
    return {"model": backend.model, "messages": messages, "max_tokens": 8, "ignore_eos": True, **extra}


async def post(client: aiohttp.ClientSession, body: dict) -> tuple[int, dict]:
    async with client.post("/v1/chat/completions", json=body) as response:
        return response.status, await response.json()


def test_capacity_usage_and_cached_tokens_through_the_proxy(vllm_backend: VllmBackend) -> None:
    async def scenario():
        async with running_proxy([vllm_backend.url], policy="thunder-paper") as server:
            state = server.cluster.backends[0]
            assert state.healthy and state.block_size == vllm_backend.block_size
            assert state.capacity_tokens == vllm_backend.kv_capacity_tokens
            async with aiohttp.ClientSession(proxy_url(server)) as client:
                messages = [{"role": "user", "content": words(200, seed=1)}]
                status, first = await post(client, chat_body(vllm_backend, messages, program_id="live-1"))
                assert status == 200, first
                usage = first["usage"]
                view = server.cluster.views["live-1"]
                assert view.context_tokens == usage["prompt_tokens"] + usage["completion_tokens"]
                messages += [first["choices"][0]["message"], {"role": "user", "content": words(20, seed=2)}]
                status, second = await post(client, chat_body(vllm_backend, messages, program_id="live-1"))
                assert status == 200, second
                row = server.records.steps[-1]
                assert row["cached_tokens"] == second["usage"]["prompt_tokens_details"]["cached_tokens"] > 0
                assert row["recompute_tokens"] == 0
                async with client.post("/programs/live-1/release") as response:
                    assert response.status == 200
    asyncio.run(scenario())


def test_streams_carry_usage_through_the_proxy(vllm_backend: VllmBackend) -> None:
    async def scenario():
        async with running_proxy([vllm_backend.url]) as server:
            async with aiohttp.ClientSession(proxy_url(server)) as client:
                body = chat_body(vllm_backend, [{"role": "user", "content": words(50, seed=3)}], stream=True)
                async with client.post("/v1/chat/completions", json=body) as response:
                    assert response.status == 200
                    events = [line[6:] async for line in response.content if line.startswith(b"data: ")]
                assert events[-1].strip() == b"[DONE]"
                assert json.loads(events[-2])["usage"]["completion_tokens"] == 8
                row = server.records.steps[-1]
                assert row["output_tokens"] == 8 and row["first_token_s"] <= row["done_s"]
    asyncio.run(scenario())


def test_thunder_holds_a_program_that_does_not_fit(vllm_backend: VllmBackend) -> None:
    # lambda_max = 0.15 of 16,384 tokens = 2,457: room for one ~2,300-token program; the
    # second's estimate before any usage (body bytes / 4, about 900 tokens) does not fit beside it.
    options = {"decay_base": 1.0, "lambda_max": 0.15, "lambda_min": 0.15}

    async def scenario():
        async with running_proxy([vllm_backend.url], policy="thunder-paper", options=options) as server:
            async with aiohttp.ClientSession(proxy_url(server)) as client:
                first = chat_body(vllm_backend, [{"role": "user", "content": words(600, seed=4)}],
                                  program_id="big-a")
                assert (await post(client, first))[0] == 200
                second = chat_body(vllm_backend, [{"role": "user", "content": words(600, seed=5)}],
                                   program_id="big-b")
                held = asyncio.create_task(post(client, second))
                await asyncio.sleep(0.5)
                assert not held.done() and server.cluster.views["big-b"].waiting
                async with client.post("/programs/release", json={"program_id": "big-a"}) as response:
                    assert response.status == 200
                status, body = await asyncio.wait_for(held, 60)
                assert status == 200, body
                assert [d[1:3] for d in server.records.decisions] == [("restore", "big-a"), ("restore", "big-b")]
    asyncio.run(scenario())
