"""`thunder run`'s replayer against a small token-id echo server with a prefix cache."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web

from thunder.runtime.replay import ReplayConfig, ReplayError, replay
from thunder.traces import TraceProgram, TraceStep


class TokenServer:
    """Answers /v1/completions for token-id prompts: exact prompt length, cached tokens
    = longest earlier prompt+reply prefix in 16-token blocks, reply ids returned."""

    def __init__(self, return_ids: bool = True, max_model_len: int = 4096) -> None:
        self.return_ids = return_ids
        self.max_model_len = max_model_len
        self.seen: list[list[int]] = []
        self.bodies: list[dict[str, Any]] = []
        self.released: list[str] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/v1/completions", self.complete)
        app.router.add_post("/programs/{pid}/release", self.release)
        return app

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"data": [{"id": "tiny", "max_model_len": self.max_model_len}]})

    async def release(self, request: web.Request) -> web.Response:
        self.released.append(request.match_info["pid"])
        return web.json_response({"released": True})

    async def complete(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.bodies.append(body)
        prompt: list[int] = body["prompt"]
        best = 0
        for earlier in self.seen:
            common = 0
            for a, b in zip(earlier, prompt):
                if a != b:
                    break
                common += 1
            best = max(best, common)
        cached = min(best, len(prompt) - 1) // 16 * 16
        reply = [7] * body["max_tokens"]
        self.seen.append(prompt + reply)
        choice: dict[str, Any] = {"text": "x" * len(reply), "index": 0}
        if self.return_ids:
            choice["token_ids"] = reply
        return web.json_response({"choices": [choice], "usage": {
            "prompt_tokens": len(prompt), "completion_tokens": len(reply),
            "prompt_tokens_details": {"cached_tokens": cached}}})


def two_turn_program(pid: str, shared: int = 32) -> TraceProgram:
    return TraceProgram(program_id=pid, workflow="w", shared_prefix_tokens=shared, shared_prefix_id="sys",
                        steps=(TraceStep(100, 10, tool="bash", tool_s=0.01), TraceStep(150, 5)))


async def _serve(server: TokenServer):
    runner = web.AppRunner(server.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


def run_against(server: TokenServer, programs, **config):
    async def main():
        runner, url = await _serve(server)
        try:
            return await replay(programs, ReplayConfig(endpoint=url, **config))
        finally:
            await runner.cleanup()
    return asyncio.run(main())


def test_prompts_have_exact_lengths_and_extend_the_previous_turn():
    server = TokenServer()
    result = run_against(server, [two_turn_program("a"), two_turn_program("b")], parallel=2)
    assert not result.failures
    assert sorted(len(b["prompt"]) for b in server.bodies) == [100, 100, 150, 150]
    a_first, a_second = [b["prompt"] for b in server.bodies if b["program_id"] == "a"]
    assert a_second[:110] == a_first + [7] * 10  # previous prompt + the model's reply
    assert all(b["max_tokens"] in (10, 5) and b["ignore_eos"] for b in server.bodies)
    steps = {(r["program_id"], r["step"]): r for r in result.steps}
    assert steps[("a", 1)]["cached_tokens"] == 96  # 110 tokens of history, whole blocks
    assert sorted(server.released) == ["a", "b"]
    assert result.synthetic_reply_steps == 0


def test_programs_share_their_system_prompt_ids():
    server = TokenServer()
    run_against(server, [two_turn_program("a"), two_turn_program("b")], parallel=1)
    first_a, _, first_b, _ = [b["prompt"] for b in server.bodies]
    assert first_a[:32] == first_b[:32] and first_a[32:] != first_b[32:]


def test_token_scale_shrinks_counts_and_a_server_without_ids_gets_stand_ins():
    server = TokenServer(return_ids=False)
    result = run_against(server, [two_turn_program("a")], token_scale=0.5)
    assert [len(b["prompt"]) for b in server.bodies] == [50, 75]
    assert result.synthetic_reply_steps == 2


def test_a_step_too_long_for_the_model_is_refused_before_sending():
    server = TokenServer(max_model_len=120)
    with pytest.raises(ReplayError, match="program a step 1: 155 tokens"):
        run_against(server, [two_turn_program("a")])
    assert server.bodies == []
