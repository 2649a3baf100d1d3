"""RL weight sync: POST /admin/pause holds every dispatch while a trainer updates the
engines' weights, POST /admin/resume sends what waited. The hold is the scheduler's:
held requests stay in LiveCluster's books, policy decisions made meanwhile stand,
and the counters say how long and how much was held."""

from __future__ import annotations

import asyncio

import aiohttp
from fake_backend import FakeBackend, proxy_url, running_proxy
from hypothesis import given, settings
from hypothesis import strategies as st
from test_live_cluster_properties import PROGRAMS, check

from thunder.core.program import Status
from thunder.policies.registry import make_policy
from thunder.runtime.cluster import LiveCluster
from thunder.runtime.engines.prometheus import parse_text, total
from thunder.runtime.state import BackendState, TicketState, Usage

CHAT = {"model": "fake", "messages": [{"role": "user", "content": "weights " * 40}], "max_tokens": 3}


async def post(client, pid):
    async with client.post("/v1/chat/completions", json={**CHAT, "program_id": pid}) as response:
        await response.read()
        return response.status


async def with_fake(test, policy="thunder", backend_options=None, **config):
    fake = FakeBackend(**(backend_options or {}))
    await fake.start()
    try:
        async with running_proxy([fake.url], policy=policy, **config) as server:
            async with aiohttp.ClientSession(proxy_url(server)) as client:
                return await test(fake, server, client)
    finally:
        await fake.stop()


async def metric(client, name):
    """A value from /metrics, spelt thunder_x or thunder:x."""
    async with client.get("/metrics") as response:
        samples = parse_text(await response.text())
    found = total(samples, name)
    return found if found is not None else total(samples, name.replace("thunder_", "thunder:", 1))


def test_pause_holds_new_requests_and_resume_sends_them():
    async def test(fake, server, client):
        assert await post(client, "a") == 200  # bound to backend 0, acting
        async with client.post("/admin/pause", json={"reason": "sync step 7"}) as response:
            state = await response.json()
        assert response.status == 200 and state["paused"] and state["started"] and state["drained"]
        waiting = [asyncio.create_task(post(client, pid)) for pid in ("a", "b", "c")]
        await asyncio.sleep(0.3)
        assert not any(t.done() for t in waiting) and len(fake.bodies) == 1  # nothing reached the engine
        assert await metric(client, "thunder_dispatch_paused") == 1
        assert await metric(client, "thunder_sync_held_requests") == 3
        assert await metric(client, "thunder_held_requests") == 3
        async with client.get("/admin/pause") as response:
            assert (await response.json())["held_requests"] == 3
        assert server.cluster.views["a"].status is Status.ACTIVE  # still bound: its KV is still there
        async with client.post("/admin/resume") as response:
            resumed = await response.json()
        assert resumed["resumed"] and not resumed["paused"] and resumed["released_requests"] == 3
        assert resumed["held_s"] >= 0.3
        assert await asyncio.gather(*waiting) == [200] * 3
        assert await metric(client, "thunder_sync_pauses_total") == 1
        assert await metric(client, "thunder_sync_paused_seconds_total") >= 0.3
        assert await metric(client, "thunder_dispatch_paused") == 0
        actions = [d[1] for d in server.records.decisions]
        assert actions.count("sync_pause") == 1 and actions.count("sync_resume") == 1
    asyncio.run(with_fake(test))


def test_pause_can_wait_for_requests_in_flight_to_drain():
    async def test(fake, server, client):
        running = asyncio.create_task(post(client, "slow"))
        await asyncio.sleep(0.05)
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with client.post("/admin/pause", json={"wait_s": 5}) as response:
            state = await response.json()
        assert state["drained"] and state["in_flight"] == 0 and running.done()
        assert loop.time() - started > 0.2  # it waited for the request, which was let finish
        assert await running == 200
        async with client.post("/admin/pause", json={"wait_s": 0}) as response:
            assert (await response.json())["started"] is False  # already paused: idempotent
        async with client.post("/admin/resume") as response:
            assert (await response.json())["resumed"]
        async with client.post("/admin/resume") as response:
            assert (await response.json())["resumed"] is False
    asyncio.run(with_fake(test, backend_options={"delay_s": 0.4}))


def test_a_pause_that_outlives_its_trainer_ends_by_itself():
    async def test(fake, server, client):
        async with client.post("/admin/pause") as response:
            assert response.status == 200
        assert await asyncio.wait_for(post(client, "p"), 5) == 200  # resumed at max_sync_pause_s
        assert server.cluster.dispatch_hold is None
        assert [d[4] for d in server.records.decisions if d[1] == "sync_resume"][0].startswith("expired")
    asyncio.run(with_fake(test, max_sync_pause_s=0.3, control_interval_s=0.05))


def test_requests_held_for_a_sync_are_still_bounded_by_max_hold_s():
    async def test(fake, server, client):
        async with client.post("/admin/pause") as response:
            assert response.status == 200
        async with client.post("/v1/chat/completions", json={**CHAT, "program_id": "p"}) as response:
            body = await response.json()
        assert response.status == 503 and body["error"]["type"] == "hold_timeout"
        assert "weight sync" in body["error"]["message"]
        assert not server.cluster.programs  # it never completed a step: nothing of it remains
    asyncio.run(with_fake(test, max_hold_s=0.3))


def test_bad_pause_bodies_get_400():
    async def test(fake, server, client):
        for body in (b"[1]", b"{", b'{"wait_s": -1}', b'{"wait_s": "soon"}', b'{"reason": ""}',
                     b'{"wait_s": true}'):
            async with client.post("/admin/pause", data=body) as response:
                assert response.status == 400, body
        assert server.cluster.dispatch_hold is None
    asyncio.run(with_fake(test))


# -- the books stay consistent with holds in any order ---------------------------------------

ops = st.lists(st.one_of(
    st.tuples(st.just("ready"), st.sampled_from(PROGRAMS), st.integers(50, 900)),
    st.tuples(st.just("done"), st.integers(0, 30), st.integers(50, 900)),
    st.tuples(st.just("fail"), st.integers(0, 30), st.just(0)),
    st.tuples(st.just("release"), st.sampled_from(PROGRAMS[:-1]), st.just(0)),
    st.tuples(st.just("tick"), st.just(None), st.just(0)),
    st.tuples(st.just("health"), st.integers(0, 1), st.booleans()),
    st.tuples(st.just("hold"), st.just(None), st.just(0)),
    st.tuples(st.just("resume"), st.just(None), st.just(0)),
), max_size=60)


@settings(max_examples=150, deadline=None)
@given(policy=st.sampled_from(["thunder", "vllm"]), steps=ops)
def test_books_stay_consistent_through_weight_syncs(policy, steps):
    clock = [0.0]
    backends = [BackendState("b0", True, 1200, 16), BackendState("b1", True, 800, 16)]
    live = LiveCluster(make_policy(policy), backends, clock=lambda: clock[0])
    tickets: list = []
    for kind, who, amount in steps:
        clock[0] += 0.25
        if kind == "ready" and live.any_healthy():
            tickets.append(live.request_ready(who, amount))
        elif kind in ("done", "fail") and tickets:
            ticket = tickets[who % len(tickets)]
            if kind == "done":
                live.request_done(ticket, Usage(amount, 10, amount // 2))
            else:
                live.request_failed(ticket, "aborted")
        elif kind == "release":
            live.release(who)
        elif kind == "tick":
            live.tick()
        elif kind == "health":
            live.update_backend(who, BackendState(f"b{who}", amount, 1200 if who == 0 else 800, 16))
        elif kind == "hold":
            live.hold_dispatches("weight sync")
        elif kind == "resume":
            live.resume_dispatches()
        check(live, tickets)
        if live.dispatch_hold is not None:  # nothing reaches an engine while held
            assert not any(t.state is TicketState.DISPATCHED and t.dispatched_s is not None
                           and t.dispatched_s > live.dispatch_hold.since_s for t in tickets)
    live.resume_dispatches()
    for program in live.programs.values():  # after a resume, a bound program has nothing waiting
        view = live.views[program.program_id]  # (unless the policy held it: then it is marked for pause)
        if view.status is Status.ACTIVE and not view.marked_for_pause:
            assert not program.held
