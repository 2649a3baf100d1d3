"""The vLLM backend adapter: one HTTP client per backend, and what /metrics says.

Each backend gets its own aiohttp session with a bounded connection pool:
when all ``max_connections`` are busy, further requests wait for a free one
instead of opening sockets without limit (a slow backend then shows up as
latency, not as errors). ``scrape`` reads vLLM's Prometheus ``/metrics``:

* capacity: ``vllm:cache_config_info{num_gpu_blocks, block_size}`` (their
  product, in tokens), else its ``kv_cache_size_tokens`` label, else the
  configured ``capacity_tokens``; a backend whose capacity is unknown is
  unhealthy, since no program-aware policy can place work on it;
* load: ``vllm:num_requests_running`` / ``_waiting``, ``kv_cache_usage_perc``;
* prefix cache: ``vllm:prefix_cache_queries_total`` / ``_hits_total`` (tokens);
* ``vllm:num_preemptions_total``.

Health: ``failures_to_down`` scrapes in a row that fail (no answer in time,
refused, non-200) mark it unhealthy; one good scrape marks it healthy again.
A refused connection while forwarding marks it unhealthy at once.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp
from yarl import URL

from thunder.runtime.config import ServeConfig
from thunder.runtime.engines.prometheus import Sample, first, parse_text, total
from thunder.runtime.state import BackendState


@dataclass(frozen=True, slots=True)
class EngineStats:
    """Counters and gauges of the last good scrape (engine-wide, summed over engines)."""

    running_requests: int = 0
    waiting_requests: int = 0
    kv_usage: float = 0.0  # fraction of KV blocks held by running requests
    prefix_queries_tokens: float = 0.0
    prefix_hits_tokens: float = 0.0
    preemptions: float = 0.0


def capacity_from(samples: list[Sample]) -> tuple[int, int] | None:
    """(capacity_tokens, block_size) from ``vllm:cache_config_info``, or None."""
    info = first(samples, "vllm:cache_config_info")
    if info is None:
        return None
    labels = info.labels
    try:
        block_size = int(labels.get("block_size", "0"))
        if "num_gpu_blocks" in labels and labels["num_gpu_blocks"] not in ("", "None"):
            return int(labels["num_gpu_blocks"]) * block_size, block_size
        if labels.get("kv_cache_size_tokens", "") not in ("", "None"):
            return int(labels["kv_cache_size_tokens"]), block_size
    except ValueError:
        return None
    return None


def stats_from(samples: list[Sample]) -> EngineStats:
    def value(name: str) -> float:
        found = total(samples, name)
        return 0.0 if found is None else found

    return EngineStats(
        running_requests=int(value("vllm:num_requests_running")),
        waiting_requests=int(value("vllm:num_requests_waiting")),
        kv_usage=value("vllm:kv_cache_usage_perc"),
        prefix_queries_tokens=value("vllm:prefix_cache_queries_total"),
        prefix_hits_tokens=value("vllm:prefix_cache_hits_total"),
        preemptions=value("vllm:num_preemptions_total"))


class BackendClient:
    """HTTP access to one vLLM server: forwarding session and /metrics scrapes."""

    def __init__(self, backend_id: int, url: str, config: ServeConfig) -> None:
        self.backend_id = backend_id
        self.url = url.rstrip("/")
        self.config = config
        self.session: aiohttp.ClientSession | None = None
        self.state = BackendState(self.url)
        self.stats = EngineStats()
        self.failures = 0
        self._urls: dict[str, URL] = {}

    def url_for(self, path_qs: str) -> URL:
        """The backend URL for a proxied path, parsed once per distinct path."""
        url = self._urls.get(path_qs)
        if url is None:
            url = URL(self.url + path_qs)
            if len(self._urls) < 64:  # paths with query strings could be unbounded
                self._urls[path_qs] = url
        return url

    async def start(self) -> None:
        # Idle connections are dropped after 4 s, before vLLM's server (uvicorn, 5 s) drops
        # them: reusing one the server is closing would fail a request for nothing.
        connector = aiohttp.TCPConnector(limit=self.config.max_connections, limit_per_host=0,
                                         keepalive_timeout=4.0)
        # No total timeout: a long generation is fine as long as bytes keep coming.
        timeout = aiohttp.ClientTimeout(total=None, connect=self.config.connect_timeout_s,
                                        sock_read=self.config.read_timeout_s)
        # Bytes are forwarded as they came: no compression asked for (the proxy reads
        # usage from the raw tail), none undone, no cookies kept between clients.
        self.session = aiohttp.ClientSession(
            connector=connector, timeout=timeout, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept"))

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    async def scrape(self) -> BackendState:
        """Read /metrics once; returns (and keeps) the new state."""
        assert self.session is not None
        try:
            timeout = aiohttp.ClientTimeout(total=self.config.scrape_timeout_s)
            async with self.session.get(self.url + "/metrics", timeout=timeout) as response:
                if response.status != 200:
                    return self._failed(f"/metrics answered HTTP {response.status}")
                text = await response.text()
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            return self._failed(f"/metrics unreachable: {type(exc).__name__}: {exc}".rstrip(": "))
        samples = parse_text(text)
        self.stats = stats_from(samples)
        self.failures = 0
        found = capacity_from(samples)
        if found is None and self.config.capacity_tokens is None:
            self.state = BackendState(self.url, healthy=False, reason="KV capacity unknown: no "
                                      "vllm:cache_config_info in /metrics and no capacity_tokens configured")
            return self.state
        capacity, block_size = found if found is not None else (self.config.capacity_tokens or 0, 1)
        self.state = BackendState(self.url, healthy=True, capacity_tokens=capacity, block_size=max(1, block_size),
                                  waiting_requests=self.stats.waiting_requests, reason="")
        return self.state

    def _failed(self, reason: str) -> BackendState:
        self.failures += 1
        if self.failures >= self.config.failures_to_down or not self.state.healthy:
            self.state = BackendState(self.url, healthy=False, capacity_tokens=self.state.capacity_tokens,
                                      block_size=self.state.block_size, reason=reason)
        return self.state

    def mark_down(self, reason: str) -> BackendState:
        """A forward found the backend refusing connections: unhealthy now."""
        self.failures = max(self.failures, self.config.failures_to_down)
        self.state = BackendState(self.url, healthy=False, capacity_tokens=self.state.capacity_tokens,
                                  block_size=self.state.block_size, reason=reason)
        return self.state
