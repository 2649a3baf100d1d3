#!/usr/bin/env python3
"""Start a vLLM server on the tiny model and measure launch time, prefill and decode speed.

Usage (with thunder's own venv; the server runs from the vLLM venv):

    python scripts/vllm_cpu_smoke.py MODEL_DIR [--kv-cache-bytes N] [--log server.log]

Prints one JSON object. Prefill speed is prompt tokens / latency of a 1-token
completion on an uncached prompt; decode speed is generated tokens / wall time for
`ignore_eos` completions at concurrency 1 and 8. Prompts of 250/500/1000 words are
about 950/1900/3800 tokens of the tiny model's tokenizer (max model length 4096). Numbers are rough (one run each).
"""

from __future__ import annotations

import argparse
import json
import random
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from thunder.runtime.engines.launcher import DEFAULT_KV_CACHE_BYTES, VllmServer, VllmServerConfig

MODEL = "tiny-llama"


def post(url: str, body: dict[str, object]) -> dict[str, object]:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            return json.loads(response.read())  # type: ignore[no-any-return]
    except urllib.error.HTTPError as error:  # vLLM explains a 400 in the body
        raise RuntimeError(f"{url}: {error.code} {error.read().decode(errors='replace')}") from error


def completion(base: str, prompt: str, max_tokens: int) -> tuple[dict[str, int], float]:
    """(usage, wall seconds) of one /v1/completions call."""
    start = time.perf_counter()
    reply = post(
        f"{base}/v1/completions",
        {"model": MODEL, "prompt": prompt, "max_tokens": max_tokens, "ignore_eos": True},
    )
    return reply["usage"], time.perf_counter() - start  # type: ignore[return-value]


def random_text(rng: random.Random, words: int) -> str:
    vocab = ["alpha", "beta", "gamma", "delta", "return", "import", "class", "self", "value"]
    return " ".join(f"{rng.choice(vocab)}{rng.randrange(1000)}" for _ in range(words))


def prefill_tokens_per_s(base: str, rng: random.Random, words: int) -> dict[str, float]:
    usage, wall_s = completion(base, random_text(rng, words), max_tokens=1)
    return {"prompt_tokens": usage["prompt_tokens"], "tokens_per_s": round(usage["prompt_tokens"] / wall_s)}


def decode_tokens_per_s(base: str, rng: random.Random, concurrency: int) -> dict[str, float]:
    prompts = [random_text(rng, 20) for _ in range(concurrency)]
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(lambda p: completion(base, p, max_tokens=256), prompts))
    wall_s = time.perf_counter() - start
    generated = sum(usage["completion_tokens"] for usage, _ in results)
    return {"concurrency": concurrency, "tokens_per_s": round(generated / wall_s)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--kv-cache-bytes", type=int, default=DEFAULT_KV_CACHE_BYTES)
    parser.add_argument("--log", type=Path, default=None)
    args = parser.parse_args()
    config = VllmServerConfig(
        model_dir=args.model_dir,
        kv_cache_bytes=args.kv_cache_bytes,
        served_model_name=MODEL,
        log_path=args.log,
    )
    rng = random.Random(0)
    start = time.perf_counter()
    with VllmServer(config) as server:
        report: dict[str, object] = {"launch_to_healthy_s": round(time.perf_counter() - start, 1)}
        completion(server.url, "warm up", max_tokens=4)  # first request pays one-off setup
        report["prefill"] = [prefill_tokens_per_s(server.url, rng, w) for w in (250, 500, 1000)]
        report["decode"] = [decode_tokens_per_s(server.url, rng, c) for c in (1, 8)]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
