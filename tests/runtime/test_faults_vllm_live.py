"""A real vLLM backend killed mid-run (SIGKILL of its process group) behind the
proxy with the thunder policy, then restarted on its port: every program finishes
on the survivor, no turn waits past max_hold_s, and the restarted server rejoins
(programs are placed on it again). Skipped without the vLLM venv."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import aiohttp
import pytest
from fake_backend import proxy_url, running_proxy
from test_proxy_vllm_live import words
from vllm_fixture import VllmBackend, make_vllm_backend_fixture

from thunder.runtime.engines import launcher as vllm_server
from thunder.runtime.engines.launcher import VllmServer, VllmServerConfig

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

vllm_backend = make_vllm_backend_fixture()  # the survivor: the shared default server (16k tokens of KV)
MAX_HOLD_S = 120.0
STEPS = 6


def victim_config(survivor: VllmBackend) -> VllmServerConfig:
    return VllmServerConfig(model_dir=survivor.model_dir, kv_cache_bytes=survivor.kv_cache_bytes,
                            max_model_len=survivor.max_model_len, served_model_name=survivor.model)


async def agent(client, backend: VllmBackend, pid: str, log: list) -> None:
    """Six turns on a ~2,700-token context (eight such programs do not fit one server's
    16k tokens); a failed turn is sent again, as agent clients do."""
    messages = [{"role": "user", "content": words(700, seed=100 + int(pid[1:]))}]
    for step in range(STEPS):
        body = {"model": backend.model, "messages": messages, "max_tokens": 8, "ignore_eos": True,
                "program_id": pid, "stream": step % 2 == 1}
        for attempt in range(5):
            started = time.monotonic()
            try:
                async with client.post("/v1/chat/completions", json=body) as response:
                    data = await response.read()
                    status = response.status
            except aiohttp.ClientError:
                status, data = "dropped", b""
            log.append((pid, step, attempt, status, time.monotonic() - started))
            if status == 200:
                break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError(f"{pid} step {step} failed five times: {log[-5:]}")
        messages += [{"role": "assistant", "content": "ok"}, {"role": "user", "content": words(30, seed=step)}]
    async with client.post(f"/programs/{pid}/release") as response:
        assert response.status == 200


def test_a_killed_vllm_backend_hands_its_programs_over_and_rejoins(vllm_backend, monkeypatch):
    victim = VllmServer(victim_config(vllm_backend)).start()
    port = victim.port
    log: list = []

    async def wait_healthy(server, index: int) -> None:
        for _ in range(200):
            if server.cluster.backends[index].healthy:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"backend {index} did not come back: {server.cluster.backends[index].reason}")

    async def scenario():
        nonlocal victim
        async with running_proxy([vllm_backend.url, victim.url], policy="thunder", max_hold_s=MAX_HOLD_S,
                                 poll_interval_s=0.5, failures_to_down=1, control_interval_s=0.2) as server:
            async with aiohttp.ClientSession(proxy_url(server)) as client:
                agents = [asyncio.create_task(agent(client, vllm_backend, f"a{i}", log)) for i in range(8)]
                for _ in range(600):  # until the victim has served a turn and runs another
                    if (any(r["backend"] == 1 for r in server.records.steps)
                            and server.cluster.snapshot().backends[1].running_requests):
                        break
                    await asyncio.sleep(0.02)
                assert server.cluster.snapshot().backends[1].running_requests
                os.killpg(victim.pid, signal.SIGKILL)  # a crash: no graceful shutdown
                killed_s = server.cluster.clock()
                await asyncio.wait_for(asyncio.gather(*agents), MAX_HOLD_S * 2)
                victim.stop()  # reap it
                # After one /metrics poll (0.5 s) at the latest, nothing goes to the dead engine,
                # and the programs it served finish their turns on the other one. (On a quiet
                # machine the agents may be done within that 0.6 s: the programs are the test.)
                steps = server.records.steps
                assert all(r["backend"] == 0 for r in steps if r["dispatched_s"] > killed_s + 0.6)
                served = {r["program_id"] for r in steps if r["backend"] == 1 and r["dispatched_s"] <= killed_s}
                finished_before = {r["program_id"] for r in steps
                                   if r["step"] == STEPS - 1 and r["done_s"] <= killed_s}
                victims = served - finished_before
                assert victims
                for pid in victims:
                    later = [r for r in steps if r["program_id"] == pid and r["dispatched_s"] > killed_s]
                    assert later and all(r["backend"] == 0 for r in later), (pid, later)
                assert not server.cluster.programs and server.admission.waiting == 0
                # Restart on the same port: it rejoins and takes programs again.
                monkeypatch.setattr(vllm_server, "free_port", lambda host="127.0.0.1": port)
                victim = await asyncio.to_thread(VllmServer(victim_config(vllm_backend)).start)
                await wait_healthy(server, 1)
                rejoined_s = server.cluster.clock()
                again = [asyncio.create_task(agent(client, vllm_backend, f"b{i}", log)) for i in range(8)]
                await asyncio.wait_for(asyncio.gather(*again), MAX_HOLD_S * 2)
                assert any(r["backend"] == 1 for r in server.records.steps if r["dispatched_s"] > rejoined_s)
                return server.records.outcomes
    try:
        outcomes = asyncio.run(scenario())
    finally:
        victim.stop()
    assert max(elapsed for *_, elapsed in log) < MAX_HOLD_S
    assert outcomes["hold_timeout"] == 0
