"""Live sandboxes under keep / on-demand / program-aware: a small science-like run, for real.

One process: a fake OpenAI backend (fixed delay per request, a KV capacity
small enough that thunder queues programs), ``thunder serve``'s ProxyServer
with the ``thunder`` scheduler, and N agent programs in a closed loop. Each
program announces its sandbox (``needed: false``), then for each turn sends
an LLM request, waits for its sandbox (``/sandboxes/wait``) and runs a tool
call (a sleep). A sandbox's setup writes tens of MB and sleeps 0.5-2 s, like
an environment build; its process is a sleeping service holding a port.
After its last turn a program is released.

Measured per tool policy: wall time until every program finished, peak disk
under the sandbox root (walked every 0.1 s: the ground truth, not the
proxy's own numbers), peak ports held, time programs waited for sandboxes.
Everything is torn down at the end and checked: no process, port or
directory is left.

    python benchmarks/live_sandboxes.py                  # 12 programs, 3 turns
    python benchmarks/live_sandboxes.py --programs 16 --turns 4
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web

from thunder.policies.registry import make_policy
from thunder.runtime.config import ServeConfig
from thunder.runtime.sandboxes.provider import port_is_free, tree_bytes
from thunder.runtime.server import ProxyServer

BLOCK_SIZE = 16


class FakeBackend:
    """A vLLM stand-in: every completion takes ``delay_s``; prompt tokens = characters / 4."""

    def __init__(self, delay_s: float, num_gpu_blocks: int) -> None:
        self.delay_s, self.num_gpu_blocks = delay_s, num_gpu_blocks
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def completion(self, request: web.Request) -> web.Response:
        body = await request.json()
        await asyncio.sleep(self.delay_s)
        prompt = max(1, sum(len(str(m.get("content", ""))) for m in body["messages"]) // 4)
        usage = {"prompt_tokens": prompt, "completion_tokens": 8, "total_tokens": prompt + 8}
        return web.json_response({"id": "x", "object": "chat.completion", "model": "fake", "usage": usage,
                                  "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}]})

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(text=f'vllm:cache_config_info{{block_size="{BLOCK_SIZE}",'
                                 f'num_gpu_blocks="{self.num_gpu_blocks}"}} 1.0\n')

    async def start(self) -> None:
        app = web.Application()
        app.add_routes([web.post("/v1/chat/completions", self.completion), web.get("/metrics", self.metrics)])
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        await web.SockSite(self.runner, sock).start()
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@dataclass(frozen=True, slots=True)
class ProgramPlan:
    program_id: str
    setup_mb: int
    setup_s: float
    tool_s: tuple[float, ...]
    prompt_chars: int


def plan(programs: int, turns: int, seed: int) -> list[ProgramPlan]:
    rng = random.Random(seed)
    return [ProgramPlan(f"sci-{i:02d}", rng.randint(10, 40), round(rng.uniform(0.5, 2.0), 2),
                        tuple(round(rng.uniform(0.2, 0.8), 2) for _ in range(turns)), rng.randint(1500, 3000))
            for i in range(programs)]


async def run_program(client: aiohttp.ClientSession, program: ProgramPlan, sandbox_wait: list[float]) -> None:
    pid = program.program_id
    setup = f"head -c {program.setup_mb}M /dev/zero > env.img && sleep {program.setup_s}"
    async with client.post(f"/programs/{pid}/sandboxes", json={
            "setup_command": setup, "process_command": "exec sleep 600", "needed": False,
            "disk_quota_bytes": program.setup_mb << 20, "expected_setup_s": program.setup_s}) as response:
        assert response.status == 201, await response.text()
    history = "x" * program.prompt_chars
    for tool_s in program.tool_s:
        body = {"model": "fake", "program_id": pid, "messages": [{"role": "user", "content": history}]}
        async with client.post("/v1/chat/completions", json=body) as response:
            assert response.status == 200, await response.text()
        started = time.perf_counter()
        async with client.post(f"/programs/{pid}/sandboxes/wait", json={"timeout_s": 120}) as response:
            found = await response.json()
            assert found.get("ready"), found
        sandbox_wait.append(time.perf_counter() - started)
        await asyncio.sleep(tool_s)  # the tool call, in the sandbox
        history += "y" * 400  # the tool's output joins the context
    async with client.post(f"/programs/{pid}/release") as response:
        assert response.status == 200


async def sample(root: Path, server: ProxyServer, peaks: dict[str, float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        disk = await asyncio.to_thread(tree_bytes, root)
        assert server.tools is not None
        peaks["disk"] = max(peaks["disk"], disk)
        peaks["ports"] = max(peaks["ports"], len(server.tools.provider.ports.held))
        try:
            await asyncio.wait_for(stop.wait(), 0.1)
        except asyncio.TimeoutError:
            pass


async def one_run(tool_policy: str, programs: list[ProgramPlan], root: Path, args: argparse.Namespace) -> dict:
    fake = FakeBackend(args.llm_s, args.gpu_blocks)
    await fake.start()
    config = ServeConfig(backends=(fake.url,), port=0, poll_interval_s=0.2, tool_policy=tool_policy,
                         sandbox_root=str(root), sandbox_ports=(22000, 22999), sandbox_term_grace_s=1.0,
                         control_interval_s=0.1)
    server = ProxyServer(config, make_policy("thunder"))
    await server.start()
    peaks = {"disk": 0.0, "ports": 0.0}
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample(root, server, peaks, stop))
    waits: list[float] = []
    started = time.perf_counter()
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{server.port}",
                                         timeout=aiohttp.ClientTimeout(total=300)) as client:
            await asyncio.gather(*(run_program(client, p, waits) for p in programs))
        elapsed = time.perf_counter() - started
        assert server.tools is not None
        stats = server.tools.stats()
        ahead = sum(1 for d in server.records.decisions if d[1] == "env_prepare" and d[4] == "ahead")
        pauses = server.records.actions.get("pause", 0)
    finally:
        stop.set()
        await sampler
        await server.stop()
        await fake.stop()
    leftovers = [p.name for p in root.iterdir()]
    ports = [p for p in range(22000, 23000) if not port_is_free(p)]
    return {"tool_policy": tool_policy, "total_s": round(elapsed, 2), "peak_disk_mb": round(peaks["disk"] / 2**20),
            "peak_ports": int(peaks["ports"]), "sandbox_wait_s_per_program": round(sum(waits) / len(programs), 2),
            "prepared_ahead": ahead, "reclaims": stats.reclaims, "reclaim_failures": stats.reclaim_failures,
            "pauses": pauses, "left_dirs": len(leftovers), "left_ports": len(ports)}


async def main(args: argparse.Namespace) -> list[dict]:
    programs = plan(args.programs, args.turns, args.seed)
    results = []
    with tempfile.TemporaryDirectory(prefix="thunder-live-sandboxes-") as tmp:
        for tool_policy in args.policies.split(","):
            root = Path(tmp) / tool_policy
            results.append(await one_run(tool_policy, programs, root, args))
    return results


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--programs", type=int, default=12)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--llm-s", type=float, default=0.3, help="fake backend seconds per completion")
    parser.add_argument("--gpu-blocks", type=int, default=160, help="fake KV capacity in 16-token blocks")
    parser.add_argument("--policies", default="keep,on-demand,program-aware")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = asyncio.run(main(args))
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"programs={args.programs} turns={args.turns} seed={args.seed} llm_s={args.llm_s} "
          f"kv_tokens={args.gpu_blocks * BLOCK_SIZE} scheduler=thunder")
    print(f"{'tool policy':<14}{'total s':>8}{'peak disk MB':>14}{'peak ports':>11}{'sandbox wait/prog s':>21}"
          f"{'ahead':>7}{'left':>6}")
    for r in results:
        print(f"{r['tool_policy']:<14}{r['total_s']:>8}{r['peak_disk_mb']:>14}{r['peak_ports']:>11}"
              f"{r['sandbox_wait_s_per_program']:>21}{r['prepared_ahead']:>7}{r['left_dirs'] + r['left_ports']:>6}")


if __name__ == "__main__":
    cli()
