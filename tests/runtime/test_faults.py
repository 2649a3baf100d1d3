"""Faults against stand-in backends: one of two killed mid-run (SIGKILL, its own
process) and restarted on its port, a slow backend, a backend that stalls
mid-stream, and a proxy restart (what a client sees, what state survives)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from fake_backend import FakeBackend, proxy_url, running_proxy

from thunder.policies.registry import make_policy
from thunder.runtime.config import ServeConfig
from thunder.runtime.server import ProxyServer

HERE = Path(__file__).parent
STAND_IN = """
import asyncio, sys
sys.path.insert(0, {here!r})
from fake_backend import FakeBackend
async def main():
    fake = FakeBackend(delay_s={delay_s}, chunk_delay_s={chunk_delay_s})
    await fake.start(port={port})
    print("ready", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class StandIn:
    """A FakeBackend in its own process, so that it can be killed like a crashed server."""

    def __init__(self, port: int, delay_s: float = 0.05, chunk_delay_s: float = 0.01) -> None:
        self.port, self.delay_s, self.chunk_delay_s = port, delay_s, chunk_delay_s
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> StandIn:
        code = STAND_IN.format(here=str(HERE), port=self.port, delay_s=self.delay_s,
                               chunk_delay_s=self.chunk_delay_s)
        self.process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                                        start_new_session=True)
        assert self.process.stdout is not None and self.process.stdout.readline().strip() == "ready"
        return self

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


CHAT = {"model": "fake", "messages": [{"role": "user", "content": "fault " * 50}], "max_tokens": 6}


async def agent(client: aiohttp.ClientSession, pid: str, steps: int, log: list, stream_every: int = 3) -> None:
    """A client as agents are written: a failed turn is sent again (at most 5 tries)."""
    for step in range(steps):
        body = {**CHAT, "program_id": pid, "stream": step % stream_every == 0}
        for attempt in range(5):
            started = time.monotonic()
            try:
                async with client.post("/v1/chat/completions", json=body) as response:
                    await response.read()
                    status = response.status
            except aiohttp.ClientError:
                status = "dropped"
            log.append((pid, step, attempt, status, time.monotonic() - started))
            if status == 200:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"{pid} step {step} failed five times: {log[-5:]}")
        await asyncio.sleep(0.02)
    async with client.post(f"/programs/{pid}/release") as response:
        assert response.status == 200


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["thunder", "vllm"])
def test_one_of_two_backends_killed_mid_run_then_restarted(policy):
    ports = [free_port(), free_port()]
    stand_ins = [StandIn(port).start() for port in ports]
    log: list = []

    async def scenario():
        async with running_proxy([s.url for s in stand_ins], policy=policy, max_hold_s=5.0,
                                 control_interval_s=0.05, connect_timeout_s=1.0) as server:
            async with aiohttp.ClientSession(proxy_url(server)) as client:
                agents = [asyncio.create_task(agent(client, f"p{i}", 12, log)) for i in range(10)]
                await asyncio.sleep(0.6)
                stand_ins[1].kill()  # mid-run: requests in flight there are cut off
                killed_s = server.cluster.clock()
                await asyncio.wait_for(asyncio.gather(*agents), 60)
                assert not server.cluster.backends[1].healthy
                assert not server.cluster.programs and server.admission.waiting == 0
                after = [r for r in server.records.steps if r["dispatched_s"] > killed_s + 0.2]
                assert after and all(r["backend"] == 0 for r in after)
                # The same server comes back on its port: one good /metrics read and it rejoins.
                stand_ins[1] = StandIn(ports[1]).start()
                for _ in range(100):
                    if server.cluster.backends[1].healthy:
                        break
                    await asyncio.sleep(0.05)
                assert server.cluster.backends[1].healthy
                # Now the other one dies: the rejoined server carries everything.
                more = [asyncio.create_task(agent(client, f"q{i}", 6, log)) for i in range(8)]
                await asyncio.sleep(0.3)
                stand_ins[0].kill()
                killed_s = server.cluster.clock()
                await asyncio.wait_for(asyncio.gather(*more), 60)
                assert not server.cluster.backends[0].healthy
                after = [r for r in server.records.steps if r["dispatched_s"] > killed_s + 0.2]
                assert after and all(r["backend"] == 1 for r in after)
                return server.records.outcomes
    try:
        outcomes = asyncio.run(scenario())
    finally:
        for stand_in in stand_ins:
            stand_in.kill()
    # Every turn ended (the agents would have raised otherwise), none waited past
    # max_hold_s plus the forward itself, and none was failed for being held.
    assert max(elapsed for *_, elapsed in log) < 5.0 + 2.0
    assert outcomes["hold_timeout"] == 0


def test_a_slow_backend_is_latency_and_a_silent_one_a_clear_error():
    async def scenario():
        fake = FakeBackend(delay_s=0.3)
        await fake.start()
        try:
            async with running_proxy([fake.url], read_timeout_s=1.0) as server:
                async with aiohttp.ClientSession(proxy_url(server)) as client:
                    body = {**CHAT, "program_id": "slow"}
                    async with client.post("/v1/chat/completions", json=body) as response:
                        assert response.status == 200  # slower than usual is fine
                    fake.delay_s = 3.0  # now silent past the read timeout
                    started = time.monotonic()
                    async with client.post("/v1/chat/completions", json=body) as response:
                        error = await response.json()
                    assert response.status == 504 and error["error"]["type"] == "backend_error"
                    assert time.monotonic() - started < 2.5
                    # A stream that stalls mid-way: the client's connection is cut, not left open.
                    fake.delay_s, fake.chunk_delay_s = 0.0, 3.0
                    with pytest.raises(aiohttp.ClientPayloadError):
                        async with client.post("/v1/chat/completions", json={**body, "stream": True}) as response:
                            await response.read()
                    await asyncio.sleep(0.05)
                    program = server.cluster.programs["slow"]
                    assert program.in_flight == 0 and not program.held
                    assert server.cluster.snapshot().backends[0].running_requests == 0
                    assert server.records.outcomes["upstream_error"] == 2
        finally:
            await fake.stop()
    asyncio.run(scenario())


def test_a_proxy_restart_forgets_programs_and_clients_carry_on():
    """Programs live in the proxy's memory only. At a stop, held requests get 503
    shutting_down at once; after a restart the next request of a program registers
    it anew (its step count starts again), and releasing a program the new proxy
    never saw is a 404."""
    async def scenario():
        fake = FakeBackend(num_gpu_blocks=64)  # 1,024 tokens: a second big program is held
        await fake.start()
        port = free_port()
        config = ServeConfig(backends=(fake.url,), port=port, poll_interval_s=0.05, control_interval_s=0.05,
                             failures_to_down=1)
        big = {"model": "fake", "messages": [{"role": "user", "content": "y" * 3000}], "max_tokens": 3}
        try:
            first = ProxyServer(config, make_policy("thunder-paper", decay_base=1.0))
            await first.start()
            async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as client:
                for pid in ("kept", "forgotten"):
                    async with client.post("/v1/chat/completions", json={**CHAT, "program_id": pid}) as r:
                        assert r.status == 200
                async with client.post("/v1/chat/completions", json={**big, "program_id": "a"}) as r:
                    assert r.status == 200
                held = asyncio.create_task(client.post("/v1/chat/completions", json={**big, "program_id": "b"}))
                await asyncio.sleep(0.2)
                assert first.cluster.views["b"].waiting
                await first.stop()
                response = await held
                assert response.status == 503 and (await response.json())["error"]["type"] == "shutting_down"
                with pytest.raises(aiohttp.ClientConnectionError):  # between the two: nothing listens
                    async with client.post("/v1/chat/completions", json={**CHAT, "program_id": "kept"}):
                        pass
                second = ProxyServer(config, make_policy("thunder-paper"))
                await second.start()
                try:
                    async with client.post("/v1/chat/completions", json={**CHAT, "program_id": "kept"}) as r:
                        assert r.status == 200
                    assert second.cluster.views["kept"].steps_done == 1  # a new program to this proxy
                    async with client.post("/programs/forgotten/release") as r:
                        assert r.status == 404
                finally:
                    await second.stop()
        finally:
            await fake.stop()
    asyncio.run(scenario())
