"""``thunder run``: replay a trace against an OpenAI-compatible endpoint, closed loop.

Each program is an asyncio task that, per step, sends ``/v1/completions``
with a prompt of token ids whose length is the trace's ``prompt_tokens``
(times ``token_scale``): the previous prompt, the model's actual reply, then
a tool observation of seeded token ids filling the rest. Programs with the
same ``shared_prefix_id`` start with the same ids, so prefix caching across
programs is exercised as in production. The output length is forced
(``max_tokens`` with ``ignore_eos``), the tool time is slept (times
``time_scale``), and the program is released at the end.

Token ids make the prompt length exact (no chat template, no re-tokenising).
The reply's ids come from the response (``return_token_ids``, a vLLM
extension); a server that does not return them gets seeded stand-ins, which
costs the reply's tokens their cache hit (counted in ``synthetic_reply_steps``).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import aiohttp
import numpy as np

from thunder.traces import TraceProgram


class ReplayError(RuntimeError):
    """The endpoint or the trace cannot be replayed as asked."""


@dataclass(frozen=True, slots=True)
class ReplayConfig:
    endpoint: str
    parallel: int = 8
    time_scale: float = 1.0  # multiplies every tool time
    token_scale: float = 1.0  # multiplies every token count
    model: str | None = None  # None: the first model the endpoint lists
    max_model_len: int | None = None  # None: what the endpoint reports, if it does
    request_timeout_s: float = 600.0
    seed: int = 0
    release: bool = True
    token_id_range: tuple[int, int] = (100, 4000)  # ids for synthetic tokens; must be in the vocabulary


@dataclass(slots=True)
class ReplayResult:
    steps: list[dict[str, Any]] = field(default_factory=list)
    programs: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    synthetic_reply_steps: int = 0
    duration_s: float = 0.0
    model: str = ""


def scaled(tokens: int, scale: float) -> int:
    return max(1, int(round(tokens * scale)))


class TokenIds:
    """Seeded synthetic token ids: shared prefixes, tool observations, stand-in replies."""

    def __init__(self, seed: int, id_range: tuple[int, int]) -> None:
        self.seed = seed
        self.low, self.high = id_range

    def draw(self, key: str, count: int) -> list[int]:
        digest = hashlib.sha256(f"{self.seed}:{key}".encode()).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        return rng.integers(self.low, self.high, size=count).tolist()


def check_fits(programs: Sequence[TraceProgram], config: ReplayConfig, max_model_len: int | None) -> None:
    """Fail before sending anything if a scaled step cannot fit the model's context."""
    if max_model_len is None:
        return
    for program in programs:
        for index, step in enumerate(program.steps):
            need = scaled(step.prompt_tokens, config.token_scale) + scaled(step.output_tokens, config.token_scale)
            if need > max_model_len:
                raise ReplayError(
                    f"program {program.program_id} step {index}: {need} tokens after --token-scale "
                    f"{config.token_scale} exceed the model's {max_model_len}-token context; use a smaller "
                    "--token-scale")


class Replayer:
    def __init__(self, config: ReplayConfig, session: aiohttp.ClientSession) -> None:
        self.config = config
        self.session = session
        self.ids = TokenIds(config.seed, config.token_id_range)
        self.result = ReplayResult()
        self.start = 0.0
        self.model = config.model or ""

    def now(self) -> float:
        return time.perf_counter() - self.start

    async def discover(self) -> int | None:
        """The model name and its context length from ``/v1/models``."""
        try:
            async with self.session.get(f"{self.config.endpoint}/v1/models") as response:
                body = await response.json(content_type=None)
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            raise ReplayError(f"{self.config.endpoint}/v1/models: {exc}") from exc
        models = body.get("data") or []
        if not models:
            raise ReplayError(f"{self.config.endpoint}/v1/models lists no model")
        chosen = next((m for m in models if m.get("id") == self.config.model), models[0])
        self.model = self.model or chosen["id"]
        self.result.model = self.model
        return self.config.max_model_len or chosen.get("max_model_len")

    async def run(self, programs: Sequence[TraceProgram], on_step: Callable[[], None] | None = None) -> None:
        queue: asyncio.Queue[TraceProgram] = asyncio.Queue()
        for program in programs:
            queue.put_nowait(program)
        self.start = time.perf_counter()

        async def worker() -> None:
            while not queue.empty():
                program = queue.get_nowait()
                await self.run_program(program, on_step)

        await asyncio.gather(*(worker() for _ in range(min(self.config.parallel, len(programs)))))
        self.result.duration_s = self.now()

    async def run_program(self, program: TraceProgram, on_step: Callable[[], None] | None) -> None:
        cfg = self.config
        started = self.now()
        context: list[int] = self._fresh_context(program, 0)
        steps_done = 0
        try:
            for index, step in enumerate(program.steps):
                if step.context_reset:
                    context = self._fresh_context(program, index)
                target = scaled(step.prompt_tokens, cfg.token_scale)
                if target > len(context):
                    context = context + self.ids.draw(f"{program.program_id}:obs:{index}", target - len(context))
                prompt = context[:target] if target < len(context) else context
                reply = await self._call(program, index, prompt, scaled(step.output_tokens, cfg.token_scale),
                                         step.tool, step.tool_s)
                context = prompt + reply
                steps_done += 1
                if on_step is not None:
                    on_step()
                if index < len(program.steps) - 1 and step.tool_s:
                    await asyncio.sleep(step.tool_s * cfg.time_scale)
        except ReplayError as exc:
            self.result.failures.append(f"program {program.program_id}: {exc}")
        finally:
            if cfg.release:
                await self._release(program.program_id)
            self.result.programs.append({"program_id": program.program_id, "arrived_s": started,
                                         "started_s": started, "finished_s": self.now(), "steps": steps_done})

    def _fresh_context(self, program: TraceProgram, index: int) -> list[int]:
        shared = scaled(program.shared_prefix_tokens, self.config.token_scale) if program.shared_prefix_id else 0
        return self.ids.draw(f"shared:{program.shared_prefix_id}", shared) if shared else []

    async def _call(self, program: TraceProgram, index: int, prompt: list[int], max_tokens: int,
                    tool: str | None, tool_s: float | None) -> list[int]:
        body = {"model": self.model, "prompt": prompt, "max_tokens": max_tokens, "ignore_eos": True,
                "temperature": 0.0, "return_token_ids": True, "program_id": program.program_id}
        ready = self.now()
        headers = {"X-Program-Id": program.program_id}
        if tool:
            headers["X-Program-Tool"] = tool  # lets the proxy keep per-tool statistics (Continuum)
        try:
            async with self.session.post(f"{self.config.endpoint}/v1/completions", json=body,
                                         headers=headers) as response:
                payload = await response.json(content_type=None)
                status = response.status
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            raise ReplayError(f"step {index}: request failed: {exc!r}") from exc
        done = self.now()
        usage = payload.get("usage") if isinstance(payload, dict) else None
        if status != 200 or not usage:
            raise ReplayError(f"step {index}: HTTP {status}: {str(payload)[:300]}")
        choice = (payload.get("choices") or [{}])[0]
        reply = choice.get("token_ids")
        if not isinstance(reply, list) or len(reply) != usage.get("completion_tokens"):
            self.result.synthetic_reply_steps += 1
            reply = self.ids.draw(f"{program.program_id}:reply:{index}", int(usage.get("completion_tokens", 0)))
        details = usage.get("prompt_tokens_details") or {}
        self.result.steps.append({
            "program_id": program.program_id, "step": index, "backend": None, "ready_s": ready,
            "dispatched_s": ready, "engine_arrival_s": None, "admitted_s": None, "first_token_s": None, "done_s": done,
            "prompt_tokens": int(usage.get("prompt_tokens", len(prompt))),
            "cached_tokens": int(details.get("cached_tokens") or 0), "recompute_tokens": None,
            "output_tokens": int(usage.get("completion_tokens", 0)), "preemptions": None,
            "tool": tool, "tool_s": tool_s,
        })
        return [int(t) for t in reply]

    async def _release(self, program_id: str) -> None:
        # A plain vLLM server has no such route (404): nothing to release there.
        try:
            async with self.session.post(f"{self.config.endpoint}/programs/{program_id}/release") as response:
                await response.read()
        except (aiohttp.ClientError, asyncio.TimeoutError):
            pass


async def replay(programs: Sequence[TraceProgram], config: ReplayConfig,
                 on_step: Callable[[], None] | None = None) -> ReplayResult:
    """Replay ``programs`` closed loop with ``config.parallel`` at a time."""
    timeout = aiohttp.ClientTimeout(total=config.request_timeout_s)
    connector = aiohttp.TCPConnector(limit=max(config.parallel * 2, 8))
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        replayer = Replayer(config, session)
        check_fits(programs, config, await replayer.discover())
        await replayer.run(programs, on_step)
        return replayer.result
