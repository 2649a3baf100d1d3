"""The SGLang backend adapter: KV capacity from /get_server_info, load and cache from /metrics.

The vLLM adapter (``thunder.runtime.engines.vllm``) reads everything from
Prometheus; SGLang states its KV pool size in ``GET /get_server_info``
instead, so this adapter reads that once (until it succeeds) and then
scrapes ``GET /metrics`` (the server must run with ``--enable-metrics``):

* capacity: ``max_total_num_tokens`` (tokens in the KV pool). The handler
  returns the server arguments, the scheduler's info (``max_total_num_tokens``,
  ``max_req_input_len``) and ``internal_states``, one per data-parallel rank,
  each with its own pool (``max_total_num_tokens`` or
  ``memory_usage.token_capacity``); with several ranks their sum is the
  server's capacity. Fallbacks, in order: the ``sglang:max_total_num_tokens``
  gauge (newer releases export it), then the configured ``capacity_tokens``;
  with none of them the backend is unhealthy;
* load: ``sglang:num_running_reqs`` and ``sglang:num_queue_reqs``;
* KV use: ``sglang:token_usage`` (share of the pool in use) and
  ``sglang:num_used_tokens``;
* prefix cache: ``sglang:cache_hit_rate`` (a recent-window gauge) and the
  counters ``sglang:prompt_tokens_total`` / ``sglang:cached_tokens_total``;
* preemptions: ``sglang:num_retracted_requests_total`` (SGLang retracts a running
  request when its memory runs out, as vLLM preempts one).

Label sets changed across releases (``engine_type``, ``tp_rank``,
``pp_rank``, ``dp_rank``, ``cache_source`` were added over time), so no
label is required: counts are summed over samples, shares averaged.
The block size is the server's ``page_size`` (SGLang's radix cache is
token-granular at the default 1). Health rules are the vLLM adapter's.

Program semantics do not change with the engine: program ids and release
live in the proxy, and SGLang's OpenAI-compatible responses carry ``usage``
(with ``prompt_tokens_details.cached_tokens`` when the server runs with
``--enable-cache-report``). Only tested against recorded responses here
(``tests/fixtures/sglang``), never against a live SGLang server.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, Mapping

import aiohttp

from thunder.runtime.config import ServeConfig
from thunder.runtime.engines.prometheus import Sample, parse_text, total
from thunder.runtime.engines.vllm import BackendClient, EngineStats
from thunder.runtime.state import BackendState


@dataclass(frozen=True, slots=True)
class SglangStats:
    """One /metrics scrape of an SGLang server."""

    engine: EngineStats  # the fields the runtime shares with vLLM
    token_usage: float = 0.0  # share of the KV pool in use, mean over ranks
    used_tokens: int = 0
    cache_hit_rate: float = 0.0  # SGLang's recent-window prefix hit rate, mean over ranks
    max_total_num_tokens: int | None = None  # the pool size, where /metrics states it


def _positive_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def capacity_from_server_info(info: Mapping[str, Any]) -> int | None:
    """KV capacity in tokens from a ``/get_server_info`` answer, or None."""
    states = info.get("internal_states")
    per_rank = []
    if isinstance(states, list):
        for state in states:
            if not isinstance(state, Mapping):
                continue
            usage = state.get("memory_usage")
            found = _positive_int(state.get("max_total_num_tokens"))
            if found is None and isinstance(usage, Mapping):
                found = _positive_int(usage.get("token_capacity"))
            if found is not None:
                per_rank.append(found)
    if per_rank:
        return sum(per_rank)
    return _positive_int(info.get("max_total_num_tokens"))


def page_size_from_server_info(info: Mapping[str, Any]) -> int:
    return _positive_int(info.get("page_size")) or 1


def _mean(samples: list[Sample], name: str) -> float:
    values = [s.value for s in samples if s.name == name and s.value == s.value]  # drop NaN
    return sum(values) / len(values) if values else 0.0


def stats_from(samples: list[Sample]) -> SglangStats:
    def value(name: str) -> float:
        found = total(samples, name)
        return 0.0 if found is None else found

    capacity = total(samples, "sglang:max_total_num_tokens")
    token_usage = _mean(samples, "sglang:token_usage")
    engine = EngineStats(
        running_requests=int(value("sglang:num_running_reqs")),
        waiting_requests=int(value("sglang:num_queue_reqs")),
        kv_usage=token_usage,
        prefix_queries_tokens=value("sglang:prompt_tokens_total"),
        prefix_hits_tokens=value("sglang:cached_tokens_total"),
        preemptions=value("sglang:num_retracted_requests_total"))
    return SglangStats(engine=engine, token_usage=token_usage, used_tokens=int(value("sglang:num_used_tokens")),
                       cache_hit_rate=_mean(samples, "sglang:cache_hit_rate"),
                       max_total_num_tokens=_positive_int(capacity))


class SglangBackendClient(BackendClient):
    """HTTP access to one SGLang server: the vLLM client's forwarding, SGLang's scrape."""

    def __init__(self, backend_id: int, url: str, config: ServeConfig) -> None:
        super().__init__(backend_id, url, config)
        self.server_info: dict[str, Any] | None = None
        self.sglang = SglangStats(engine=EngineStats())

    async def _get_text(self, path: str) -> str:
        assert self.session is not None
        timeout = aiohttp.ClientTimeout(total=self.config.scrape_timeout_s)
        async with self.session.get(self.url + path, timeout=timeout) as response:
            if response.status != 200:
                raise _HttpError(f"{path} answered HTTP {response.status}")
            return await response.text()

    async def scrape(self) -> BackendState:
        """Read /get_server_info (until it answered once), then /metrics."""
        try:
            if self.server_info is None:
                info = json.loads(await self._get_text("/get_server_info"))
                self.server_info = info if isinstance(info, dict) else {}
            text = await self._get_text("/metrics")
        except _HttpError as exc:
            return self._failed(str(exc))
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as exc:
            return self._failed(f"unreachable or unreadable: {type(exc).__name__}: {exc}".rstrip(": "))
        self.sglang = stats_from(parse_text(text))
        self.stats = self.sglang.engine
        self.failures = 0
        info = self.server_info or {}
        capacity = (capacity_from_server_info(info) or self.sglang.max_total_num_tokens
                    or self.config.capacity_tokens)
        if capacity is None:
            self.state = BackendState(self.url, healthy=False, reason="KV capacity unknown: no max_total_num_tokens "
                                      "in /get_server_info or /metrics and no capacity_tokens configured")
            return self.state
        self.state = BackendState(self.url, healthy=True, capacity_tokens=capacity,
                                  block_size=page_size_from_server_info(info),
                                  waiting_requests=self.stats.waiting_requests, reason="")
        return self.state


class _HttpError(Exception):
    """A non-200 answer from the server."""


BACKEND_CLIENTS: dict[str, type[BackendClient]] = {"vllm": BackendClient, "sglang": SglangBackendClient}
