"""Sandbox endpoints of ``thunder serve``: declare, list and wait for a program's sandboxes.

``POST /programs/{id}/sandboxes`` declares one (JSON body, every field
optional: ``setup_command``, ``process_command``, ``disk_quota_bytes``,
``expected_setup_s``, ``wait_for_port``, ``needed`` (default true: the
program wants it now, so every policy prepares it at once; false: it is
announced, and only ``program-aware`` prepares it ahead while the program
waits in the queue), ``wait`` (answer once it is ready or failed)); 201 with
``{sandbox_id, path, port, state, ...}``. ``GET /programs/{id}/sandboxes``
lists them and the resources attached to the program. ``POST
/programs/{id}/sandboxes/wait {"timeout_s"}`` says the program needs them now
and answers when none is still being prepared (``ready`` tells whether all
are ready).
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from thunder.runtime.payload import PROGRAM_FIELD
from thunder.runtime.proxy import error_response
from thunder.runtime.sandboxes.provider import SandboxSpec
from thunder.runtime.sandboxes.state import SandboxState, describe_sandbox
from thunder.runtime.tool_cluster import LiveTools

_MAX_WAIT_S = 3600.0


class BadSandbox(ValueError):
    pass


def sandbox_spec(body: dict[str, Any], default_quota_bytes: int) -> SandboxSpec:
    """The spec a request body asks for (``BadSandbox`` with the reason if malformed)."""
    known = {"setup_command", "process_command", "disk_quota_bytes", "expected_setup_s", "wait_for_port",
             "needed", "wait"}
    unknown = sorted(set(body) - known)
    if unknown:
        raise BadSandbox(f"unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    for name in ("setup_command", "process_command"):
        if body.get(name) is not None and (not isinstance(body[name], str) or not body[name].strip()):
            raise BadSandbox(f"{name} must be a non-empty string")
    quota = body.get("disk_quota_bytes", default_quota_bytes)
    if isinstance(quota, bool) or not isinstance(quota, int) or quota < 0:
        raise BadSandbox("disk_quota_bytes must be an integer >= 0")
    setup_s = body.get("expected_setup_s", 0.0)
    if isinstance(setup_s, bool) or not isinstance(setup_s, (int, float)) or setup_s < 0:
        raise BadSandbox("expected_setup_s must be a number >= 0")
    for name in ("wait_for_port", "needed", "wait"):
        if not isinstance(body.get(name, False), bool):
            raise BadSandbox(f"{name} must be true or false")
    if body.get("wait_for_port") and not body.get("process_command"):
        raise BadSandbox("wait_for_port needs a process_command")
    return SandboxSpec(setup_command=body.get("setup_command"), process_command=body.get("process_command"),
                       disk_quota_bytes=quota, expected_setup_s=float(setup_s),
                       wait_for_port=bool(body.get("wait_for_port", False)))


async def _json_object(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadSandbox("body must be JSON") from None
    if not isinstance(body, dict):
        raise BadSandbox("body must be a JSON object")
    return body


class SandboxEndpoints:
    def __init__(self, live_tools: LiveTools, default_quota_bytes: int) -> None:
        self.live_tools = live_tools
        self.cluster = live_tools.cluster
        self.tools = live_tools.host
        self.default_quota_bytes = default_quota_bytes

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/programs/{program_id}/sandboxes/wait", self.wait),
                web.post("/programs/{program_id}/sandboxes", self.create),
                web.get("/programs/{program_id}/sandboxes", self.list)]

    async def create(self, request: web.Request) -> web.Response:
        program_id = request.match_info["program_id"]
        try:
            body = await _json_object(request)
            spec = sandbox_spec(body, self.default_quota_bytes)
        except BadSandbox as exc:
            return error_response(400, str(exc), "invalid_request_error")
        if self.tools.closing:
            return error_response(503, "the proxy is shutting down", "shutting_down")
        sandbox = self.tools.declare(program_id, spec, self.cluster.clock(), needed=body.get("needed", True))
        self.live_tools.step()  # the policy decides now, not at the next tick
        if body.get("wait"):
            await self.tools.wait_settled(program_id, self.tools.config.setup_timeout_s + 30)
        status = 500 if sandbox.state is SandboxState.FAILED else 201
        return web.json_response(describe_sandbox(sandbox), status=status)

    async def list(self, request: web.Request) -> web.Response:
        program_id = request.match_info["program_id"]
        self.tools.touch(program_id, self.cluster.clock())
        found = self.tools.describe(program_id)
        if found is None:
            return error_response(404, f"program {program_id!r} has no sandboxes", "not_found", PROGRAM_FIELD)
        return web.json_response(found)

    async def wait(self, request: web.Request) -> web.Response:
        program_id = request.match_info["program_id"]
        try:
            body = await _json_object(request)
            timeout_s = body.get("timeout_s", 60.0)
            if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or timeout_s < 0:
                raise BadSandbox("timeout_s must be a number >= 0")
        except BadSandbox as exc:
            return error_response(400, str(exc), "invalid_request_error")
        now_s = self.cluster.clock()
        self.tools.touch(program_id, now_s)
        if not self.tools.need(program_id, now_s):
            return error_response(404, f"program {program_id!r} has no sandboxes", "not_found", PROGRAM_FIELD)
        self.live_tools.step()
        settled = await self.tools.wait_settled(program_id, min(float(timeout_s), _MAX_WAIT_S))
        found = self.tools.describe(program_id) or {"program_id": program_id, "sandboxes": [], "attached": []}
        ready = settled and bool(found["sandboxes"]) and all(s["state"] == "ready" for s in found["sandboxes"])
        return web.json_response({**found, "ready": ready}, status=200 if settled else 504)


async def _sandboxes_off(request: web.Request) -> web.Response:
    return error_response(404, "sandboxes are off: start thunder serve with --sandbox-root", "not_found")


def disabled_routes() -> list[web.RouteDef]:
    """The same paths, answering why there is nothing there."""
    return [web.route("*", "/programs/{program_id}/sandboxes/wait", _sandboxes_off),
            web.route("*", "/programs/{program_id}/sandboxes", _sandboxes_off)]
