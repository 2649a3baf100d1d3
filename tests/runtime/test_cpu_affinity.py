"""Pinning a server's engine-core process to CPUs of its own, on a stand-in process group."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from thunder.runtime.engines.cpu_affinity import ENGINE_CORE_NAME, place_engine_core, process_group

pytestmark = pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or not os.path.isdir("/proc"),
                                reason="needs Linux affinity and /proc")

# A group leader that starts a child named like vLLM's engine core, with a second thread.
LEADER = f"""
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", '''
import threading, time
open("/proc/self/comm", "w").write("{ENGINE_CORE_NAME}")
threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
print("ready", flush=True)
time.sleep(60)
'''], stdout=sys.stdout)
time.sleep(60)
"""


def start_group() -> subprocess.Popen[str]:
    leader = subprocess.Popen([sys.executable, "-c", LEADER], stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    assert leader.stdout is not None and leader.stdout.readline().strip() == "ready"
    return leader


def stop_group(leader: subprocess.Popen[str]) -> None:
    os.killpg(leader.pid, signal.SIGKILL)
    leader.wait()


def test_the_engine_core_gets_its_cpus_and_the_rest_the_others() -> None:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs two usable CPUs")
    leader = start_group()
    try:
        members = process_group(leader.pid)
        engine_pid = next(pid for pid, name in members.items() if name == ENGINE_CORE_NAME)
        placement = place_engine_core(leader.pid, [cpus[-1]])
        assert placement[f"{ENGINE_CORE_NAME} ({engine_pid})"] == [cpus[-1]]
        threads = [int(t) for t in os.listdir(f"/proc/{engine_pid}/task")]
        assert len(threads) == 2
        assert all(os.sched_getaffinity(t) == {cpus[-1]} for t in threads)  # every thread, not just the main one
        assert os.sched_getaffinity(leader.pid) == set(cpus[:-1])
    finally:
        stop_group(leader)


def test_bad_cpus_and_unknown_layouts_are_refused() -> None:
    leader = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        with pytest.raises(ValueError, match="not a non-empty subset"):
            place_engine_core(leader.pid, [max(os.sched_getaffinity(0)) + 64])
        with pytest.raises(ValueError):
            place_engine_core(leader.pid, [])
        deadline = time.monotonic() + 5
        while not process_group(leader.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(LookupError, match="no VLLM::EngineCor process"):
            place_engine_core(leader.pid, [min(os.sched_getaffinity(0))])
    finally:
        leader.kill()
        leader.wait()
