"""Timelines of two disruptions through the proxy, against stand-in backends.

Two stand-in backends (``soak.run_stand_in``, each its own process), the proxy
in this process (``ProxyServer``, policy thunder), and closed-loop agents that
send a failed turn again, as agent clients do:

1. **backend killed, then restarted**: at ``--kill-at-s`` backend 1 gets
   SIGKILL (requests in flight there are cut off; the policy re-queues its
   programs, and those that do not fit the survivor wait); at
   ``--restart-at-s`` a new one starts on its port and rejoins at the next good
   ``/metrics`` read;
2. **weight sync**: from ``--pause-at-s`` to ``--resume-at-s`` every dispatch is
   held (``POST /admin/pause`` then ``/admin/resume``), as an RL trainer does
   around a weight update.

Every 0.1 s it records, per backend, the turns completed and the requests the
proxy has in flight, plus the requests held at the proxy. Writes a JSON of the
series and, with ``--plot``, one figure with a panel per scenario.

    python benchmarks/fault_timeline.py --plot docs/img/fault_timeline.png \\
        --out benchmarks/results/fault_timeline.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import random
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).parent))
from soak import _wait_port, free_port, run_stand_in  # noqa: E402  (a sibling script)

SERVICE_S, TOKEN_S = 0.05, 0.005
# Each program's context is about 260 tokens; 16 of them need both backends' 2,400
# tokens, so with one backend gone about a third of them wait at the proxy.
CAPACITY_TOKENS = 2_400


def start_stand_in(ctx: Any, port: int) -> Any:
    process = ctx.Process(target=run_stand_in, args=(port, SERVICE_S, TOKEN_S, CAPACITY_TOKENS), daemon=True)
    process.start()
    _wait_port(port)
    return process


async def agent(client: aiohttp.ClientSession, pid: str, until_s: float, rng: random.Random,
                tally: dict[str, int]) -> None:
    while time.monotonic() < until_s:
        body = {"model": "m", "messages": [{"role": "user", "content": f"{pid} " + "w " * 500}],
                "max_tokens": 8, "stream": rng.random() < 0.5, "program_id": pid}
        try:
            async with client.post("/v1/chat/completions", json=body) as response:
                await response.read()
                ok = response.status == 200
        except aiohttp.ClientError:
            ok = False
        tally["ok" if ok else "retried"] += 1
        await asyncio.sleep(rng.expovariate(1 / 0.2))


async def scenario(name: str, args: argparse.Namespace, ctx: Any) -> dict[str, Any]:
    from thunder.policies.registry import make_policy
    from thunder.runtime.config import ServeConfig
    from thunder.runtime.server import ProxyServer

    ports = [free_port(), free_port()]
    backends = [start_stand_in(ctx, port) for port in ports]
    config = ServeConfig(backends=tuple(f"http://127.0.0.1:{p}" for p in ports), port=0, poll_interval_s=0.2,
                         failures_to_down=1, control_interval_s=0.2, max_hold_s=30.0)
    server = ProxyServer(config, make_policy("thunder"))
    await server.start()
    series: list[dict[str, Any]] = []
    tally = {"ok": 0, "retried": 0}
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{server.port}") as client:
            t0 = time.monotonic()
            rng = random.Random(3)
            agents = [asyncio.create_task(agent(client, f"p{i}", t0 + args.duration_s, random.Random(rng.random()),
                                                tally)) for i in range(args.programs)]
            events = ([(args.kill_at_s, "kill"), (args.restart_at_s, "restart")] if name == "kill"
                      else [(args.pause_at_s, "pause"), (args.resume_at_s, "resume")])
            done_seen = 0
            while time.monotonic() - t0 < args.duration_s:
                now = time.monotonic() - t0
                while events and now >= events[0][0]:
                    _, what = events.pop(0)
                    if what == "kill":
                        backends[1].kill()
                    elif what == "restart":
                        backends[1] = start_stand_in(ctx, ports[1])
                    else:
                        async with client.post(f"/admin/{what}") as response:
                            await response.read()
                steps = list(server.records.steps)
                new = steps[done_seen:] if len(steps) < server.records.steps.maxlen else []
                done_seen = len(steps)
                view = server.cluster.snapshot()
                series.append({"t_s": round(now, 2),
                               "done": [sum(1 for r in new if r["backend"] == b) for b in (0, 1)],
                               "in_flight": [b.running_requests for b in view.backends],
                               "healthy": [b.healthy for b in view.backends],
                               "held": server.admission.waiting})
                await asyncio.sleep(0.1)
            await asyncio.gather(*agents)
    finally:
        await server.stop()
        for process in backends:
            process.kill()
    return {"series": series, "turns_ok": tally["ok"], "turns_retried": tally["retried"],
            "outcomes": dict(server.records.outcomes)}


def plot(result: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a = result["args"]
    fig, axes = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    for ax, name, title, marks in (
            (axes[0], "kill", "backend 1 killed, then restarted", (a["kill_at_s"], a["restart_at_s"])),
            (axes[1], "sync", "every dispatch held for a weight sync", (a["pause_at_s"], a["resume_at_s"]))):
        series = result[name]["series"]
        t = [s["t_s"] for s in series]
        window = 5  # 0.5 s of samples: turns completed per second, smoothed
        for backend in (0, 1):
            done = [s["done"][backend] for s in series]
            rate = [sum(done[max(0, i - window + 1):i + 1]) / (0.1 * min(window, i + 1)) for i in range(len(done))]
            ax.plot(t, rate, label=f"turns/s done on backend {backend}")
        ax.plot(t, [s["held"] for s in series], label="requests held at the proxy", color="gray")
        for mark in marks:
            ax.axvline(mark, color="black", linestyle=":", linewidth=1)
        ax.set_title(f"{title} (retried turns: {result[name]['turns_retried']})", fontsize=10)
        ax.legend(loc="upper right", fontsize=7)
    axes[1].set_xlabel("seconds")
    fig.suptitle(f"{a['programs']} closed-loop programs through the proxy (policy thunder), 2 stand-in backends",
                 fontsize=10)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--programs", type=int, default=16)
    parser.add_argument("--duration-s", type=float, default=14.0)
    parser.add_argument("--kill-at-s", type=float, default=4.0)
    parser.add_argument("--restart-at-s", type=float, default=8.0)
    parser.add_argument("--pause-at-s", type=float, default=5.0)
    parser.add_argument("--resume-at-s", type=float, default=8.0)
    parser.add_argument("--out", default=None)
    parser.add_argument("--plot", default=None)
    args = parser.parse_args(argv)
    ctx = multiprocessing.get_context("spawn")
    result: dict[str, Any] = {"args": vars(args)}
    for name in ("kill", "sync"):
        result[name] = asyncio.run(scenario(name, args, ctx))
        print(name, {k: v for k, v in result[name].items() if k != "series"})
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result) + "\n")
    if args.plot:
        plot(result, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
