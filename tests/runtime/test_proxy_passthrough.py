"""The proxy passes OpenAI traffic through unchanged, names programs, releases
them, rejects malformed requests with JSON 4xx, and reports itself."""

from __future__ import annotations

import asyncio
import csv
import io
import json

import aiohttp
from fake_backend import FakeBackend, proxy_url, running_proxy

from thunder.runtime.engines.prometheus import parse_text

CHAT = {"model": "fake", "messages": [{"role": "user", "content": "hello " * 40}], "max_tokens": 5}


def run(coro):
    return asyncio.run(coro)


async def _with_proxy(test, policy="vllm", backend_options=None, **config):
    fake = FakeBackend(**(backend_options or {}))
    await fake.start()
    try:
        async with running_proxy([fake.url], policy=policy, **config) as server:
            async with aiohttp.ClientSession(proxy_url(server)) as client:
                return await test(fake, server, client)
    finally:
        await fake.stop()


def test_non_streaming_chat_passes_through_and_records_usage():
    async def test(fake, server, client):
        async with client.post("/v1/chat/completions", json={**CHAT, "program_id": "p1"}) as response:
            assert response.status == 200
            body = await response.json()
        assert body["choices"][0]["message"]["content"] == "xxxxx"
        assert body["usage"]["completion_tokens"] == 5
        assert "program_id" not in fake.bodies[-1]  # stripped before forwarding
        view = server.cluster.views["p1"]
        assert view.phase.value == "acting" and view.steps_done == 1
        assert view.context_tokens == body["usage"]["prompt_tokens"] + 5
        row = server.records.steps[-1]
        assert row["program_id"] == "p1" and row["prompt_tokens"] == body["usage"]["prompt_tokens"]
        # the same prompt again is served from the (fake) prefix cache
        async with client.post("/v1/chat/completions", json={**CHAT, "program_id": "p1"}) as response:
            second = await response.json()
        assert second["usage"]["prompt_tokens_details"]["cached_tokens"] > 0
        assert server.records.steps[-1]["cached_tokens"] == second["usage"]["prompt_tokens_details"]["cached_tokens"]
        assert server.records.steps[-2]["tool_s"] is not None  # acting time between the two requests
    run(_with_proxy(test))


def test_streaming_chat_passes_chunks_and_asks_for_usage():
    async def test(fake, server, client):
        async with client.post("/v1/chat/completions", json={**CHAT, "stream": True},
                               headers={"X-Program-Id": "s1"}) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/event-stream")
            events = [line async for line in response.content if line.startswith(b"data: ")]
        assert events[-1] == b"data: [DONE]\n"
        contents = [json.loads(e[6:]) for e in events[:-1]]
        assert [c["choices"][0]["delta"]["content"] for c in contents[:5]] == ["t0", "t1", "t2", "t3", "t4"]
        assert contents[-1]["usage"]["completion_tokens"] == 5
        assert fake.bodies[-1]["stream_options"] == {"include_usage": True}
        row = server.records.steps[-1]
        assert row["program_id"] == "s1" and row["output_tokens"] == 5 and row["first_token_s"] is not None
    run(_with_proxy(test))


def test_completions_endpoint_and_models_pass_through():
    async def test(fake, server, client):
        async with client.post("/v1/completions", json={"model": "fake", "prompt": "abc " * 20,
                                                        "max_tokens": 3}) as response:
            body = await response.json()
        assert body["choices"][0]["text"] == "xxx"
        assert server.cluster.views == {}  # no program id: a one-turn program, gone after its request
        assert server.records.programs[-1]["steps"] == 1
        async with client.get("/v1/models") as response:
            assert (await response.json())["data"][0]["id"] == "fake-model"
    run(_with_proxy(test))


def test_program_id_in_body_and_header_name_the_same_program():
    async def test(fake, server, client):
        await (await client.post("/v1/chat/completions", json={**CHAT, "program_id": "same"})).read()
        await (await client.post("/v1/chat/completions", json=CHAT, headers={"X-Program-Id": "same"})).read()
        assert list(server.cluster.views) == ["same"]
        assert server.cluster.views["same"].steps_done == 2
        async with client.post("/v1/chat/completions", json={**CHAT, "program_id": "a"},
                               headers={"X-Program-Id": "b"}) as response:
            assert response.status == 400
            assert "differs" in (await response.json())["error"]["message"]
    run(_with_proxy(test))


def test_release_by_path_and_by_body():
    async def test(fake, server, client):
        for pid in ("r1", "r2"):
            await (await client.post("/v1/chat/completions", json={**CHAT, "program_id": pid})).read()
        async with client.get("/programs/r1") as response:
            assert (await response.json())["phase"] == "acting"
        async with client.post("/programs/r1/release") as response:
            assert response.status == 200 and (await response.json()) == {"released": "r1"}
        async with client.post("/programs/release", json={"program_id": "r2"}) as response:
            assert response.status == 200
        assert server.cluster.views == {}
        async with client.post("/programs/release", json={"program_id": "r2"}) as response:
            assert response.status == 404
        async with client.get("/programs/r1") as response:
            assert response.status == 404
        assert {row["program_id"] for row in server.records.programs} == {"r1", "r2"}
    run(_with_proxy(test))


def test_release_with_the_last_request():
    async def test(fake, server, client):
        body = {**CHAT, "program_id": "last", "program_release": True}
        await (await client.post("/v1/chat/completions", json=body)).read()
        assert "program_release" not in fake.bodies[-1]
        assert server.cluster.views == {}
    run(_with_proxy(test))


def test_malformed_requests_get_json_4xx_and_register_nothing():
    async def test(fake, server, client):
        cases = [
            (b"{not json", 400, "not valid JSON"),
            (b"[1, 2]", 400, "JSON object"),
            (json.dumps({**CHAT, "program_id": ["x"]}).encode(), 400, "program_id"),
            (json.dumps({**CHAT, "stream": "yes"}).encode(), 400, "stream"),
            (json.dumps({**CHAT, "stream": True, "stream_options": 3}).encode(), 400, "stream_options"),
            (b"{" + b" " * 3000 + b"}", 413, "exceeds"),
        ]
        for raw, status, words in cases:
            async with client.post("/v1/chat/completions", data=raw,
                                   headers={"Content-Type": "application/json"}) as response:
                assert response.status == status, raw[:40]
                error = (await response.json())["error"]
                assert words in error["message"]
        async with client.post("/programs/release", data=b"nope") as response:
            assert response.status == 400
        assert server.cluster.views == {} and fake.bodies == []
    run(_with_proxy(test, max_body_bytes=2048))


def test_metrics_health_programs_and_export():
    async def test(fake, server, client):
        await (await client.post("/v1/chat/completions", json={**CHAT, "program_id": "m1"})).read()
        async with client.get("/metrics") as response:
            assert response.status == 200
            samples = parse_text(await response.text())
        names = {s.name for s in samples}
        for name in ("thunder:programs", "thunder:pauses_total", "thunder:restores_total", "thunder:migrations_total",
                     "thunder:queue_length", "thunder:queue_wait_seconds_bucket", "thunder:backend_capacity_tokens",
                     "thunder:backend_program_tokens", "thunder:kv_hit_rate", "thunder:proxy_overhead_seconds_count"):
            assert name in names, name
        value = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in samples}
        assert value[("thunder:programs", (("phase", "acting"), ("status", "active")))] == 1
        assert value[("thunder:backend_capacity_tokens", (("backend", "0"), ("url", fake.url)))] == 1024 * 16
        assert value[("thunder:proxy_overhead_seconds_count", ())] == 1
        async with client.get("/health") as response:
            assert response.status == 200 and (await response.json())["status"] == "ok"
        async with client.get("/programs") as response:
            listing = await response.json()
        assert [p["program_id"] for p in listing["programs"]] == ["m1"]
        async with client.get("/programs/export.csv") as response:
            rows = list(csv.DictReader(io.StringIO(await response.text())))
        assert list(rows[0]) == ["program_id", "step", "backend", "ready_s", "dispatched_s", "engine_arrival_s",
                                 "admitted_s", "first_token_s", "done_s", "prompt_tokens", "cached_tokens",
                                 "recompute_tokens", "output_tokens", "preemptions", "tool", "tool_s"]
        assert rows[0]["program_id"] == "m1"
        async with client.get("/programs/export.csv?table=nope") as response:
            assert response.status == 400
    run(_with_proxy(test))
