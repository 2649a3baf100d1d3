"""Wire the live runtime together and run it: ``thunder serve``.

``ProxyServer`` owns the pieces (backend adapters, LiveCluster, admission,
the aiohttp app) and the two background loops:

* the control loop calls ``LiveCluster.tick`` every dt (the policy's
  ``config.interval_s`` if it has one, else 1 s, unless configured) on the
  event loop's clock, and reclaims programs idle past ``idle_timeout_s``;
* one poller per backend scrapes ``/metrics`` every ``poll_interval_s``;
* with sandboxes on (``sandbox_root``), one walker measures their disk every
  ``sandbox_measure_s``; at shutdown every sandbox is torn down.

Time: the cluster's clock is ``loop.time()`` minus the start time, so every
recorded time is seconds since the proxy started.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from pathlib import Path

from aiohttp import web

from thunder.core.policy import Policy
from thunder.core.policy import ToolPolicy
from thunder.core.records import TABLES
from thunder.runtime.admin import Admin
from thunder.runtime.admission import Admission
from thunder.runtime.config import ServeConfig
from thunder.runtime.engines.sglang import BACKEND_CLIENTS
from thunder.runtime.engines.vllm import BackendClient
from thunder.runtime.proxy import Proxy
from thunder.runtime.records import LiveRecords
from thunder.runtime.sandboxes.api import SandboxEndpoints, disabled_routes
from thunder.runtime.state import SHUTTING_DOWN
from thunder.runtime.tool_cluster import LiveTools, build_cluster

log = logging.getLogger(__name__)


def control_interval_s(policy: Policy, config: ServeConfig) -> float:
    if config.control_interval_s is not None:
        return config.control_interval_s
    # a policy without a periodic step still gets a 1 s tick: idle reclaim and held-request timeouts ride on it
    return policy.interval_s or 1.0


class ProxyServer:
    def __init__(self, config: ServeConfig, policy: Policy, tool_policy: ToolPolicy | None = None) -> None:
        self.config = config
        self.policy = policy
        client_type = BACKEND_CLIENTS[config.backend_kind]
        self.clients = [client_type(i, url, config) for i, url in enumerate(config.backends)]
        self.records = LiveRecords(max_records=config.max_records)
        self._t0 = 0.0
        self.admission = Admission(config.max_hold_s)
        self.cluster = build_cluster(policy, [c.state for c in self.clients], self._now, self.records, config,
                                     tool_policy, on_dispatch=self.admission.dispatched,
                                     on_reject=self.admission.rejected)
        self.live_tools = self.cluster.tools if isinstance(self.cluster.tools, LiveTools) else None
        self.tools = self.live_tools.host if self.live_tools is not None else None
        self.proxy = Proxy(self.cluster, self.admission, self.clients, config.max_body_bytes,
                           max_programs=config.max_programs, retry_after_s=config.retry_after_s)
        self.admin = Admin(self.cluster, self.admission, self.proxy, self.clients, policy.name,
                           tools=self.tools)
        if self.tools is not None:
            self.proxy.on_tool_resources = self._attach
        self.interval_s = control_interval_s(policy, config)
        self._tasks: list[asyncio.Task[None]] = []
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    def _now(self) -> float:
        return asyncio.get_running_loop().time() - self._t0

    def app(self) -> web.Application:
        # aiohttp enforces the body limit while reading; the proxy turns it into a JSON 413.
        app = web.Application(client_max_size=self.config.max_body_bytes)
        app.add_routes([
            web.post("/v1/chat/completions", self.proxy.completions),
            web.post("/v1/completions", self.proxy.completions),
            web.get("/v1/models", self.proxy.models),
            *self.admin.routes(),
        ])
        if self.live_tools is not None:
            app.add_routes(SandboxEndpoints(self.live_tools, self.config.sandbox_quota_bytes).routes())
        else:
            app.add_routes(disabled_routes())
        return app

    async def start(self, sock: socket.socket | None = None) -> None:
        """Scrape every backend once, then listen (on ``sock`` if given) and start the loops."""
        self._t0 = asyncio.get_running_loop().time()
        for client in self.clients:
            await client.start()
        await asyncio.gather(*(self._scrape(c) for c in self.clients))
        # handler_cancellation: a client that disconnects cancels its handler, which
        # closes the upstream request and frees the program's state at once.
        self._runner = web.AppRunner(self.app(), access_log=None, handler_cancellation=True,
                                    shutdown_timeout=10.0)  # streams in flight get 10 s to finish
        await self._runner.setup()
        if sock is None:
            sock = socket.socket(socket.AF_INET6 if ":" in self.config.host else socket.AF_INET)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.config.host, self.config.port))
        site = web.SockSite(self._runner, sock)
        await site.start()
        self.port = sock.getsockname()[1]
        self._tasks = [asyncio.create_task(self._control_loop())]
        self._tasks += [asyncio.create_task(self._poll_loop(c)) for c in self.clients]
        if self.tools is not None:
            self._tasks.append(asyncio.create_task(self._measure_loop()))

    async def stop(self) -> None:
        self.cluster.reject_held(SHUTTING_DOWN)  # held clients get a 503 now, not at max_hold_s
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
        for client in self.clients:
            await client.close()
        if self.tools is not None:
            await self.tools.close()  # after the listener: no request can declare a new one meanwhile

    async def _scrape(self, client: BackendClient) -> None:
        self.cluster.update_backend(client.backend_id, await client.scrape())

    async def _poll_loop(self, client: BackendClient) -> None:
        while True:
            await asyncio.sleep(self.config.poll_interval_s)
            await self._scrape(client)

    async def _control_loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_s = loop.time() + self.interval_s
        while True:
            await asyncio.sleep(max(0.0, next_s - loop.time()))
            next_s += self.interval_s  # fixed rate: a slow step does not shift later ticks
            self.cluster.tick()
            self.cluster.reclaim_idle(self.config.idle_timeout_s)
            self.cluster.expire_dispatch_hold(self.config.max_sync_pause_s)

    async def _measure_loop(self) -> None:
        assert self.tools is not None
        while True:
            await asyncio.sleep(self.config.sandbox_measure_s)
            await self.tools.measure()

    def _attach(self, program_id: str, resources: tuple[tuple[str, str], ...]) -> None:
        assert self.tools is not None
        self.tools.attach(program_id, resources, self._now())

    def export(self, directory: Path) -> list[Path]:
        """Write every table as ``<table>.csv`` under ``directory``."""
        directory.mkdir(parents=True, exist_ok=True)
        written = []
        for table in TABLES:
            path = directory / f"{table}.csv"
            path.write_text(self.records.to_csv(table))
            written.append(path)
        return written


async def serve_forever(config: ServeConfig, policy: Policy, export_dir: Path | None = None) -> None:
    """Run until cancelled (Ctrl-C); export the tables on the way out if asked."""
    server = ProxyServer(config, policy)
    await server.start()
    healthy = sum(1 for b in server.cluster.backends if b.healthy)
    log.info("thunder proxy on http://%s:%d, policy %s, dt %.3g s, %d/%d backends healthy", config.host,
             server.port, policy.name, server.interval_s, healthy, len(server.clients))
    for index, state in enumerate(server.cluster.backends):
        if not state.healthy:
            log.warning("backend %d (%s) unhealthy: %s", index, state.url, state.reason)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # SIGTERM (what service managers send) stops as cleanly as Ctrl-C: tables still exported.
    try:
        loop.add_signal_handler(signal.SIGTERM, stop.set)
    except (NotImplementedError, RuntimeError):  # no signal support (e.g. not the main thread)
        pass
    try:
        await stop.wait()
    finally:
        await server.stop()
        if export_dir is not None:
            for path in server.export(export_dir):
                log.info("wrote %s", path)
