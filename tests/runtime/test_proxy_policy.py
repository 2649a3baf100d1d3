"""The proxy applies the policy live: holds, restores, hold timeouts, client
disconnects, and backends that go away."""

from __future__ import annotations

import asyncio

import aiohttp
from fake_backend import FakeBackend, proxy_url, running_proxy

from thunder.core.program import Phase, Status

# 2,400 characters of content: the fake counts 600 prompt tokens, the proxy
# estimates about 625 before the first response. Two do not fit in 1,024.
BIG = {"model": "fake", "messages": [{"role": "user", "content": "y" * 2400}], "max_tokens": 5}
ONE_PROGRAM = {"num_gpu_blocks": 64, "block_size": 16}  # 1,024 tokens of KV
NO_DECAY = {"decay_base": 1.0}


def run(coro):
    return asyncio.run(coro)


async def eventually(condition, timeout_s=3.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def post(client, pid, body=BIG, **kwargs):
    async with client.post("/v1/chat/completions", json={**body, "program_id": pid}, **kwargs) as response:
        return response.status, await response.json()


def no_state_left(server):
    cluster = server.cluster
    return (server.admission.waiting == 0 and all(r == 0 for r in cluster._running_requests)
            and all(p.in_flight == 0 and not p.held for p in cluster.programs.values()))


def test_thunder_holds_the_second_program_until_the_first_releases():
    async def scenario():
        fake = FakeBackend(**ONE_PROGRAM)
        await fake.start()
        async with running_proxy([fake.url], policy="thunder-paper", options=NO_DECAY) as server:
            async with aiohttp.ClientSession(proxy_url(server)) as client:
                assert (await post(client, "a"))[0] == 200
                second = asyncio.create_task(post(client, "b"))
                await eventually(lambda: "b" in server.cluster.views)
                await asyncio.sleep(0.2)
                assert not second.done()
                view = server.cluster.views["b"]
                assert view.status is Status.PAUSED and view.waiting
                assert len(fake.bodies) == 1  # b never reached the backend
                async with client.post("/programs/a/release") as response:
                    assert response.status == 200
                status, body = await asyncio.wait_for(second, 3.0)
                assert status == 200 and body["usage"]["completion_tokens"] == 5
                actions = [(d[1], d[2]) for d in server.records.decisions]
                assert actions == [("restore", "a"), ("restore", "b")]
                row = server.records.steps[-1]
                assert row["program_id"] == "b" and row["dispatched_s"] - row["ready_s"] >= 0.2
        await fake.stop()
    run(scenario())


def test_a_request_held_too_long_gets_503_json_and_leaves_nothing():
    async def scenario():
        fake = FakeBackend(**ONE_PROGRAM)
        await fake.start()
        async with running_proxy([fake.url], policy="thunder-paper", options=NO_DECAY, max_hold_s=0.3) as server:
            async with aiohttp.ClientSession(proxy_url(server)) as client:
                await post(client, "a")
                status, body = await post(client, "b")
                assert status == 503
                assert body["error"]["type"] == "hold_timeout" and "held 0.3 s" in body["error"]["message"]
                assert list(server.cluster.views) == ["a"]  # b never ran: dropped
                assert no_state_left(server)
                assert server.records.outcomes["hold_timeout"] == 1
        await fake.stop()
    run(scenario())


def test_client_disconnect_while_waiting_for_the_backend_cancels_upstream():
    async def scenario():
        fake = FakeBackend(delay_s=2.0)
        await fake.start()
        async with running_proxy([fake.url]) as server:
            async with aiohttp.ClientSession(proxy_url(server)) as client:
                try:
                    await post(client, "gone", timeout=aiohttp.ClientTimeout(total=0.3))
                except asyncio.TimeoutError:
                    pass
                await eventually(lambda: fake.cancelled == 1)
                await eventually(lambda: server.cluster.views == {})  # a first request: dropped
                assert no_state_left(server) and server.records.outcomes["aborted"] == 1
        await fake.stop()
    run(scenario())


def test_client_disconnect_mid_stream_returns_the_program_to_acting():
    async def scenario():
        fake = FakeBackend(chunk_delay_s=0.05)
        await fake.start()
        async with running_proxy([fake.url]) as server:
            async with aiohttp.ClientSession(proxy_url(server)) as client:
                await post(client, "s")  # one finished step: the program stays known
                body = {**BIG, "program_id": "s", "stream": True, "max_tokens": 100}
                async with client.post("/v1/chat/completions", json=body) as response:
                    await response.content.readline()
                    await response.content.readline()
                    response.close()
                await eventually(lambda: fake.cancelled == 1)
                await eventually(lambda: server.cluster.programs["s"].in_flight == 0)
                view = server.cluster.views["s"]
                assert view.phase is Phase.ACTING and view.steps_done == 1
                assert no_state_left(server)
        await fake.stop()
    run(scenario())


def test_client_disconnect_while_held_drops_the_waiting_request():
    async def scenario():
        fake = FakeBackend(**ONE_PROGRAM)
        await fake.start()
        async with running_proxy([fake.url], policy="thunder-paper", options=NO_DECAY) as server:
            async with aiohttp.ClientSession(proxy_url(server)) as client:
                await post(client, "a")
                try:
                    await post(client, "b", timeout=aiohttp.ClientTimeout(total=0.3))
                except asyncio.TimeoutError:
                    pass
                await eventually(lambda: "b" not in server.cluster.views)
                assert no_state_left(server) and list(server.cluster.views) == ["a"]
        await fake.stop()
    run(scenario())


def test_a_dead_backend_is_marked_unhealthy_and_its_program_moves():
    async def scenario():
        fakes = [FakeBackend(), FakeBackend()]
        for fake in fakes:
            await fake.start()
        async with running_proxy([f.url for f in fakes], policy="thunder-paper", options=NO_DECAY) as server:
            async with aiohttp.ClientSession(proxy_url(server)) as client:
                assert (await post(client, "p"))[0] == 200
                first = server.cluster.views["p"].backend
                await fakes[first].stop()
                await eventually(lambda: not server.cluster.backends[first].healthy)
                status, _ = await post(client, "p")
                assert status == 200
                assert server.records.steps[-1]["backend"] == 1 - first
                actions = [d[1] for d in server.records.decisions if d[2] == "p"]
                assert actions == ["restore", "pause", "migrate", "restore"]
                async with client.get("/health") as response:
                    assert (await response.json())["status"] == "degraded"
                await fakes[1 - first].stop()
                await eventually(lambda: not server.cluster.any_healthy())
                status, body = await post(client, "p")
                assert status == 503 and "no healthy backend" in body["error"]["message"]
                async with client.get("/health") as response:
                    assert response.status == 503
                assert no_state_left(server)
    run(scenario())


def test_a_refused_connection_reroutes_the_request_at_once():
    async def scenario():
        fakes = [FakeBackend(), FakeBackend()]
        for fake in fakes:
            await fake.start()
        # a poll interval far longer than the test: only the refused forward can notice
        async with running_proxy([f.url for f in fakes], policy="vllm", poll_interval_s=60.0) as server:
            async with aiohttp.ClientSession(proxy_url(server)) as client:
                await post(client, "q")
                first = server.cluster.views["q"].backend
                await fakes[first].stop()
                status, _ = await post(client, "q")
                assert status == 200
                assert not server.cluster.backends[first].healthy
                assert server.records.steps[-1]["backend"] == 1 - first
                assert no_state_left(server)
        await fakes[1 - first].stop()
    run(scenario())


def test_held_requests_fail_at_once_when_the_last_backend_dies():
    async def scenario():
        fake = FakeBackend(**ONE_PROGRAM)
        await fake.start()
        async with running_proxy([fake.url], policy="thunder-paper", options=NO_DECAY) as server:
            async with aiohttp.ClientSession(proxy_url(server)) as client:
                await post(client, "a")
                held = asyncio.create_task(post(client, "b"))
                await eventually(lambda: server.admission.waiting == 1)
                await fake.stop()
                status, body = await asyncio.wait_for(held, 3.0)
                assert status == 503 and body["error"]["type"] == "rejected"
                assert no_state_left(server) and "b" not in server.cluster.views
    run(scenario())


def test_releasing_a_program_while_its_request_is_held_answers_409():
    async def scenario():
        fake = FakeBackend(**ONE_PROGRAM)
        await fake.start()
        async with running_proxy([fake.url], policy="thunder-paper", options=NO_DECAY) as server:
            async with aiohttp.ClientSession(proxy_url(server)) as client:
                await post(client, "a")
                held = asyncio.create_task(post(client, "b"))
                await eventually(lambda: server.admission.waiting == 1)
                async with client.post("/programs/b/release") as response:
                    assert response.status == 200
                status, body = await asyncio.wait_for(held, 3.0)
                assert status == 409 and body["error"]["type"] == "program_released"
                assert no_state_left(server) and list(server.cluster.views) == ["a"]
        await fake.stop()
    run(scenario())


def test_a_backend_breaking_off_mid_stream_breaks_the_clients_stream_too():
    async def scenario():
        fake = FakeBackend(break_after=2)
        await fake.start()
        async with running_proxy([fake.url]) as server:
            async with aiohttp.ClientSession(proxy_url(server)) as client:
                await post(client, "b")  # non-streaming: unaffected
                body = {**BIG, "program_id": "b", "stream": True, "max_tokens": 10}
                async with client.post("/v1/chat/completions", json=body) as response:
                    assert response.status == 200
                    try:
                        await response.read()
                        broken = False
                    except aiohttp.ClientPayloadError:
                        broken = True
                assert broken  # never a short stream that looks complete
                await eventually(lambda: server.cluster.programs["b"].in_flight == 0)
                assert server.cluster.views["b"].phase is Phase.ACTING
                assert server.records.outcomes["upstream_error"] == 1 and no_state_left(server)
        await fake.stop()
    run(scenario())


def test_the_default_policy_holds_the_second_program_live_and_sees_groups_and_max_tokens():
    async def scenario():
        fake = FakeBackend(**ONE_PROGRAM)
        await fake.start()
        async with running_proxy([fake.url], policy="thunder") as server:
            async with aiohttp.ClientSession(proxy_url(server)) as client:
                first = await post(client, "a", headers={"X-Program-Group": "g"})
                assert first[0] == 200
                assert server.cluster.views["a"].group_id == "g"
                assert server.cluster.views["a"].last_output_tokens == 5
                second = asyncio.create_task(post(client, "b", body={**BIG, "group_id": "g"}))
                await eventually(lambda: "b" in server.cluster.views)
                await asyncio.sleep(0.2)
                assert not second.done() and server.cluster.views["b"].status is Status.PAUSED
                assert server.cluster.views["b"].max_output_tokens == 5
                assert "group_id" not in fake.bodies[-1]  # the proxy's field is not forwarded
                async with client.post("/programs/a/release") as response:
                    assert response.status == 200
                status, _ = await asyncio.wait_for(second, 3.0)
                assert status == 200
                async with client.post("/programs/b/release") as response:
                    assert response.status == 200
            assert no_state_left(server)
            assert [row["group_id"] for row in server.cluster.records.programs] == ["g", "g"]
        await fake.stop()

    run(scenario())
