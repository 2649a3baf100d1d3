"""What the proxy adds: requests/s and latency through ``thunder serve`` vs direct.

Three processes on loopback: a fast fake OpenAI backend (fixed JSON reply
with ``usage``, a ``/metrics`` page with vLLM's cache config), the proxy
(``ProxyServer``, the code ``thunder serve`` runs) and this client. Both
paths are measured in one run, side by side, with the same client:

* latency: one request at a time (``--latency-requests`` each way,
  alternating direct and proxy); added latency = proxy minus direct, at p50
  and p99;
* throughput: ``--concurrency`` agents in a closed loop, each its own
  program (``program_id`` in the body), ``--throughput-requests`` per path
  in ``--rounds`` alternating rounds; the best round of each path counts.

Every loop is bounded by a request count; the run ends by itself. Usage:

    python benchmarks/proxy_overhead.py [--policy thunder] [--stream]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import socket
import statistics
import sys
import time

import aiohttp
from aiohttp import web

REPLY = json.dumps({
    "id": "bench", "object": "chat.completion", "created": 0, "model": "bench",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 40, "completion_tokens": 1, "total_tokens": 41,
              "prompt_tokens_details": {"cached_tokens": 32}}}).encode()
CHUNK = b'data: {"id":"bench","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"ok"}}]}\n\n'
USAGE = (b'data: {"id":"bench","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":40,'
         b'"completion_tokens":1,"total_tokens":41,"prompt_tokens_details":{"cached_tokens":32}}}\n\n')
METRICS = ('vllm:cache_config_info{block_size="16",num_gpu_blocks="100000",engine="0"} 1.0\n'
           'vllm:num_requests_running{engine="0"} 0.0\nvllm:num_requests_waiting{engine="0"} 0.0\n')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_fake_backend(port: int) -> None:
    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if b'"stream":true' not in body:
            return web.Response(body=REPLY, content_type="application/json")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(CHUNK + USAGE + b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text=METRICS)

    app = web.Application()
    app.add_routes([web.post("/v1/chat/completions", chat), web.get("/metrics", metrics)])
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


def run_proxy(port: int, backend_port: int, policy: str) -> None:
    from thunder.policies.registry import make_policy
    from thunder.runtime.config import ServeConfig
    from thunder.runtime.server import serve_forever

    config = ServeConfig(backends=(f"http://127.0.0.1:{backend_port}",), host="127.0.0.1", port=port)
    asyncio.run(serve_forever(config, make_policy(policy)))


async def wait_ready(url: str) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            try:
                async with session.get(url) as response:
                    if response.status < 500:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


def body(program: int, step: int, stream: bool) -> bytes:
    payload = {"model": "bench", "program_id": f"agent-{program}", "max_tokens": 1, "stream": stream,
               "messages": [{"role": "user", "content": f"step {step} " + "lorem ipsum " * 12}]}
    return json.dumps(payload).encode()


async def one(session: aiohttp.ClientSession, url: str, data: bytes) -> float:
    started = time.perf_counter()
    async with session.post(url, data=data, headers={"Content-Type": "application/json"}) as response:
        await response.read()
        if response.status != 200:
            raise RuntimeError(f"{url}: HTTP {response.status}")
    return time.perf_counter() - started


async def latency(session: aiohttp.ClientSession, urls: dict[str, str], count: int,
                  stream: bool) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {name: [] for name in urls}
    for step in range(count):
        for name, url in urls.items():  # alternate, so drift hits both paths alike
            samples[name].append(await one(session, url, body(0, step, stream)))
    return samples


async def throughput(session: aiohttp.ClientSession, url: str, concurrency: int, total: int,
                     stream: bool) -> float:
    per_agent = total // concurrency

    async def agent(program: int) -> None:
        for step in range(per_agent):
            await one(session, url, body(program, step, stream))

    started = time.perf_counter()
    await asyncio.gather(*(agent(p) for p in range(concurrency)))
    return per_agent * concurrency / (time.perf_counter() - started)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(args: argparse.Namespace, backend_port: int, proxy_port: int) -> None:
    direct = f"http://127.0.0.1:{backend_port}/v1/chat/completions"
    proxied = f"http://127.0.0.1:{proxy_port}/v1/chat/completions"
    await wait_ready(f"http://127.0.0.1:{backend_port}/metrics")
    await wait_ready(f"http://127.0.0.1:{proxy_port}/health")
    connector = aiohttp.TCPConnector(limit=args.concurrency * 2)
    async with aiohttp.ClientSession(connector=connector) as session:
        await latency(session, {"direct": direct, "proxy": proxied}, 200, args.stream)  # warm-up
        lat = await latency(session, {"direct": direct, "proxy": proxied}, args.latency_requests, args.stream)
        # Alternating rounds, best of each: other work on the machine only ever slows a
        # round down, so the best round is the closest to what the path itself can do.
        rates: dict[str, list[float]] = {"direct": [], "proxy": []}
        per_round = args.throughput_requests // args.rounds
        for _ in range(args.rounds):
            for name, url in (("direct", direct), ("proxy", proxied)):
                rates[name].append(await throughput(session, url, args.concurrency, per_round, args.stream))
    rate = {name: max(values) for name, values in rates.items()}
    print(f"policy={args.policy} stream={args.stream} concurrency={args.concurrency} "
          f"latency_requests={args.latency_requests} throughput_requests={args.throughput_requests} "
          f"rounds={args.rounds}")
    print(f"{'path':<8}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}")
    for name in ("direct", "proxy"):
        print(f"{name:<8}{rate[name]:>10.0f}{percentile(lat[name], 0.5) * 1e3:>10.3f}"
              f"{percentile(lat[name], 0.99) * 1e3:>10.3f}")
    added50 = (percentile(lat["proxy"], 0.5) - percentile(lat["direct"], 0.5)) * 1e3
    added99 = (percentile(lat["proxy"], 0.99) - percentile(lat["direct"], 0.99)) * 1e3
    print(f"added by the proxy: p50 {added50:.3f} ms, p99 {added99:.3f} ms; "
          f"mean {(statistics.mean(lat['proxy']) - statistics.mean(lat['direct'])) * 1e3:.3f} ms; "
          f"throughput {rate['proxy'] / rate['direct']:.2f}x of direct")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--policy", default="vllm", help="vllm, continuum or thunder")
    parser.add_argument("--stream", action="store_true", help="stream the responses (SSE)")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency-requests", type=int, default=2000)
    parser.add_argument("--throughput-requests", type=int, default=12000, help="per path, over all rounds")
    parser.add_argument("--rounds", type=int, default=4, help="alternating throughput rounds per path")
    args = parser.parse_args()
    backend_port, proxy_port = free_port(), free_port()
    processes = [multiprocessing.Process(target=run_fake_backend, args=(backend_port,), daemon=True),
                 multiprocessing.Process(target=run_proxy, args=(proxy_port, backend_port, args.policy), daemon=True)]
    processes[0].start()
    time.sleep(0.3)  # the proxy scrapes the backend once on start
    processes[1].start()
    try:
        asyncio.run(measure(args, backend_port, proxy_port))
    finally:
        for process in processes:
            process.terminate()
            process.join(5)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
