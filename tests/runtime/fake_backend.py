"""An in-process fake of a vLLM OpenAI server, and a helper that runs the proxy.

Imported by name from the runtime tests (no conftest.py). The fake answers
``/v1/chat/completions`` and ``/v1/completions`` (streaming or not) with
``usage`` including ``prompt_tokens_details.cached_tokens``, ``/v1/models``,
``/tokenize`` and a ``/metrics`` page with ``vllm:cache_config_info``.

Token rules, simple enough to compute in a test: a prompt has
``len(prompt text) // 4`` tokens (at least 1); the completion has
``max_tokens`` tokens (default 4); cached tokens are the longest earlier
prompt that is a prefix of this one, in whole blocks.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from aiohttp import web

from thunder.policies.registry import make_policy
from thunder.runtime.config import ServeConfig
from thunder.runtime.server import ProxyServer


def prompt_text(body: dict[str, Any]) -> str:
    if body.get("messages") is not None:
        return "".join(str(m.get("content", "")) for m in body["messages"])
    return str(body.get("prompt", ""))


def _invalid(body: Any) -> str | None:
    """Why vLLM would refuse this body (the few fields the fake reads), or None."""
    if not isinstance(body, dict):
        return "body must be an object"
    messages = body.get("messages")
    if messages is not None and not (isinstance(messages, list) and all(isinstance(m, dict) for m in messages)):
        return "messages must be a list of objects"
    max_tokens = body.get("max_tokens")
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int)
                                   or not 0 < max_tokens <= 4096):
        return "max_tokens must be an integer in 1..4096"
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        return "stream_options must be an object"
    return None


class FakeBackend:
    """A vLLM stand-in. ``delay_s`` before the first byte, ``chunk_delay_s`` between stream chunks."""

    def __init__(self, num_gpu_blocks: int = 1024, block_size: int = 16, delay_s: float = 0.0,
                 chunk_delay_s: float = 0.0, metrics: bool = True, cache_info: bool = True,
                 break_after: int | None = None, usage_chunk: bool = True, done_event: bool = True) -> None:
        self.num_gpu_blocks = num_gpu_blocks
        self.block_size = block_size
        self.delay_s = delay_s
        self.chunk_delay_s = chunk_delay_s
        self.metrics_enabled = metrics
        self.cache_info = cache_info  # False: a /metrics page without vllm:cache_config_info
        self.break_after = break_after  # streams: drop the connection after this many chunks
        self.usage_chunk = usage_chunk  # False: streams end without a usage event, even when asked for one
        self.done_event = done_event  # False: streams end without ``data: [DONE]``
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.active = 0
        self.cancelled = 0
        self.completed = 0
        self.prompts: list[str] = []
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, port: int = 0) -> str:
        app = web.Application()
        app.add_routes([web.post("/v1/chat/completions", self.completion),
                        web.post("/v1/completions", self.completion),
                        web.get("/v1/models", self.models), web.post("/tokenize", self.tokenize),
                        web.get("/metrics", self.metrics)])
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        await web.SockSite(self._runner, sock).start()
        self.port = sock.getsockname()[1]
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- token arithmetic ----------------------------------------------------------

    def usage(self, body: dict[str, Any]) -> dict[str, Any]:
        text = prompt_text(body)
        prompt = max(1, len(text) // 4)
        best = max((len(p) for p in self.prompts if text.startswith(p)), default=0) // 4
        self.prompts.append(text)
        cached = min(best, prompt) // self.block_size * self.block_size
        completion = int(body.get("max_tokens") or 4)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
                "prompt_tokens_details": {"cached_tokens": cached}}

    # -- handlers --------------------------------------------------------------------

    async def completion(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        problem = _invalid(body)
        if problem is not None:  # as vLLM does: a 400 naming the field, never a crash
            return web.json_response({"error": {"message": problem, "type": "BadRequestError", "code": 400}},
                                     status=400)
        self.bodies.append(body)
        self.headers.append(dict(request.headers))
        self.active += 1
        try:
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            usage = self.usage(body)
            if body.get("stream"):
                return await self._stream(request, body, usage)
            text = "x" * usage["completion_tokens"]
            choice = ({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length"}
                      if "messages" in body else {"index": 0, "text": text, "finish_reason": "length"})
            return web.json_response({"id": "fake-1", "object": "chat.completion", "created": int(time.time()),
                                      "model": body.get("model", "fake"), "choices": [choice], "usage": usage})
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.active -= 1
            self.completed += 1

    async def _stream(self, request: web.Request, body: dict[str, Any], usage: dict[str, Any]) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for index in range(usage["completion_tokens"]):
            if index == self.break_after and request.transport is not None:
                request.transport.close()  # a crash mid-response
                return response
            chunk = {"id": "fake-1", "object": "chat.completion.chunk", "model": "fake",
                     "choices": [{"index": 0, "delta": {"content": f"t{index}"}, "finish_reason": None}]}
            await response.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            if self.chunk_delay_s:
                await asyncio.sleep(self.chunk_delay_s)
        if self.usage_chunk and (body.get("stream_options") or {}).get("include_usage"):
            final = {"id": "fake-1", "object": "chat.completion.chunk", "model": "fake", "choices": [],
                     "usage": usage}
            await response.write(b"data: " + json.dumps(final).encode() + b"\n\n")
        if self.done_event:
            await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fake-model", "object": "model"}]})

    async def tokenize(self, request: web.Request) -> web.Response:
        body = await request.json()
        count = max(1, len(prompt_text(body)) // 4)
        return web.json_response({"count": count, "max_model_len": 4096, "tokens": list(range(count))})

    async def metrics(self, request: web.Request) -> web.Response:
        if not self.metrics_enabled:
            return web.Response(status=404)
        queries = sum(len(p) // 4 for p in self.prompts)
        lines = [
            "# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig",
            "# TYPE vllm:cache_config_info gauge",
        ]
        if self.cache_info:
            lines.append(f'vllm:cache_config_info{{block_size="{self.block_size}",cache_dtype="auto",'
                         f'enable_prefix_caching="True",num_gpu_blocks="{self.num_gpu_blocks}",engine="0"}} 1.0')
        lines += [
            f'vllm:num_requests_running{{engine="0",model_name="fake"}} {float(self.active)}',
            'vllm:num_requests_waiting{engine="0",model_name="fake"} 0.0',
            'vllm:kv_cache_usage_perc{engine="0",model_name="fake"} 0.25',
            f'vllm:prefix_cache_queries_total{{engine="0",model_name="fake"}} {float(queries)}',
            f'vllm:prefix_cache_hits_total{{engine="0",model_name="fake"}} {float(queries // 2)}',
            'vllm:num_preemptions_total{engine="0",model_name="fake"} 0.0',
        ]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")


@asynccontextmanager
async def running_proxy(urls: list[str], policy: str = "vllm", options: dict[str, Any] | None = None,
                        **config: Any) -> AsyncIterator[ProxyServer]:
    """A ``ProxyServer`` on a free loopback port in front of ``urls``."""
    config.setdefault("poll_interval_s", 0.05)
    config.setdefault("failures_to_down", 1)
    server = ProxyServer(ServeConfig(backends=tuple(urls), host="127.0.0.1", port=0, **config),
                         make_policy(policy, **(options or {})))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def proxy_url(server: ProxyServer) -> str:
    return f"http://127.0.0.1:{server.port}"
