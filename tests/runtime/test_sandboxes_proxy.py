"""Sandboxes through ``thunder serve``: the endpoints, /metrics, and teardown on program
release, idle reclaim and proxy shutdown, under the tool-resource policies."""

from __future__ import annotations

import asyncio
import urllib.request

import aiohttp
import pytest
from fake_backend import FakeBackend, proxy_url, running_proxy
from sandbox_helpers import TREE, kill_leftovers, processes_under

from thunder.runtime.engines.prometheus import parse_text, total
from thunder.runtime.sandboxes.provider import port_is_free

CHAT = {"model": "fake", "messages": [{"role": "user", "content": "hello " * 20}], "max_tokens": 3}
PORTS = (21100, 21139)


@pytest.fixture
def root(tmp_path):
    path = tmp_path / "sandboxes"
    yield path
    leftovers = kill_leftovers(path) if path.exists() else set()
    assert not leftovers, f"processes left behind: {sorted(leftovers)}"


async def with_proxy(test, root, policy="vllm", backend=None, **config):
    fake = FakeBackend(**(backend or {}))
    await fake.start()
    config.setdefault("sandbox_ports", PORTS)
    config.setdefault("sandbox_term_grace_s", 0.5)
    try:
        async with running_proxy([fake.url], policy=policy, sandbox_root=str(root), **config) as server:
            async with aiohttp.ClientSession(proxy_url(server)) as client:
                return await test(fake, server, client)
    finally:
        await fake.stop()


async def create(client, pid, **body):
    async with client.post(f"/programs/{pid}/sandboxes", json=body) as response:
        return response.status, await response.json()


async def wait_ready(client, pid):
    async with client.post(f"/programs/{pid}/sandboxes/wait", json={"timeout_s": 20}) as response:
        assert response.status == 200
        found = await response.json()
    assert found["ready"], found
    return found


async def gone(path, port, timeout_s=10.0):
    """Until the directory is deleted and the port free (True), or timeout."""
    for _ in range(int(timeout_s / 0.05)):
        if not path.exists() and port_is_free(port):
            return True
        await asyncio.sleep(0.05)
    return False


def get(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
        return response.status


async def metrics(client):
    async with client.get("/metrics") as response:
        return parse_text(await response.text())


def test_create_list_use_and_release_a_sandbox_through_the_proxy(root):
    async def test(fake, server, client):
        status, made = await create(client, "job", setup_command="head -c 2000000 /dev/zero > big",
                                    process_command=TREE, wait_for_port=True, disk_quota_bytes=10**7)
        assert status == 201 and made["state"] in ("preparing", "ready")
        path, port = root / made["path"].rsplit("/", 1)[-1], made["port"]
        assert path.is_dir() and made["sandbox_id"]
        found = await wait_ready(client, "job")
        assert [s["sandbox_id"] for s in found["sandboxes"]] == [made["sandbox_id"]]
        assert await asyncio.to_thread(get, port) == 200
        async with client.get("/programs/job/sandboxes") as response:
            listed = await response.json()
        assert listed["sandboxes"][0]["state"] == "ready" and listed["sandboxes"][0]["disk_bytes"] >= 2_000_000
        page = await metrics(client)
        assert total(page, "thunder:sandboxes_live") == 1 and total(page, "thunder:sandbox_ports_held") == 1
        assert total(page, "thunder:sandbox_disk_bytes") >= 2_000_000
        assert total(page, "thunder:sandbox_disk_reserved_bytes") == 10**7
        async with client.post("/programs/job/release") as response:
            assert response.status == 200
        assert await gone(path, port)
        assert processes_under(root) == set()
        page = await metrics(client)
        assert total(page, "thunder:sandboxes_live") == 0 and total(page, "thunder:sandbox_reclaims_total") == 1
        assert ("env_reclaim", "job") in [(d[1], d[2]) for d in server.records.decisions]
        async with client.get("/programs/job/sandboxes") as response:
            assert response.status == 404
    asyncio.run(with_proxy(test, root))


def test_a_program_released_by_its_last_request_loses_its_sandbox(root):
    async def test(fake, server, client):
        async with client.post("/v1/chat/completions", json={**CHAT, "program_id": "agent"}) as response:
            assert response.status == 200
        _, made = await create(client, "agent", process_command="sleep 60")
        await wait_ready(client, "agent")
        path = root / made["path"].rsplit("/", 1)[-1]
        body = {**CHAT, "program_id": "agent", "program_release": True}
        async with client.post("/v1/chat/completions", json=body) as response:
            assert response.status == 200
        assert await gone(path, made["port"])
    asyncio.run(with_proxy(test, root))


def test_proxy_shutdown_reclaims_every_sandbox(root):
    made = []

    async def test(fake, server, client):
        for pid in ("a", "b", "c"):
            made.append((await create(client, pid, process_command=TREE, wait_for_port=True))[1])
        for pid in ("a", "b", "c"):
            await wait_ready(client, pid)
        assert len(processes_under(root)) >= 12
    asyncio.run(with_proxy(test, root, tool_policy="keep"))
    assert processes_under(root) == set() and list(root.iterdir()) == []
    assert all(port_is_free(m["port"]) for m in made)


def test_idle_programs_lose_their_sandboxes(root):
    async def test(fake, server, client):
        async with client.post("/v1/chat/completions", json={**CHAT, "program_id": "silent"}) as response:
            assert response.status == 200
        _, with_llm = await create(client, "silent", process_command="sleep 60")
        _, only = await create(client, "sandbox-only", process_command="sleep 60")
        await wait_ready(client, "silent")
        await wait_ready(client, "sandbox-only")
        for made in (with_llm, only):
            assert await gone(root / made["path"].rsplit("/", 1)[-1], made["port"])
        assert server.cluster.views == {} and server.tools.programs == {}
    asyncio.run(with_proxy(test, root, idle_timeout_s=0.5, control_interval_s=0.05))


def test_keep_holds_a_released_programs_sandbox_until_shutdown(root):
    async def test(fake, server, client):
        _, made = await create(client, "kept", setup_command="echo x > f")
        await wait_ready(client, "kept")
        async with client.post("/programs/kept/release") as response:
            assert response.status == 200
        await asyncio.sleep(0.3)
        assert (root / made["path"].rsplit("/", 1)[-1]).is_dir()
        return made
    made = asyncio.run(with_proxy(test, root, tool_policy="keep"))
    assert list(root.iterdir()) == [] and port_is_free(made["port"])


def test_attached_tool_resources_are_recorded_not_forwarded_and_never_destroyed(root):
    async def test(fake, server, client):
        body = {**CHAT, "program_id": "att", "tool_resources": ["c0ffee", {"kind": "volume", "id": "v1"}]}
        async with client.post("/v1/chat/completions", json=body) as response:
            assert response.status == 200
        assert "tool_resources" not in fake.bodies[-1]
        async with client.get("/programs/att/sandboxes") as response:
            listed = await response.json()
        assert listed["attached"] == [{"kind": "container", "id": "c0ffee", "owned": False},
                                      {"kind": "volume", "id": "v1", "owned": False}]
        assert total(await metrics(client), "thunder:tool_resources_attached") == 2
        async with client.post("/programs/att/release") as response:
            assert response.status == 200
        assert total(await metrics(client), "thunder:tool_resources_attached") == 0
        bad = {**CHAT, "program_id": "att", "tool_resources": [{"kind": "container"}]}
        async with client.post("/v1/chat/completions", json=bad) as response:
            assert response.status == 400
    asyncio.run(with_proxy(test, root))


def test_bad_sandbox_requests_are_refused_and_sandboxes_are_off_without_a_root(tmp_path):
    async def test(fake, server, client):
        for body in ({"setup_command": 3}, {"disk_quota_bytes": -1}, {"colour": "red"},
                     {"wait_for_port": True}):
            status, error = await create(client, "x", **body)
            assert status == 400, body
        status, failed = await create(client, "x", setup_command="exit 4", wait=True)
        assert status == 500 and failed["state"] == "failed" and "exited with 4" in failed["error"]
    asyncio.run(with_proxy(test, tmp_path / "sandboxes"))

    async def off():
        fake = FakeBackend()
        await fake.start()
        try:
            async with running_proxy([fake.url]) as server:
                async with aiohttp.ClientSession(proxy_url(server)) as client:
                    status, error = await create(client, "x")
                    assert status == 404 and "--sandbox-root" in error["error"]["message"]
        finally:
            await fake.stop()
    asyncio.run(off())


def test_program_aware_prepares_a_queued_programs_sandbox_ahead(root):
    async def test(fake, server, client):
        # thunder with room for one program's context: the second waits in the queue.
        first = {**CHAT, "program_id": "front", "messages": [{"role": "user", "content": "a" * 2400}]}
        async with client.post("/v1/chat/completions", json=first) as response:
            assert response.status == 200
        _, made = await create(client, "queued", setup_command="echo ok > f", needed=False)
        second = {**CHAT, "program_id": "queued", "messages": [{"role": "user", "content": "b" * 2400}]}
        waiting = asyncio.create_task(client.post("/v1/chat/completions", json=second))
        for _ in range(100):
            await asyncio.sleep(0.05)
            async with client.get("/programs/queued/sandboxes") as response:
                if (await response.json())["sandboxes"][0]["state"] == "ready":
                    break
        assert ("env_prepare", "queued", "ahead") in [(d[1], d[2], d[4]) for d in server.records.decisions]
        assert server.cluster.views["queued"].status.value == "paused"
        async with client.post("/programs/front/release"):
            pass
        response = await waiting
        assert response.status == 200
        response.release()
    asyncio.run(with_proxy(test, root, policy="thunder-paper", tool_policy="program-aware",
                          backend={"num_gpu_blocks": 64}))
