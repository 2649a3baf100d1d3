#!/usr/bin/env python3
"""Two step shapes the calibration probes do not cover, timed on real vLLM next to what
the bundled profile (``tiny-cpu-calibrated``) predicts: clues for the fidelity gap
(docs/fidelity.md, section 3).

    python benchmarks/step_shapes.py          # about a minute on two cores

1. Prefill on top of a cached prefix (a replay's common step): a fresh prompt of
   ``base`` tokens, then the same prompt plus ``extra`` tokens; the second request's
   latency against the profile's step model for its uncached tokens. Fresh prompts
   measured at the same moment show how far the machine is from the profile anyway.
2. Prefill mixed into decode steps: 8 requests decoding 128 tokens from 1000-token
   prompts (A), one 2000-token prefill alone (B), and both with the prefill arriving
   0.3 s into the decodes (C). The linear step model charges C about A + B.

Medians of ``--repeats`` runs, fresh token ids every time. Prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import fidelity  # noqa: E402
from thunder.runtime.engines.launcher import VllmServer, VllmServerConfig  # noqa: E402
from thunder.sim.presets import load_engine_spec  # noqa: E402


async def complete(session: aiohttp.ClientSession, url: str, prompt: list[int], max_tokens: int) -> tuple[float, int]:
    started = time.perf_counter()
    async with session.post(f"{url}/v1/completions", json={"model": "tiny-llama", "prompt": prompt,
                                                           "max_tokens": max_tokens, "ignore_eos": True,
                                                           "temperature": 0.0}) as response:
        body = await response.json()
    return time.perf_counter() - started, int(body["usage"]["prompt_tokens_details"]["cached_tokens"] or 0)


async def measure(url: str, repeats: int) -> dict[str, object]:
    spec = load_engine_spec("tiny-cpu-calibrated")
    step = spec.step_time
    rng = random.Random(7)

    def ids(n: int) -> list[int]:
        return [rng.randrange(100, 4000) for _ in range(n)]

    def prefill_model_s(new: int, offset: int) -> float:
        return spec.frontend_s + step.overhead_s + step.per_prefill_token_s * new \
            + step.per_prefill_pair_s * new * (offset + new / 2)

    out: dict[str, object] = {"profile": spec.name}
    async with aiohttp.ClientSession() as session:
        await complete(session, url, ids(256), 8)  # warm-up
        extensions = []
        for base, extra in ((1000, 200), (2000, 200), (3000, 200), (2000, 32), (3000, 600)):
            fresh, extended, cached = [], [], 0
            for _ in range(repeats):
                prompt = ids(base)
                fresh.append((await complete(session, url, prompt, 1))[0])
                latency, cached = await complete(session, url, prompt + ids(extra), 1)
                extended.append(latency)
            new = base + extra - cached
            extensions.append({
                "base": base, "extra": extra, "cached": cached,
                "extension_ms": round(1e3 * statistics.median(extended), 1),
                "extension_model_ms": round(1e3 * prefill_model_s(new, cached), 1),
                "fresh_ms": round(1e3 * statistics.median(fresh), 1),
                # One step when the prompt fits the token budget; longer ones are chunked.
                "fresh_model_ms": round(1e3 * prefill_model_s(base, 0), 1) if base <= spec.max_num_batched_tokens
                else None})
        out["prefix_extension"] = extensions

        async def decodes() -> None:
            await asyncio.gather(*(complete(session, url, ids(1000), 128) for _ in range(8)))

        async def late_prefill() -> None:
            await asyncio.sleep(0.3)
            await complete(session, url, ids(2000), 1)

        runs: dict[str, list[float]] = {"decodes_alone": [], "prefill_alone": [], "together": []}
        for _ in range(repeats):
            started = time.perf_counter()
            await decodes()
            runs["decodes_alone"].append(time.perf_counter() - started)
            runs["prefill_alone"].append((await complete(session, url, ids(2000), 1))[0])
            started = time.perf_counter()
            await asyncio.gather(decodes(), late_prefill())
            runs["together"].append(time.perf_counter() - started)
        medians = {k: statistics.median(v) for k, v in runs.items()}
        out["mixed_step"] = {**{f"{k}_ms": round(1e3 * v, 1) for k, v in medians.items()},
                             "together_minus_decodes_ms": round(1e3 * (medians["together"] - medians["decodes_alone"]), 1),
                             "runs_ms": {k: [round(1e3 * x) for x in v] for k, v in runs.items()}}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=6)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="thunder-steps-") as tmp:
        config = VllmServerConfig(model_dir=fidelity.build_model(Path(tmp) / "tiny-llama"),
                                  served_model_name="tiny-llama", log_path=Path(tmp) / "vllm.log")
        with VllmServer(config) as server:
            print(json.dumps(asyncio.run(measure(server.url, args.repeats)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
