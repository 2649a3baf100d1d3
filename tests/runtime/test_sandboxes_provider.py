"""Real sandboxes without the proxy: the provider's mechanics and LiveToolHost's
teardown, retry and accounting, checked against the operating system itself
(/proc, bind tests, the file system)."""

from __future__ import annotations

import asyncio
import logging
import shutil
import urllib.request
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sandbox_helpers import TREE, held_ports, kill_leftovers, processes_under

from thunder.runtime.sandboxes.provider import LocalSandboxProvider, PortRegistry, SandboxSpec, port_is_free, process_tree
from thunder.runtime.sandboxes.state import SandboxState, SandboxHostConfig
from thunder.runtime.sandboxes.tool_host import LiveToolHost

PORTS = range(21000, 21040)


@pytest.fixture
def root(tmp_path):
    """The sandbox root; whatever a test leaves running there is killed, and the test fails."""
    path = tmp_path / "sandboxes"
    path.mkdir()
    yield path
    leftovers = kill_leftovers(path)
    assert not leftovers, f"processes left behind: {sorted(leftovers)}"


def provider(root: Path, grace_s: float = 1.0, **options) -> LocalSandboxProvider:
    return LocalSandboxProvider(root, PortRegistry(PORTS.start, PORTS.stop - 1), grace_s, **options)


def host(root: Path, **options) -> LiveToolHost:
    loop = asyncio.get_running_loop()
    return LiveToolHost(provider(root, **options.pop("provider", {})), loop.time, SandboxHostConfig(**options))


async def ready(tools: LiveToolHost, program_id: str, timeout_s: float = 20.0) -> None:
    assert await tools.wait_settled(program_id, timeout_s)


def get(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
        return response.status


def test_a_sandbox_runs_setup_holds_disk_and_a_bound_port_and_release_leaves_nothing(root):
    async def scenario():
        tools = host(root)
        spec = SandboxSpec(setup_command="head -c 3000000 /dev/urandom > data.bin && mkdir sub && echo hi > sub/f",
                           process_command=TREE, wait_for_port=True)
        sandbox = tools.declare("p1", spec, 0.0, needed=True)
        assert tools.prepare("p1", 0.0)
        assert sandbox.state is SandboxState.PREPARING and sandbox.instance is not None
        path, port = sandbox.instance.path, sandbox.instance.port
        await ready(tools, "p1")
        assert sandbox.state is SandboxState.READY
        assert sandbox.disk_bytes >= 3_000_000 and (path / "sub" / "f").read_text() == "hi\n"
        assert await asyncio.to_thread(get, port) == 200  # the process itself binds and serves the port
        assert not port_is_free(port)
        tree = process_tree(tools.provider.process_pid(sandbox.instance))
        assert len(tree) >= 4  # sh, http.server, sh, sleep: child of child included
        view = tools.snapshot(1.0, {}, {})
        assert view.ports_used == 1 and view.disk_used_bytes == spec.disk_quota_bytes
        assert tools.reclaim("p1", 1.0, "released")
        await asyncio.gather(*tools._teardown_tasks)
        assert not path.exists() and port_is_free(port) and port not in tools.provider.ports.held
        assert processes_under(root) == set() and not any(p in process_tree(p) for p in tree)
        assert tools.stats().reclaim_failures == 0 and tools.stats().ports_held == 0
        await tools.close()
    asyncio.run(scenario())


def test_a_process_that_ignores_sigterm_is_killed_and_reported(root, caplog):
    async def scenario():
        tools = host(root, provider={"grace_s": 0.3})
        spec = SandboxSpec(process_command="trap '' TERM; sh -c \"trap '' TERM; sleep 300\" & sleep 300")
        sandbox = tools.declare("stubborn", spec, 0.0, needed=True)
        tools.prepare("stubborn", 0.0)
        await ready(tools, "stubborn")
        await asyncio.sleep(0.2)  # let the shells install their traps
        tools.reclaim("stubborn", 0.0, "test")
        await asyncio.gather(*tools._teardown_tasks)
        assert tools.stats().sigkills == 1 and tools.stats().teardowns == 0
        assert sandbox.state is SandboxState.RECLAIMED and processes_under(root) == set()
        await tools.close()
    with caplog.at_level(logging.WARNING):
        asyncio.run(scenario())
    assert any("ignored SIGTERM" in r.getMessage() for r in caplog.records)


def test_a_directory_that_cannot_be_deleted_is_retried_and_reported_until_it_goes(root, caplog):
    failures = []

    def flaky_rmtree(path: Path) -> None:
        if len(failures) < 2:  # as root, permissions cannot make a directory undeletable: inject it
            failures.append(path)
            raise PermissionError(13, "Permission denied", str(path))
        shutil.rmtree(path)

    async def scenario():
        tools = host(root, provider={"remove_tree": flaky_rmtree}, reclaim_retry_s=0.05)
        sandbox = tools.declare("p", SandboxSpec(setup_command="echo x > f"), 0.0, needed=True)
        tools.prepare("p", 0.0)
        await ready(tools, "p")
        path = sandbox.instance.path
        tools.reclaim("p", 0.0, "test")
        await asyncio.sleep(0.02)
        stats = tools.stats()
        assert stats.teardowns == 1 and stats.reclaim_failures >= 1 and stats.ports_held == 0
        assert stats.disk_reserved_bytes == sandbox.spec.disk_quota_bytes  # still held, still counted
        await asyncio.gather(*tools._teardown_tasks)
        assert not path.exists() and tools.stats().teardowns == 0 and tools.stats().reclaim_failures == 2
        await tools.close()
    with caplog.at_level(logging.ERROR):
        asyncio.run(scenario())
    errors = [r.getMessage() for r in caplog.records if "incomplete" in r.getMessage()]
    assert len(errors) == 2 and "Permission denied" in errors[0]


def test_shutdown_reports_what_it_could_not_reclaim(root, caplog):
    def never(path: Path) -> None:
        raise OSError(16, "Device or resource busy", str(path))

    async def scenario():
        tools = host(root, provider={"remove_tree": never}, reclaim_retry_s=0.05, shutdown_timeout_s=0.3)
        tools.declare("p", SandboxSpec(), 0.0, needed=True)
        tools.prepare("p", 0.0)
        await ready(tools, "p")
        return await tools.close()
    with caplog.at_level(logging.ERROR):
        left = asyncio.run(scenario())
    assert len(left) == 1 and "busy" in left[0]
    assert any("not reclaimed at shutdown" in r.getMessage() for r in caplog.records)
    shutil.rmtree(root)  # what the operator would do
    root.mkdir()


def test_a_setup_that_fails_or_times_out_leaves_nothing_and_says_why(root):
    async def scenario():
        tools = host(root, setup_timeout_s=0.5)
        bad = tools.declare("bad", SandboxSpec(setup_command="echo broken >&2; exit 3"), 0.0, needed=True)
        slow = tools.declare("slow", SandboxSpec(setup_command="sleep 30 & sleep 30"), 0.0, needed=True)
        tools.prepare("bad", 0.0)
        tools.prepare("slow", 0.0)
        await ready(tools, "bad")
        await ready(tools, "slow")
        await asyncio.gather(*tools._teardown_tasks)
        assert bad.state is SandboxState.FAILED and "exited with 3" in bad.error and "broken" in bad.error
        assert slow.state is SandboxState.FAILED and "timed out" in slow.error
        assert list(root.iterdir()) == [] and tools.stats().ports_held == 0 and processes_under(root) == set()
        assert tools.snapshot(0.0, {}, {}).envs == {}  # failed sandboxes drop out of the policy's view
        await tools.close()
    asyncio.run(scenario())


def test_a_preparation_that_does_not_fit_waits_for_room(root):
    async def scenario():
        tools = host(root, disk_capacity_bytes=150)
        tools.declare("a", SandboxSpec(disk_quota_bytes=100, process_command="sleep 30"), 0.0, needed=True)
        b = tools.declare("b", SandboxSpec(disk_quota_bytes=100), 0.0, needed=True)
        tools.prepare("a", 0.0)
        tools.prepare("b", 0.0)
        assert b.state is SandboxState.PENDING and tools.snapshot(0.0, {}, {}).disk_pending_bytes == 100
        await ready(tools, "a")
        tools.reclaim("a", 0.0, "test")
        await ready(tools, "b")  # admitted once a's teardown finished
        assert b.state is SandboxState.READY
        await tools.close()
    asyncio.run(scenario())


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(["declare", "prepare", "reclaim", "release"]),
                          st.integers(0, 3)), min_size=1, max_size=10))
def test_random_create_and_release_sequences_leave_nothing_behind(root, operations):
    async def scenario():
        tools = host(root, provider={"grace_s": 0.5})
        for op, index in operations:
            pid = f"p{index}"
            if op == "declare":
                tools.declare(pid, SandboxSpec(setup_command="head -c 10000 /dev/zero > d",
                                               process_command="sleep 60 & sleep 60"), 0.0, needed=False)
            elif op == "prepare":
                tools.prepare(pid, 0.0)
            elif op == "reclaim":
                tools.reclaim(pid, 0.0, "test")
            else:
                tools.release(pid)
            await asyncio.sleep(0.01)
        assert await tools.close() == []
        assert tools.stats().ports_held == 0 and tools.stats().teardowns == 0
    asyncio.run(scenario())
    assert processes_under(root) == set()
    assert list(root.iterdir()) == []
    assert held_ports(PORTS) == []
