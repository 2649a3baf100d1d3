"""The official ``openai`` client, sync and async, streaming and not, through
``thunder serve`` in front of a real vLLM (CPU build, tiny model).

What a user writes is what is tested: ``extra_body={"program_id": ...}`` or
``extra_headers={"X-Program-Id": ...}`` names the program, the release is one
POST, and the proxy's errors arrive as the client's own exception types
(``BadRequestError`` for a 400, ``InternalServerError`` with the
``Retry-After`` header for a 503). Skipped without the vLLM venv.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from serve_process import ServeProcess, thunder_serve
from vllm_fixture import VllmBackend, make_vllm_backend_fixture

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

vllm_backend = make_vllm_backend_fixture()  # the shared default server: 16k tokens of KV

MESSAGES = [{"role": "user", "content": "Say something about thunder and lightning."}]


@pytest.fixture(scope="module")
def proxy(vllm_backend: VllmBackend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    with thunder_serve([vllm_backend.url], "--policy", "thunder",
                       workdir=tmp_path_factory.mktemp("serve")) as running:
        yield running


def client(proxy: ServeProcess, **kwargs: object) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.url + "/v1", api_key="unused", max_retries=0, timeout=60, **kwargs)


def program(proxy: ServeProcess, program_id: str) -> dict | None:
    response = httpx.get(f"{proxy.url}/programs/{program_id}", timeout=10)
    return response.json() if response.status_code == 200 else None


def release(proxy: ServeProcess, program_id: str) -> None:
    assert httpx.post(f"{proxy.url}/programs/{program_id}/release", timeout=10).status_code == 200


def test_sync_chat_with_program_id_in_extra_body(proxy: ServeProcess, vllm_backend: VllmBackend) -> None:
    openai_client = client(proxy)
    messages = list(MESSAGES)
    for turn in range(3):
        raw = openai_client.chat.completions.with_raw_response.create(
            model=vllm_backend.model, messages=messages, max_tokens=8, extra_body={"program_id": "oa-sync"})
        assert raw.headers["x-program-id"] == "oa-sync"
        completion = raw.parse()
        assert completion.usage is not None and completion.usage.completion_tokens <= 8
        messages += [{"role": "assistant", "content": completion.choices[0].message.content or ""},
                     {"role": "user", "content": f"And turn {turn + 1}?"}]
    seen = program(proxy, "oa-sync")
    assert seen is not None and seen["steps_done"] == 3 and seen["phase"] == "acting"
    # The later turns extend the first one's prompt: vLLM served part of them from cache.
    assert completion.usage.prompt_tokens_details is not None
    assert completion.usage.prompt_tokens_details.cached_tokens > 0
    release(proxy, "oa-sync")
    assert program(proxy, "oa-sync") is None


def test_sync_stream_with_program_id_header_carries_usage(proxy: ServeProcess, vllm_backend: VllmBackend) -> None:
    stream = client(proxy).chat.completions.create(
        model=vllm_backend.model, messages=MESSAGES, max_tokens=8, stream=True,
        extra_body={"ignore_eos": True}, extra_headers={"X-Program-Id": "oa-stream"})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text, "a stream through the proxy delivers the generated text"
    # The proxy asks vLLM for usage on every stream; the client sees it as the last chunk.
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 8
    assert program(proxy, "oa-stream")["steps_done"] == 1
    release(proxy, "oa-stream")


def test_legacy_completions_and_release_in_the_last_request(proxy: ServeProcess,
                                                             vllm_backend: VllmBackend) -> None:
    completion = client(proxy).completions.create(
        model=vllm_backend.model, prompt="Once upon a time", max_tokens=4,
        extra_body={"program_id": "oa-legacy", "program_release": True})
    assert completion.usage is not None and completion.usage.completion_tokens <= 4
    assert program(proxy, "oa-legacy") is None  # released as the response completed


def test_async_client_many_programs_at_once(proxy: ServeProcess, vllm_backend: VllmBackend) -> None:
    async def agent(openai_client: openai.AsyncOpenAI, index: int) -> int:
        program_id = f"oa-async-{index}"
        messages = [{"role": "user", "content": f"Agent {index}: list three prime numbers."}]
        for turn in range(2):
            if index % 2:
                stream = await openai_client.chat.completions.create(
                    model=vllm_backend.model, messages=messages, max_tokens=6, stream=True,
                    extra_body={"program_id": program_id})
                content = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
            else:
                completion = await openai_client.chat.completions.create(
                    model=vllm_backend.model, messages=messages, max_tokens=6,
                    extra_headers={"X-Program-Id": program_id})
                content = completion.choices[0].message.content or ""
            messages += [{"role": "assistant", "content": content}, {"role": "user", "content": "More."}]
            await asyncio.sleep(0.05)  # the "tool call"
        async with httpx.AsyncClient() as http:
            response = await http.post(f"{proxy.url}/programs/release", json={"program_id": program_id})
        return response.status_code

    async def scenario() -> list[int]:
        async with openai.AsyncOpenAI(base_url=proxy.url + "/v1", api_key="unused", max_retries=0,
                                      timeout=60) as openai_client:
            return await asyncio.gather(*(agent(openai_client, i) for i in range(6)))

    assert asyncio.run(scenario()) == [200] * 6
    programs = httpx.get(f"{proxy.url}/programs", timeout=10).json()["programs"]
    assert not [p for p in programs if p["program_id"].startswith("oa-async-")]


def test_proxy_400s_are_bad_request_errors(proxy: ServeProcess, vllm_backend: VllmBackend) -> None:
    openai_client = client(proxy)
    with pytest.raises(openai.BadRequestError) as too_long:
        openai_client.chat.completions.create(model=vllm_backend.model, messages=MESSAGES,
                                              extra_body={"program_id": "x" * 300})
    assert too_long.value.status_code == 400 and "1 to 256 characters" in too_long.value.message
    with pytest.raises(openai.BadRequestError) as conflict:
        openai_client.chat.completions.create(model=vllm_backend.model, messages=MESSAGES,
                                              extra_body={"program_id": "a"}, extra_headers={"X-Program-Id": "b"})
    assert "differs from X-Program-Id" in conflict.value.message
    assert program(proxy, "a") is None and program(proxy, "b") is None  # nothing registered


def test_vllm_errors_pass_through_as_the_clients_types(proxy: ServeProcess, vllm_backend: VllmBackend) -> None:
    openai_client = client(proxy)
    too_long = [{"role": "user", "content": "lightning " * (vllm_backend.max_model_len * 2)}]
    with pytest.raises(openai.BadRequestError) as over_limit:  # vLLM's own 400, passed through
        openai_client.chat.completions.create(model=vllm_backend.model, messages=too_long,
                                              extra_body={"program_id": "oa-too-long"})
    assert over_limit.value.status_code == 400
    with pytest.raises(openai.NotFoundError):  # vLLM's 404 for a model it does not serve
        openai_client.chat.completions.create(model="no-such-model", messages=MESSAGES,
                                              extra_body={"program_id": "oa-no-model"})
    # A program whose only request failed never completed a step: nothing of it remains.
    assert program(proxy, "oa-too-long") is None and program(proxy, "oa-no-model") is None


def test_a_held_request_times_out_as_503_with_retry_after(vllm_backend: VllmBackend, tmp_path: Path) -> None:
    # lambda_max = 0.15 of 16,384 tokens: room for one ~2,300-token program; a second does not fit
    # beside it and is held, for at most --max-hold-s.
    options = ("--option", "decay_base=1", "--option", "lambda_max=0.15", "--option", "lambda_min=0.15")
    with thunder_serve([vllm_backend.url], "--policy", "thunder-paper", "--max-hold-s", "1", *options,
                       workdir=tmp_path) as held_proxy:
        openai_client = client(held_proxy)
        big = [{"role": "user", "content": " ".join(f"w{i}" for i in range(600))}]
        openai_client.chat.completions.create(model=vllm_backend.model, messages=big, max_tokens=4,
                                              extra_body={"program_id": "big-a"})
        other = [{"role": "user", "content": " ".join(f"v{i}" for i in range(600))}]
        with pytest.raises(openai.InternalServerError) as timed_out:
            openai_client.chat.completions.create(model=vllm_backend.model, messages=other, max_tokens=4,
                                                  extra_body={"program_id": "big-b"})
        error = timed_out.value
        assert error.status_code == 503 and error.response.headers["retry-after"] == "1"
        assert isinstance(error.body, dict) and error.body["type"] == "hold_timeout"
        assert program(held_proxy, "big-b") is None  # it never completed a step: dropped
        release(held_proxy, "big-a")
        # Once the first program is gone, the second fits.
        done = openai_client.chat.completions.create(model=vllm_backend.model, messages=other, max_tokens=4,
                                                     extra_body={"program_id": "big-b", "program_release": True})
        assert done.usage is not None
        assert httpx.get(held_proxy.url + "/programs", timeout=10).json()["programs"] == []
