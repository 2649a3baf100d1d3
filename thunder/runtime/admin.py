"""Program and operator endpoints: release, inspect, health, metrics, export.

``POST /programs/{id}/release`` and ``POST /programs/release {"program_id"}``
end a program (404 if unknown). ``GET /programs`` lists programs and
backends; ``GET /programs/{id}`` shows one; ``GET /programs/export.csv``
gives a table (``?table=steps|programs|decisions``, default steps) with the
simulator's column names; ``GET /health`` is 200 while any backend is
healthy, else 503; ``GET /metrics`` is Prometheus text.

Weight sync (RL): ``POST /admin/pause`` holds every dispatch while a trainer
updates the engines' weights (optionally waiting until the requests in flight
have finished), ``POST /admin/resume`` sends what waited, ``GET /admin/pause``
says where it stands. The hold lives in ``LiveCluster``, so held requests stay
in the policy's books and in the counters.
"""

from __future__ import annotations

import asyncio
from typing import Sequence

from aiohttp import web

from thunder.core.records import TABLES
from thunder.runtime.admission import Admission
from thunder.runtime.cluster import LiveCluster
from thunder.runtime.engines.vllm import BackendClient
from thunder.runtime.payload import PROGRAM_FIELD, BadRequest, parse_object
from thunder.runtime.proxy import Proxy, error_response
from thunder.runtime.sandboxes.tool_host import LiveToolHost
from thunder.runtime.telemetry import backend_rows, describe, render_metrics


class Admin:
    def __init__(self, cluster: LiveCluster, admission: Admission, proxy: Proxy,
                 clients: Sequence[BackendClient], policy_name: str, tools: LiveToolHost | None = None) -> None:
        self.cluster = cluster
        self.admission = admission
        self.proxy = proxy
        self.clients = clients
        self.policy_name = policy_name
        self.tools = tools  # sandboxes, when on: their numbers join /metrics

    def routes(self) -> list[web.RouteDef]:
        # export.csv and release before {program_id}: routes match in registration order
        return [
            web.post("/programs/release", self.release_by_body),
            web.get("/programs/export.csv", self.export_csv),
            web.post("/programs/{program_id}/release", self.release_by_path),
            web.get("/programs", self.list_programs),
            web.get("/programs/{program_id}", self.show_program),
            web.get("/health", self.health),
            web.get("/metrics", self.metrics),
            web.post("/admin/pause", self.pause),
            web.post("/admin/resume", self.resume),
            web.get("/admin/pause", self.pause_state),
        ]

    def _release(self, program_id: str) -> web.Response:
        if not self.cluster.release(program_id):
            return error_response(404, f"unknown program {program_id!r} (never seen, or already released)",
                                  "not_found", PROGRAM_FIELD)
        return web.json_response({"released": program_id})

    async def release_by_path(self, request: web.Request) -> web.Response:
        return self._release(request.match_info["program_id"])

    async def release_by_body(self, request: web.Request) -> web.Response:
        try:
            payload = parse_object(await request.read(), "release body")
        except BadRequest as exc:
            return error_response(400, f"{exc}; expected {{\"program_id\": \"...\"}}", "invalid_request_error")
        program_id = payload.get(PROGRAM_FIELD)
        if not isinstance(program_id, (str, int)) or isinstance(program_id, bool) or str(program_id) == "":
            return error_response(400, "release body needs a string program_id", "invalid_request_error",
                                  PROGRAM_FIELD)
        return self._release(str(program_id))

    async def list_programs(self, request: web.Request) -> web.Response:
        programs = [describe(self.cluster, pid) for pid in sorted(self.cluster.views)]
        return web.json_response({"now_s": self.cluster.clock(), "policy": self.policy_name,
                                  "programs": programs, "backends": backend_rows(self.cluster, self.clients)})

    async def show_program(self, request: web.Request) -> web.Response:
        program_id = request.match_info["program_id"]
        found = describe(self.cluster, program_id)
        if found is None:
            return error_response(404, f"unknown program {program_id!r}", "not_found", PROGRAM_FIELD)
        return web.json_response(found)

    async def export_csv(self, request: web.Request) -> web.Response:
        table = request.query.get("table", "steps")
        if table not in TABLES:
            return error_response(400, f"unknown table {table!r}; known: {', '.join(TABLES)}",
                                  "invalid_request_error", "table")
        return web.Response(text=self.cluster.records.to_csv(table), content_type="text/csv")

    async def health(self, request: web.Request) -> web.Response:
        rows = [{"backend": i, "url": b.url, "healthy": b.healthy, "reason": b.reason}
                for i, b in enumerate(self.cluster.backends)]
        healthy = sum(1 for b in self.cluster.backends if b.healthy)
        status = "ok" if healthy == len(rows) else "degraded" if healthy else "down"
        return web.json_response({"status": status, "policy": self.policy_name, "backends": rows},
                                 status=200 if healthy else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        text = render_metrics(self.cluster, self.clients, self.admission.waiting, self.proxy.overhead,
                              self.tools.stats() if self.tools is not None else None)
        return web.Response(text=text, content_type="text/plain", charset="utf-8",
                            headers={"X-Content-Format": "prometheus-text-0.0.4"})

    # -- weight sync ----------------------------------------------------------------

    def _sync_state(self) -> dict[str, object]:
        hold = self.cluster.dispatch_hold
        return {"paused": hold is not None, "reason": hold.reason if hold else None,
                "since_s": hold.since_s if hold else None,
                "held_requests": hold.held_requests if hold else 0,
                "in_flight": self.cluster.in_flight_requests(), "now_s": self.cluster.clock()}

    async def pause(self, request: web.Request) -> web.Response:
        """Hold every dispatch. Body (optional): ``{"reason": str, "wait_s": s}``; with
        ``wait_s`` the answer comes once nothing is in flight, or after ``wait_s``
        (``drained`` says which)."""
        raw = await request.read()
        try:
            payload = parse_object(raw, "pause body") if raw.strip() else {}
            reason = payload.get("reason", "weight sync")
            wait_s = payload.get("wait_s", 0)
            if not isinstance(reason, str) or not 0 < len(reason) <= 200:
                raise BadRequest("reason must be a string of 1 to 200 characters", param="reason")
            if isinstance(wait_s, bool) or not isinstance(wait_s, (int, float)) or not 0 <= wait_s <= 3600:
                raise BadRequest("wait_s must be a number of seconds in 0..3600", param="wait_s")
        except BadRequest as exc:
            return error_response(400, str(exc), "invalid_request_error", exc.param)
        started = self.cluster.hold_dispatches(reason)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while self.cluster.in_flight_requests() and loop.time() < deadline and self.cluster.dispatch_hold:
            await asyncio.sleep(0.02)
        state = self._sync_state()
        return web.json_response({**state, "started": started, "drained": state["in_flight"] == 0})

    async def resume(self, request: web.Request) -> web.Response:
        """Send what waited (each to its program's backend); 200 also when not paused."""
        hold = self.cluster.resume_dispatches()
        return web.json_response({**self._sync_state(), "resumed": hold is not None,
                                  "held_s": (hold.until_s or 0.0) - hold.since_s if hold else 0.0,
                                  "released_requests": hold.held_requests if hold else 0})

    async def pause_state(self, request: web.Request) -> web.Response:
        return web.json_response(self._sync_state())
