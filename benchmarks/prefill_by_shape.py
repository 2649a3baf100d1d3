#!/usr/bin/env python3
"""What a re-prefill costs on real vLLM (CPU build) for tiny models of several shapes.

    python benchmarks/prefill_by_shape.py                       # three shapes, about 2 minutes
    python benchmarks/prefill_by_shape.py --shapes 2x128x4,6x384x6

Per shape (LAYERSxHIDDENxHEADS, built by ``scripts/build_tiny_model.py``, random
weights, 16,384 tokens of KV): a ``--prompt-tokens`` prompt of fresh token ids
sent cold (nothing cached), then again (all but the last block cached), then
again with 33 output tokens. Medians over ``--repeats``: cold and cached
latency, re-prefill throughput (prompt tokens / (cold - cached)) and decode
time per token. The larger the shape, the larger re-prefill's share of a step,
which is what a program-aware policy saves.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from thunder.runtime.engines.launcher import VllmServer, VllmServerConfig, default_vllm_venv  # noqa: E402


def parse_shape(text: str) -> tuple[int, int, int]:
    try:
        layers, hidden, heads = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise SystemExit(f"bad shape {text!r}: expected LAYERSxHIDDENxHEADS, e.g. 4x256x8") from None
    return layers, hidden, heads


def measure(url: str, prompt_tokens: int, repeats: int, seed: int) -> dict[str, float]:
    client = httpx.Client(base_url=url, timeout=300)
    rng = random.Random(seed)

    def call(prompt: list[int], max_tokens: int) -> float:
        started = time.perf_counter()
        response = client.post("/v1/completions", json={"model": "m", "prompt": prompt, "max_tokens": max_tokens,
                                                        "ignore_eos": True})
        response.raise_for_status()
        return time.perf_counter() - started

    cold, cached, decode = [], [], []
    for _ in range(repeats):
        prompt = [rng.randrange(10, 4000) for _ in range(prompt_tokens)]
        cold.append(call(prompt, 1))
        cached.append(call(prompt, 1))
        decode.append((call(prompt, 33) - cached[-1]) / 32)
    cold_s, cached_s = statistics.median(cold), statistics.median(cached)
    return {"cold_s": cold_s, "cached_s": cached_s, "reprefill_tokens_per_s": prompt_tokens / (cold_s - cached_s),
            "decode_s_per_token": statistics.median(decode)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="2x128x4,4x256x8,8x512x8", help="LAYERSxHIDDENxHEADS, comma-separated")
    parser.add_argument("--prompt-tokens", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    shapes = [parse_shape(s) for s in args.shapes.split(",") if s.strip()]
    venv = default_vllm_venv()
    print("| shape | KV bytes/token | cold ms | cached ms | re-prefill tokens/s | decode ms/token |")
    print("|---|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory(prefix="thunder-shapes-") as tmp:
        for layers, hidden, heads in shapes:
            model = Path(tmp) / f"m-{layers}x{hidden}x{heads}"
            subprocess.run([str(venv / "bin" / "python"), str(ROOT / "scripts" / "build_tiny_model.py"), str(model),
                            "--layers", str(layers), "--hidden", str(hidden), "--heads", str(heads)],
                           check=True, capture_output=True, timeout=300)
            kv_bytes_per_token = 4 * layers * hidden
            config = VllmServerConfig(model_dir=model, venv=venv, served_model_name="m",
                                      kv_cache_bytes=16_384 * kv_bytes_per_token, log_path=Path(tmp) / "vllm.log")
            with VllmServer(config) as server:
                r = measure(server.url, args.prompt_tokens, args.repeats, seed=layers * 1000 + hidden)
            print(f"| {layers}x{hidden}x{heads} | {kv_bytes_per_token:,} | {r['cold_s'] * 1e3:.0f} | "
                  f"{r['cached_s'] * 1e3:.0f} | {r['reprefill_tokens_per_s']:,.0f} | "
                  f"{r['decode_s_per_token'] * 1e3:.1f} |", flush=True)
    print(f"\nload average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
