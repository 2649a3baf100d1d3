"""The proxy's ``/metrics`` page (Prometheus text) and its JSON views of programs.

Read-only: everything here renders the state of a ``LiveCluster``, its
records and the backend adapters; nothing changes it.

The page is written by ``prometheus_client`` from metric families built at
scrape time out of that state (a custom collector, not instruments updated
per request: the request path keeps its plain counters and histograms).
Names follow vLLM's convention, a ``thunder:`` namespace as vLLM's ``vllm:``.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from thunder.core.program import Phase, Program, Status
from thunder.runtime.cluster import LiveCluster
from thunder.runtime.engines.vllm import BackendClient
from thunder.runtime.records import Histogram
from thunder.runtime.sandboxes.state import ToolHostStats


def describe(cluster: LiveCluster, program_id: str) -> dict[str, Any] | None:
    """One program as JSON (policy view plus mechanism counters); None if unknown."""
    view = cluster.views.get(program_id)
    program = cluster.programs.get(program_id)
    if view is None or program is None:
        return None
    return {
        "program_id": view.program_id, "phase": view.phase.value, "status": view.status.value,
        "backend": view.backend, "context_tokens": view.context_tokens, "steps_done": view.steps_done,
        "phase_since_s": view.phase_since_s, "arrived_s": view.arrived_s, "waiting": view.waiting,
        "marked_for_pause": view.marked_for_pause, "paused_since_s": view.paused_since_s, "tool": view.tool,
        "in_flight": program.in_flight, "held": len(program.held), "one_turn": program.one_turn,
        "last_backend": program.last_backend, "pauses": program.pauses, "restores": program.restores,
        "migrations": program.migrations, "queue_s": program.queue_s, "last_seen_s": program.last_seen_s,
        "pinned_until_s": program.pinned_until_s, "pin_enforced": False,
    }


def backend_rows(cluster: LiveCluster, clients: Sequence[BackendClient]) -> list[dict[str, Any]]:
    view = cluster.snapshot()
    rows = []
    for backend, client in zip(view.backends, clients):
        state = cluster.backends[backend.backend_id]
        rows.append({"backend": backend.backend_id, "url": state.url, "healthy": state.healthy,
                     "reason": state.reason, "capacity_tokens": state.capacity_tokens,
                     "block_size": state.block_size, "program_tokens": program_tokens(view.programs.values(),
                                                                                        backend.backend_id),
                     "proxy_running_requests": backend.running_requests,
                     "engine_running_requests": client.stats.running_requests,
                     "engine_waiting_requests": client.stats.waiting_requests,
                     "kv_usage": client.stats.kv_usage})
    return rows


def program_tokens(programs: Any, backend_id: int) -> int:
    return sum(p.context_tokens for p in programs if p.backend == backend_id and p.status is Status.ACTIVE)


# Backend gauges: metric name, key of ``backend_rows``, help.
_BACKEND_GAUGES = (
    ("backend_healthy", "healthy", "1 if the backend answers /metrics with a KV capacity."),
    ("backend_capacity_tokens", "capacity_tokens", "KV capacity (tokens) from vLLM's cache config."),
    ("backend_program_tokens", "program_tokens", "Context tokens of the programs bound to it."),
    ("backend_running_requests", "proxy_running_requests", "Requests the proxy has in flight there."),
    ("backend_engine_waiting_requests", "engine_waiting_requests", "vLLM's waiting requests."),
    ("backend_kv_usage", "kv_usage", "vLLM's KV cache usage (0..1)."),
)
# Decision counters: metric name, action in the decision log, help.
_DECISION_COUNTERS = (
    ("pauses_total", "pause", "Programs paused (unbound from their backend)."),
    ("restores_total", "restore", "Programs restored onto a backend."),
    ("migrations_total", "migrate", "Restores onto another backend than the program's last."),
    ("pins_total", "pin", "Pin decisions recorded (not enforceable on vLLM)."),
    ("reclaims_total", "reclaim", "Programs reclaimed after the idle timeout."),
)
OUTCOMES = ("ok", "aborted", "hold_timeout", "rejected", "upstream_error", "too_many_programs")
PREFIX = "thunder:"


class _Families(Collector):
    """What ``generate_latest`` reads: the families of one scrape."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def _gauge(name: str, help_text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, help_text, value=value)


def _counter(name: str, help_text: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(PREFIX + name, help_text, value=value)


def _histogram(name: str, help_text: str, histogram: Histogram) -> HistogramMetricFamily:
    buckets, running = [], 0
    for bound, count in zip([*histogram.bounds, float("inf")], histogram.counts):
        running += count
        buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), running))
    return HistogramMetricFamily(PREFIX + name, help_text, buckets=buckets, sum_value=histogram.sum_value)


def render_metrics(cluster: LiveCluster, clients: Sequence[BackendClient], held_requests: int,
                   overhead: Histogram, tools: ToolHostStats | None = None) -> str:
    """The whole ``/metrics`` scrape, in the Prometheus text format (0.0.4)."""
    families = metric_families(cluster, clients, held_requests, overhead, tools)
    return generate_latest(_Families(families)).decode()


def metric_families(cluster: LiveCluster, clients: Sequence[BackendClient], held_requests: int,
                    overhead: Histogram, tools: ToolHostStats | None = None) -> list[Metric]:
    """Every family of the scrape, in page order."""
    records = cluster.records
    program_views: list[Program] = list(cluster.views.values())
    counts: dict[tuple[Phase, Status], int] = {}
    for view in program_views:
        counts[(view.phase, view.status)] = counts.get((view.phase, view.status), 0) + 1
    programs = GaugeMetricFamily(PREFIX + "programs", "Programs known to the proxy, by phase and status.",
                                 labels=["phase", "status"])
    for phase in Phase:
        for status in (Status.ACTIVE, Status.PAUSED):
            programs.add_metric([phase.value, status.value], counts.get((phase, status), 0))
    families: list[Metric] = [programs]
    families += [_counter(name, help_text, records.actions.get(action, 0))
                 for name, action, help_text in _DECISION_COUNTERS]
    families += [
        _gauge("queue_length", "Programs in the global waiting queue (paused).",
               sum(1 for v in program_views if v.status is Status.PAUSED)),
        _gauge("held_requests", "Client requests held at the proxy now.", held_requests),
        _histogram("queue_wait_seconds", "Time a request waited at the proxy before dispatch.", records.queue_wait),
    ]
    requests = CounterMetricFamily(PREFIX + "requests_total", "Requests ended, by outcome.", labels=["outcome"])
    for outcome in OUTCOMES:
        requests.add_metric([outcome], records.outcomes.get(outcome, 0))
    families.append(requests)
    families += _backend_families(cluster, clients)
    families += _sync_families(cluster)
    families += [
        _counter("prompt_tokens_total", "Prompt tokens of completed requests (usage).", records.prompt_tokens),
        _counter("cached_tokens_total", "Prompt tokens served from the prefix cache (usage).", records.cached_tokens),
        _gauge("kv_hit_rate", "Cached prompt tokens / prompt tokens over completed requests.", records.kv_hit_rate),
        _histogram("proxy_overhead_seconds", "Time from request received to forwarded, excluding time held by "
                                             "the policy.", overhead),
    ]
    if tools is not None:
        families += _sandbox_families(tools)
    return families


def _sync_families(cluster: LiveCluster) -> list[Metric]:
    """Weight-sync holds of every dispatch (``POST /admin/pause``)."""
    hold, records = cluster.dispatch_hold, cluster.records
    return [
        _gauge("dispatch_paused", "1 while every dispatch is held for a weight sync.", int(hold is not None)),
        _counter("sync_pauses_total", "Weight-sync holds of every dispatch, ended.", records.sync_pauses),
        _counter("sync_paused_seconds_total", "Time every dispatch was held for weight syncs, ended holds (s).",
                 records.sync_paused_s),
        _gauge("sync_held_requests", "Requests the current weight-sync hold made wait.",
               hold.held_requests if hold is not None else 0),
    ]


def _sandbox_families(tools: ToolHostStats) -> list[Metric]:
    families: list[Metric] = [
        _gauge("sandboxes_live", "Sandboxes preparing or ready.", tools.sandboxes_live),
        _gauge("sandbox_disk_bytes", "Disk measured under live sandboxes and unfinished teardowns (bytes).",
               tools.disk_bytes),
        _gauge("sandbox_disk_reserved_bytes", "Disk quotas held by sandboxes (bytes).", tools.disk_reserved_bytes),
        _gauge("sandbox_ports_held", "Loopback ports held by sandboxes.", tools.ports_held),
        _gauge("sandbox_teardowns", "Teardowns in progress or being retried.", tools.teardowns),
        _counter("sandbox_reclaims_total", "Sandbox instances torn down.", tools.reclaims),
        _counter("sandbox_reclaim_failures_total", "Teardown attempts that left something held (retried).",
                 tools.reclaim_failures),
        _counter("sandbox_setup_failures_total", "Sandboxes whose setup failed.", tools.setup_failures),
        _counter("sandbox_sigkills_total", "Process trees that needed SIGKILL.", tools.sigkills),
        _gauge("tool_resources_attached", "Client-owned resources attached to programs.", tools.attached),
    ]
    preparations = GaugeMetricFamily(PREFIX + "sandbox_preparations", "Preparations in flight, by state.",
                                     labels=["state"])
    preparations.add_metric(["pending"], tools.pending)
    preparations.add_metric(["preparing"], tools.preparing)
    return [*families, preparations]


def _backend_families(cluster: LiveCluster, clients: Sequence[BackendClient]) -> list[Metric]:
    rows = backend_rows(cluster, clients)
    families: list[Metric] = []
    for name, key, help_text in _BACKEND_GAUGES:
        family = GaugeMetricFamily(PREFIX + name, help_text, labels=["backend", "url"])
        for row in rows:
            family.add_metric([str(row["backend"]), row["url"]], float(row[key]))
        families.append(family)
    hit_rate = GaugeMetricFamily(PREFIX + "backend_prefix_cache_hit_rate", "vLLM prefix cache hits / queries "
                                                                           "(tokens).", labels=["backend", "url"])
    for row, client in zip(rows, clients):
        queries = client.stats.prefix_queries_tokens
        hit_rate.add_metric([str(row["backend"]), row["url"]],
                            client.stats.prefix_hits_tokens / queries if queries else 0.0)
    families.append(hit_rate)
    return families
