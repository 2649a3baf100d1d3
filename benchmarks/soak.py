"""Soak: many programs through ``thunder serve`` for a long time, against a stand-in backend.

Three processes on loopback: a stand-in OpenAI backend (``/metrics`` with vLLM's
cache config; replies after a fixed service time, streamed token by token or
whole, and says in the body how long it took), the proxy (``ProxyServer``, what
``thunder serve`` runs) and this client. Programs arrive at an even rate over
``--duration-s``; each runs ``--min-steps``..``--max-steps`` turns with tool time
between them, some streaming, a few with two turns at once. Three kinds of
client:

* well-behaved: releases its program at the end;
* forgetful (``--never-release``): stops without a release (the idle timeout
  must reclaim it);
* impatient (``--disconnect``): on one turn, opens a stream, reads the first
  chunk and hangs up; never comes back.

The proxy keeps its newest ``--max-records`` step, program and decision rows
(default 1,000 here, 1,000,000 in ``thunder serve``): rows are memory by design,
so a small bound lets RSS flatten early and any growth left is a leak.

Sampled every ``--sample-s``: the proxy's RSS and open file descriptors
(``/proc``; also before the first connection and after the client has closed
its connections, where connections to the backend, bounded by the pool, are
told apart from everything else), the programs in its table and how many of them are idle past
``--idle-timeout-s`` plus one control interval and a second ("overdue"), its
request counters, and the added latency of the turns that ended in the window
(client wall time minus the stand-in's service time: the proxy's work, the
extra loopback hop and any time the policy held the request; p50, p99).

At the end it waits for the idle timeout to reclaim the forgetful programs and
checks: no lost request (every turn answered 200 in full, except the deliberate
hang-ups), the proxy's counters agree with the client's, no program left in the
table, memory and descriptors flat. Everything is bounded (program count,
duration, steps); the run ends by itself.

    python benchmarks/soak.py                                   # 10,000 programs, 30 minutes
    python benchmarks/soak.py --programs 300 --duration-s 30 --idle-timeout-s 5   # the CI version
    python benchmarks/soak.py --plot docs/img/soak.png --out benchmarks/results/soak.json

Exit status 1 if a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import re
import socket
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

METRICS = ('vllm:cache_config_info{{block_size="16",num_gpu_blocks="{blocks}",engine="0"}} 1.0\n'
           'vllm:num_requests_running{{engine="0"}} 0.0\nvllm:num_requests_waiting{{engine="0"}} 0.0\n')


@dataclass
class Args:
    programs: int = 10_000
    duration_s: float = 1800.0
    min_steps: int = 2
    max_steps: int = 8
    tool_s: float = 1.0  # mean tool time between turns (exponential)
    stream: float = 0.5  # fraction of turns that stream
    overlap: float = 0.05  # fraction of turns sent twice at once
    never_release: float = 0.1
    disconnect: float = 0.05
    max_tokens: int = 8
    service_s: float = 0.02  # stand-in: time before the first token
    token_s: float = 0.002  # stand-in: time per token
    capacity_tokens: int = 200_000
    policy: str = "thunder"
    idle_timeout_s: float = 30.0
    control_interval_s: float = 1.0
    max_hold_s: float = 60.0
    max_records: int = 1_000  # small, so the bounded record stores are full early and RSS can flatten
    sample_s: float = 5.0
    seed: int = 1
    out: str | None = None
    plot: str | None = None


def parse_args(argv: list[str] | None) -> Args:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    defaults = Args()
    for name, value in asdict(defaults).items():
        flag = "--" + name.replace("_", "-")
        kind = type(value) if value is not None else str
        parser.add_argument(flag, type=kind, default=value)
    return Args(**vars(parser.parse_args(argv)))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- the stand-in backend (its own process) ------------------------------------------------

def run_stand_in(port: int, service_s: float, token_s: float, capacity_tokens: int) -> None:
    metrics = METRICS.format(blocks=max(1, capacity_tokens // 16))

    def usage(body: dict[str, Any], service: float) -> dict[str, Any]:
        prompt = max(1, sum(len(str(m.get("content", ""))) for m in body.get("messages", [])) // 4)
        completion = int(body.get("max_tokens") or 4)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
                "prompt_tokens_details": {"cached_tokens": prompt // 2}, "stand_in_service_s": service}

    async def chat(request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        body = await request.json()
        tokens = int(body.get("max_tokens") or 4)
        await asyncio.sleep(service_s)
        if not body.get("stream"):
            await asyncio.sleep(token_s * tokens)
            choice = {"index": 0, "message": {"role": "assistant", "content": "t" * tokens}, "finish_reason": "length"}
            return web.json_response({"id": "soak", "object": "chat.completion", "choices": [choice],
                                      "usage": usage(body, time.monotonic() - started)})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for index in range(tokens):
            chunk = {"id": "soak", "object": "chat.completion.chunk",
                     "choices": [{"index": 0, "delta": {"content": f"t{index}"}}]}
            await response.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            await asyncio.sleep(token_s)
        final = {"id": "soak", "object": "chat.completion.chunk", "choices": [],
                 "usage": usage(body, time.monotonic() - started)}
        await response.write(b"data: " + json.dumps(final).encode() + b"\n\ndata: [DONE]\n\n")
        await response.write_eof()
        return response

    async def metrics_page(request: web.Request) -> web.Response:
        return web.Response(text=metrics)

    app = web.Application()
    app.add_routes([web.post("/v1/chat/completions", chat), web.get("/metrics", metrics_page)])
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, handler_cancellation=True)


def run_proxy(port: int, backend_port: int, args: Args) -> None:
    import logging

    # One warning per reclaimed program otherwise; /metrics counts them (thunder_reclaims_total).
    logging.basicConfig(level=logging.ERROR)
    from thunder.policies.registry import make_policy
    from thunder.runtime.config import ServeConfig
    from thunder.runtime.server import serve_forever

    config = ServeConfig(backends=(f"http://127.0.0.1:{backend_port}",), host="127.0.0.1", port=port,
                         idle_timeout_s=args.idle_timeout_s, control_interval_s=args.control_interval_s,
                         max_hold_s=args.max_hold_s, max_records=args.max_records)
    asyncio.run(serve_forever(config, make_policy(args.policy)))


# -- the client --------------------------------------------------------------------------------

@dataclass
class Tally:
    sent: int = 0
    ok: int = 0
    hung_up: int = 0  # deliberate
    errors: dict[str, int] = field(default_factory=dict)
    window: list[float] = field(default_factory=list)  # added latency (s) of turns ended since the last sample
    added_all: list[float] = field(default_factory=list)
    programs_started: int = 0
    programs_done: int = 0

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


def chat_body(pid: str, step: int, stream: bool, max_tokens: int) -> dict[str, Any]:
    # The context grows a little each turn, as an agent's does.
    content = f"{pid} " + "w " * (50 + 40 * step)
    return {"model": "soak", "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens,
            "stream": stream, "program_id": pid}


async def turn(client: aiohttp.ClientSession, tally: Tally, body: dict[str, Any], hang_up: bool = False) -> None:
    tally.sent += 1
    started = time.monotonic()
    try:
        async with client.post("/v1/chat/completions", json=body) as response:
            if response.status != 200:
                tally.error(f"http_{response.status}")
                await response.read()
                return
            if hang_up:
                await response.content.readany()
                response.close()  # mid-stream: the stand-in still has tokens to send
                tally.hung_up += 1
                return
            data = await response.read()
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        tally.error(type(exc).__name__)
        return
    elapsed = time.monotonic() - started
    service = usage_service_s(data)
    if service is None:
        tally.error("no_usage")
        return
    tally.ok += 1
    tally.window.append(elapsed - service)
    tally.added_all.append(elapsed - service)


def usage_service_s(data: bytes) -> float | None:
    """The stand-in's service time from the usage object (last SSE event or the JSON body)."""
    if data.startswith(b"data: "):
        events = [line[6:] for line in data.split(b"\n") if line.startswith(b"data: ") and line[6:] != b"[DONE]"]
        if not events or data.rstrip()[-12:] != b"data: [DONE]":
            return None
        data = events[-1]
    try:
        return float(json.loads(data)["usage"]["stand_in_service_s"])
    except (ValueError, KeyError, TypeError):
        return None


async def agent(client: aiohttp.ClientSession, tally: Tally, pid: str, rng: random.Random, args: Args) -> None:
    tally.programs_started += 1
    steps = rng.randint(args.min_steps, args.max_steps)
    kind = rng.random()
    forgetful = kind < args.never_release
    hang_up_at = rng.randrange(steps) if args.never_release <= kind < args.never_release + args.disconnect else None
    for step in range(steps):
        if step == hang_up_at:
            await turn(client, tally, chat_body(pid, step, True, args.max_tokens * 4), hang_up=True)
            tally.programs_done += 1
            return  # gone without a release
        body = chat_body(pid, step, rng.random() < args.stream, args.max_tokens)
        if rng.random() < args.overlap:
            await asyncio.gather(turn(client, tally, body), turn(client, tally, dict(body)))
        else:
            await turn(client, tally, body)
        if step < steps - 1:
            await asyncio.sleep(min(rng.expovariate(1.0 / args.tool_s), 10 * args.tool_s))
    if not forgetful:
        try:
            async with client.post(f"/programs/{pid}/release") as response:
                if response.status != 200:
                    tally.error(f"release_{response.status}")
        except aiohttp.ClientError as exc:
            tally.error(f"release_{type(exc).__name__}")
    tally.programs_done += 1


# -- sampling the proxy --------------------------------------------------------------------------

def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def fd_census(pid: int, backend_port: int) -> tuple[int, int]:
    """(descriptors other than connections to the backend, connections to the backend).
    The second is bounded by the proxy's pool: its /metrics poller takes idle
    connections in turn (aiohttp's pool is first-in first-out), so about
    keep-alive / poll interval of them (4 here) stay open while the proxy idles."""
    inodes = set()
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            inodes.add(os.readlink(f"/proc/{pid}/fd/{name}"))
        except FileNotFoundError:  # closed between the listing and the look: not open any more
            continue
    to_backend = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[2].rsplit(":", 1)[1], 16) == backend_port:
                to_backend.add(f"socket:[{fields[9]}]")
    return len(inodes - to_backend), len(inodes & to_backend)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# Both spellings of the proxy's metric names: thunder_x and thunder:x.
_OUTCOME = re.compile(r'^thunder[_:]requests_total\{outcome="(\w+)"\} (\S+)$', re.MULTILINE)
_RECLAIMS = re.compile(r"^thunder[_:]reclaims_total (\S+)$", re.MULTILINE)


def outcomes(metrics_text: str) -> dict[str, float]:
    """``thunder_requests_total`` by outcome, from the proxy's /metrics."""
    return {name: float(value) for name, value in _OUTCOME.findall(metrics_text)}


def reclaims(metrics_text: str) -> int:
    found = _RECLAIMS.search(metrics_text)
    return int(float(found.group(1))) if found else 0


async def sample(client: aiohttp.ClientSession, pid: int, tally: Tally, args: Args, t0: float) -> dict[str, Any]:
    async with client.get("/programs") as response:
        table = await response.json()
    async with client.get("/metrics") as response:
        text = await response.text()
    counters = outcomes(text)
    slack = args.idle_timeout_s + args.control_interval_s + 1.0
    overdue = [p["program_id"] for p in table["programs"]
               if not p["in_flight"] and not p["held"] and table["now_s"] - p["last_seen_s"] > slack]
    window, tally.window = tally.window, []
    return {"t_s": round(time.monotonic() - t0, 2), "rss_mib": round(rss_mib(pid), 2), "fds": open_fds(pid),
            "programs": len(table["programs"]), "overdue": len(overdue), "reclaims": reclaims(text), "sent": tally.sent, "ok": tally.ok,
            "errors": sum(tally.errors.values()), "turns_in_window": len(window),
            "added_p50_ms": _ms(percentile(window, 0.5)), "added_p99_ms": _ms(percentile(window, 0.99)),
            "proxy_outcomes": counters}


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 3)


async def drive(args: Args, proxy_port: int, proxy_pid: int, backend_port: int) -> dict[str, Any]:
    rng = random.Random(args.seed)
    tally = Tally()
    samples: list[dict[str, Any]] = []
    fds_before = fd_census(proxy_pid, backend_port)  # before any client connection
    connector = aiohttp.TCPConnector(limit=1024)
    timeout = aiohttp.ClientTimeout(total=args.max_hold_s + 60)
    async with aiohttp.ClientSession(f"http://127.0.0.1:{proxy_port}", connector=connector,
                                     timeout=timeout) as client:
        t0 = time.monotonic()
        stop = asyncio.Event()

        async def sampler() -> None:
            while not stop.is_set():
                samples.append(await sample(client, proxy_pid, tally, args, t0))
                print(json.dumps({k: v for k, v in samples[-1].items() if k != "proxy_outcomes"}), flush=True)
                try:
                    await asyncio.wait_for(stop.wait(), args.sample_s)
                except asyncio.TimeoutError:
                    pass

        sampling = asyncio.create_task(sampler())
        agents = []
        gap_s = args.duration_s / args.programs
        for index in range(args.programs):
            await asyncio.sleep(max(0.0, t0 + index * gap_s - time.monotonic()))
            agents.append(asyncio.create_task(agent(client, tally, f"soak-{index}", random.Random(rng.random()),
                                                    args)))
        await asyncio.gather(*agents)
        load_end_s = time.monotonic() - t0
        # Forgetful programs go at the idle timeout (checked every control interval).
        await asyncio.sleep(args.idle_timeout_s + 2 * args.control_interval_s + 1.0)
        stop.set()
        await sampling
        samples.append(await sample(client, proxy_pid, tally, args, t0))
    # Every client connection closed, and the proxy's idle ones to the backend gone
    # (dropped after 4 s): what is still open now and was not before is a leak.
    await asyncio.sleep(5.0)
    fds_after = fd_census(proxy_pid, backend_port)
    return summarize(args, tally, samples, load_end_s, fds_before, fds_after)


def summarize(args: Args, tally: Tally, samples: list[dict[str, Any]], load_end_s: float,
              fds_before: tuple[int, int], fds_after: tuple[int, int]) -> dict[str, Any]:
    final = samples[-1]
    steady = [s for s in samples if s["t_s"] >= min(60.0, load_end_s / 4)] or samples
    half = steady[len(steady) // 2:] or steady
    slope = _slope([s["t_s"] / 60 for s in half], [s["rss_mib"] for s in half])
    proxy = final["proxy_outcomes"]
    accounted = sum(proxy.values())
    summary = {
        "programs": tally.programs_started, "programs_done": tally.programs_done, "turns_sent": tally.sent,
        "turns_ok": tally.ok, "hung_up": tally.hung_up, "lost": sum(tally.errors.values()),
        "errors": tally.errors, "proxy_outcomes": proxy, "proxy_accounted": accounted,
        "max_overdue": max(s["overdue"] for s in samples), "programs_left": final["programs"],
        "reclaimed": final["reclaims"],
        "rss_first_mib": steady[0]["rss_mib"], "rss_last_mib": final["rss_mib"],
        "rss_max_mib": max(s["rss_mib"] for s in samples), "rss_slope_mib_per_min_second_half": round(slope, 3),
        "fds_before": fds_before, "fds_after": fds_after, "fds_max": max(s["fds"] for s in samples),
        "added_p50_ms": _ms(percentile(tally.added_all, 0.5)), "added_p99_ms": _ms(percentile(tally.added_all, 0.99)),
        "load_s": round(load_end_s, 1),
    }
    checks = {
        "no lost request": summary["lost"] == 0,
        # A hang-up after the proxy had sent the whole stream counts as ok there.
        "proxy counted every turn": accounted == tally.sent
        and proxy.get("ok", 0) + proxy.get("aborted", 0) == tally.ok + tally.hung_up,
        "no program overdue": summary["max_overdue"] == 0,
        "table empty at the end": summary["programs_left"] == 0,
        "no descriptor left open": fds_after[0] <= fds_before[0] and fds_after[1] <= 5,
        # MiB per minute over the second half of the run; a short run's slope is mostly
        # warm-up, so a small total growth passes too
        "memory flat": slope < 1.0 or summary["rss_last_mib"] - summary["rss_first_mib"] < 4.0,
    }
    return {"args": asdict(args), "summary": summary, "checks": checks, "samples": samples}


def _slope(xs: list[float], ys: list[float]) -> float:
    if len(xs) < 3 or max(xs) - min(xs) < 1e-9:
        return 0.0
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def plot(result: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = result["samples"]
    minutes = [s["t_s"] / 60 for s in samples]
    fig, axes = plt.subplots(4, 1, figsize=(7, 8), sharex=True)
    axes[0].plot(minutes, [s["rss_mib"] for s in samples])
    axes[0].set_ylabel("proxy RSS (MiB)")
    axes[1].plot(minutes, [s["fds"] for s in samples])
    axes[1].set_ylabel("open fds")
    axes[2].plot(minutes, [s["programs"] for s in samples], label="in table")
    axes[2].plot(minutes, [s["overdue"] for s in samples], label="idle past timeout")
    axes[2].set_ylabel("programs")
    axes[2].legend(loc="upper right", fontsize=8)
    with_latency = [(m, s) for m, s in zip(minutes, samples) if s["added_p99_ms"] is not None]
    axes[3].plot([m for m, _ in with_latency], [s["added_p99_ms"] for _, s in with_latency], label="p99")
    axes[3].plot([m for m, _ in with_latency], [s["added_p50_ms"] for _, s in with_latency], label="p50")
    axes[3].set_ylabel("added latency (ms)")
    axes[3].set_xlabel("minutes")
    axes[3].legend(loc="upper right", fontsize=8)
    a = result["args"]
    fig.suptitle(f"soak: {a['programs']} programs over {a['duration_s']:g} s, policy {a['policy']}, "
                 f"idle timeout {a['idle_timeout_s']:g} s", fontsize=10)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ctx = multiprocessing.get_context("spawn")
    backend_port, proxy_port = free_port(), free_port()
    stand_in = ctx.Process(target=run_stand_in, args=(backend_port, args.service_s, args.token_s,
                                                       args.capacity_tokens), daemon=True)
    stand_in.start()
    _wait_port(backend_port)
    proxy = ctx.Process(target=run_proxy, args=(proxy_port, backend_port, args), daemon=True)
    proxy.start()
    _wait_port(proxy_port)
    try:
        result = asyncio.run(drive(args, proxy_port, proxy.pid, backend_port))
    finally:
        for process in (proxy, stand_in):
            process.terminate()
            process.join(15)
    print(json.dumps(result["summary"], indent=1))
    for name, passed in result["checks"].items():
        print(f"{'PASS' if passed else 'FAIL'}  {name}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    if args.plot:
        plot(result, args.plot)
    return 0 if all(result["checks"].values()) else 1


def _wait_port(port: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port} after {timeout_s:g} s")


if __name__ == "__main__":
    sys.exit(main())
