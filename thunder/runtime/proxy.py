"""The OpenAI-compatible endpoints: admit a request through the policy, forward bytes.

Per request: read the body (bounded), parse it once (``payload.prepare``),
report it to the ``LiveCluster`` (which routes it: go now, or wait for a
Restore), forward the bytes to the chosen backend, and pass the response
through chunk by chunk while keeping only its tail, where ``usage`` is. No
per-request logging: a busy proxy would spend its time formatting lines.

Failure semantics:
* malformed or oversize request: 4xx JSON error, nothing registered;
* a new program while ``max_programs`` are tracked: 429 with ``Retry-After``;
* no healthy backend: 503 JSON error at once; held too long: 503 JSON error;
* backend refuses the connection: it is marked unhealthy and the request is
  routed again (its program goes wherever the policy now says);
* backend answers an error: passed through, the request counts as failed;
* client disconnects (the handler is cancelled) or the backend breaks off
  mid-response: the upstream request is closed and the program returns to
  ACTING (or is dropped if it never completed a step).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Callable

import aiohttp
from aiohttp import web

from thunder.core.program import BackendId
from thunder.runtime.admission import Admission, HoldTimeout, Rejected, program_cap_refusal
from thunder.runtime.cluster import LiveCluster
from thunder.runtime.engines.vllm import BackendClient
from thunder.runtime.payload import PROGRAM_FIELD, BadRequest, PreparedRequest, Tail, find_usage, prepare
from thunder.runtime.records import Histogram
from thunder.runtime.state import RELEASED, SHUTTING_DOWN, Ticket

# Proxy overhead histogram bounds (s): sub-millisecond is the target.
OVERHEAD_BOUNDS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1)
_FORWARDED_HEADERS = ("Authorization", "X-Request-Id")
_TRUE = ("1", "true", "yes")


# Seconds a client is told to wait before retrying a 503 (``Retry-After``): about
# one backend poll, after which health and the policy's view have moved on.
RETRY_AFTER_S = 1


def error_response(status: int, message: str, kind: str, param: str | None = None) -> web.Response:
    """An OpenAI-style JSON error body; a 503 also says when to retry (``Retry-After``)."""
    body = {"error": {"message": message, "type": kind, "param": param, "code": status}}
    headers = {"Retry-After": str(RETRY_AFTER_S)} if status == 503 else None
    return web.Response(status=status, text=json.dumps(body), content_type="application/json", headers=headers)


class BackendRefused(Exception):
    """No response byte arrived: the backend refused the connection (``down``),
    or a kept-alive connection closed under us (worth one more try)."""

    def __init__(self, message: str, down: bool) -> None:
        super().__init__(message)
        self.down = down


class Proxy:
    def __init__(self, cluster: LiveCluster, admission: Admission, backends: list[BackendClient],
                 max_body_bytes: int, max_programs: int | None = None, retry_after_s: float = 5.0) -> None:
        self.cluster = cluster
        self.admission = admission
        self.backends = backends
        self.max_body_bytes = max_body_bytes
        self.max_programs = max_programs
        self.retry_after_s = retry_after_s
        self.overhead = Histogram(OVERHEAD_BOUNDS_S)
        # Told about resources a request attaches to its program (``tool_resources``).
        self.on_tool_resources: Callable[[str, tuple[tuple[str, str], ...]], None] = lambda pid, found: None

    async def completions(self, request: web.Request) -> web.StreamResponse:
        """POST /v1/chat/completions and /v1/completions, streaming or not."""
        started = asyncio.get_running_loop().time()
        try:
            raw = await self._read_body(request)
            headers = request.headers
            prepared = prepare(raw, headers.get("X-Program-Id"),
                               headers.get("X-Program-Release", "").lower() in _TRUE,
                               headers.get("X-Program-Group"))
        except BadRequest as exc:
            return error_response(exc.status, str(exc), "invalid_request_error", exc.param)
        if not self.cluster.any_healthy():
            return self._no_backend()
        refusal = program_cap_refusal(self.cluster, prepared.program_id, self.max_programs)
        if refusal is not None:
            self.cluster.records.outcomes["too_many_programs"] += 1
            response = error_response(429, refusal, "too_many_programs", PROGRAM_FIELD)
            response.headers["Retry-After"] = str(max(1, round(self.retry_after_s)))
            return response
        if prepared.tool_resources and prepared.program_id is not None:
            self.on_tool_resources(prepared.program_id, prepared.tool_resources)
        ticket = self.cluster.request_ready(prepared.program_id, prepared.estimate_tokens,
                                            request.headers.get("X-Program-Tool"), group_id=prepared.group_id,
                                            max_tokens=prepared.max_tokens)
        try:
            return await self._serve(request, ticket, prepared, started)
        finally:
            # Every way out that did not complete the request (cancellation included) frees it.
            self.cluster.request_failed(ticket, "aborted")

    async def _read_body(self, request: web.Request) -> bytes:
        if request.content_length is not None and request.content_length > self.max_body_bytes:
            raise BadRequest(f"request body of {request.content_length} bytes exceeds the limit of "
                             f"{self.max_body_bytes} bytes", status=413)
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise BadRequest(f"request body exceeds the limit of {self.max_body_bytes} bytes", status=413) from None

    def _no_backend(self) -> web.Response:
        reasons = "; ".join(f"{b.url}: {b.reason}" for b in self.cluster.backends)
        return error_response(503, f"no healthy backend ({reasons})", "no_backend")

    async def _serve(self, request: web.Request, ticket: Ticket, prepared: PreparedRequest,
                     started: float) -> web.StreamResponse:
        # What the proxy itself adds before forwarding: read, parse, route (held time excluded).
        self.overhead.observe(asyncio.get_running_loop().time() - started)
        for _ in range(len(self.backends) + 1):
            try:
                backend_id = await self.admission.wait(ticket)
            except HoldTimeout as exc:
                self.cluster.request_failed(ticket, "hold_timeout")
                return error_response(503, str(exc), "hold_timeout")
            except Rejected as exc:
                status, kind = {RELEASED: (409, "program_released"),
                                SHUTTING_DOWN: (503, "shutting_down")}.get(str(exc), (503, "rejected"))
                return error_response(status, f"request not served: {exc}", kind)
            try:
                return await self._forward(request, ticket, prepared, backend_id)
            except BackendRefused as exc:
                if exc.down:
                    self.cluster.update_backend(backend_id, self.backends[backend_id].mark_down(str(exc)))
                if not self.cluster.any_healthy():
                    self.cluster.request_failed(ticket, "rejected")
                    return self._no_backend()
                if not self.cluster.requeue(ticket):
                    self.cluster.request_failed(ticket, "rejected")
                    return error_response(409, f"request not served: {RELEASED}", "program_released")
        self.cluster.request_failed(ticket, "upstream_error")
        return error_response(502, "every backend tried refused the connection", "backend_unreachable")

    async def _forward(self, request: web.Request, ticket: Ticket, prepared: PreparedRequest,
                       backend_id: BackendId) -> web.StreamResponse:
        backend = self.backends[backend_id]
        assert backend.session is not None
        headers = {"Content-Type": "application/json"}
        for name in _FORWARDED_HEADERS:
            value = request.headers.get(name)
            if value is not None:
                headers[name] = value
        try:
            upstream = await backend.session.post(backend.url_for(request.path_qs), data=prepared.body,
                                                  headers=headers)
        except (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError) as exc:
            raise BackendRefused(f"{type(exc).__name__}: {exc}",
                                 down=isinstance(exc, aiohttp.ClientConnectorError)) from None
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            self.cluster.request_failed(ticket, "upstream_error")
            return error_response(504 if isinstance(exc, asyncio.TimeoutError) else 502,
                                  f"backend {backend.url} failed: {type(exc).__name__}: {exc}", "backend_error")
        async with upstream:
            if upstream.status != 200:
                body = await upstream.read()
                self.cluster.request_failed(ticket, "upstream_error")
                return web.Response(status=upstream.status, body=body,
                                    content_type=upstream.content_type or "application/json")
            return await self._pass_through(request, ticket, prepared, upstream)

    async def _pass_through(self, request: web.Request, ticket: Ticket, prepared: PreparedRequest,
                            upstream: aiohttp.ClientResponse) -> web.StreamResponse:
        headers = {"Content-Type": upstream.headers.get("Content-Type", "application/json"),
                   "X-Program-Id": ticket.program_id}
        tail = Tail()
        response: web.StreamResponse | None = None
        try:
            chunk = await upstream.content.readany()
            self.cluster.first_token(ticket)
            if not prepared.stream and upstream.content.at_eof():
                # The whole body came in one read (the usual non-streaming case): one
                # response, one send, instead of headers and body separately.
                self.cluster.request_done(ticket, find_usage(chunk), release=prepared.release)
                return web.Response(body=chunk, headers=headers)
            response = web.StreamResponse(headers=headers)
            if not prepared.stream and upstream.content_length is not None:
                response.content_length = upstream.content_length
            await response.prepare(request)
            while chunk:
                tail.add(chunk)
                if upstream.content.at_eof():
                    break  # the last chunk goes out with the end of the response, in one send
                await response.write(chunk)
                chunk = await upstream.content.readany()
            await response.write_eof(chunk)
        except ConnectionResetError:  # first: aiohttp's client-reset error is also a ClientError
            self.cluster.request_failed(ticket, "aborted")  # the client went away mid-response
            return response or web.Response(status=499)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            self.cluster.request_failed(ticket, "upstream_error")
            if response is None:
                return error_response(502, f"backend broke off its response: {type(exc).__name__}",
                                      "backend_error")
            # Mid-response: the client must see a broken response, not a short one
            # that looks complete.
            _drop_connection(request)
            return response
        self.cluster.request_done(ticket, find_usage(tail.data()), release=prepared.release)
        return response

    async def models(self, request: web.Request) -> web.StreamResponse:
        """GET /v1/models from the first healthy backend, as it answered."""
        for backend_id, state in enumerate(self.cluster.backends):
            if not state.healthy:
                continue
            backend = self.backends[backend_id]
            assert backend.session is not None
            try:
                async with backend.session.get(backend.url + request.path_qs) as upstream:
                    body = await upstream.read()
                    return web.Response(status=upstream.status, body=body,
                                        content_type=upstream.content_type or "application/json")
            except (aiohttp.ClientError, asyncio.TimeoutError):
                continue
        return self._no_backend()


def _drop_connection(request: web.Request) -> None:
    transport: Any = request.transport
    if transport is not None:
        transport.close()
