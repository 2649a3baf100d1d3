"""The proxy's ``/metrics`` page (Prometheus text) and its JSON views of programs.

Read-only: everything here renders the state of a ``LiveCluster``, its
records and the backend adapters; nothing changes it.
"""

from __future__ import annotations

from typing import Any, Sequence

from thunder.program import Phase, Program, Status
from thunder.runtime.backend import BackendClient
from thunder.runtime.live_cluster import LiveCluster
from thunder.runtime.prometheus import Exposition
from thunder.runtime.records import Histogram
from thunder.runtime.sandbox_state import ToolHostStats


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


def _histogram(page: Exposition, name: str, help_text: str, histogram: Histogram) -> None:
    page.histogram(name, help_text, histogram.bounds, histogram.counts, histogram.sum_value)


def render_metrics(cluster: LiveCluster, clients: Sequence[BackendClient], held_requests: int,
                   overhead: Histogram, tools: ToolHostStats | None = None) -> str:
    """The whole ``/metrics`` scrape."""
    records = cluster.records
    page = Exposition()
    page.family("thunder_programs", "gauge", "Programs known to the proxy, by phase and status.")
    counts: dict[tuple[Phase, Status], int] = {}
    program_views: list[Program] = list(cluster.views.values())
    for view in program_views:
        counts[(view.phase, view.status)] = counts.get((view.phase, view.status), 0) + 1
    for phase in Phase:
        for status in (Status.ACTIVE, Status.PAUSED):
            page.sample("thunder_programs", counts.get((phase, status), 0), phase=phase.value, status=status.value)
    for action, help_text in (("pause", "Programs paused (unbound from their backend)."),
                              ("restore", "Programs restored onto a backend."),
                              ("migrate", "Restores onto another backend than the program's last."),
                              ("pin", "Pin decisions recorded (not enforceable on vLLM)."),
                              ("reclaim", "Programs reclaimed after the idle timeout.")):
        name = {"pause": "pauses", "restore": "restores", "migrate": "migrations", "pin": "pins",
                "reclaim": "reclaims"}[action]
        page.metric(f"thunder_{name}_total", "counter", help_text, records.actions.get(action, 0))
    page.metric("thunder_queue_length", "gauge", "Programs in the global waiting queue (paused).",
                sum(1 for v in program_views if v.status is Status.PAUSED))
    page.metric("thunder_held_requests", "gauge", "Client requests held at the proxy now.", held_requests)
    _histogram(page, "thunder_queue_wait_seconds", "Time a request waited at the proxy before dispatch.",
               records.queue_wait)
    page.family("thunder_requests_total", "counter", "Requests ended, by outcome.")
    for outcome in ("ok", "aborted", "hold_timeout", "rejected", "upstream_error", "too_many_programs"):
        page.sample("thunder_requests_total", records.outcomes.get(outcome, 0), outcome=outcome)
    _backend_metrics(page, cluster, clients)
    _sync_metrics(page, cluster)
    page.metric("thunder_prompt_tokens_total", "counter", "Prompt tokens of completed requests (usage).",
                records.prompt_tokens)
    page.metric("thunder_cached_tokens_total", "counter", "Prompt tokens served from the prefix cache (usage).",
                records.cached_tokens)
    page.metric("thunder_kv_hit_rate", "gauge", "Cached prompt tokens / prompt tokens over completed requests.",
                records.kv_hit_rate)
    _histogram(page, "thunder_proxy_overhead_seconds",
               "Time from request received to forwarded, excluding time held by the policy.", overhead)
    if tools is not None:
        _sandbox_metrics(page, tools)
    return page.text()


def _sync_metrics(page: Exposition, cluster: LiveCluster) -> None:
    """Weight-sync holds of every dispatch (``POST /admin/pause``)."""
    hold, records = cluster.dispatch_hold, cluster.records
    page.metric("thunder_dispatch_paused", "gauge", "1 while every dispatch is held for a weight sync.",
                int(hold is not None))
    page.metric("thunder_sync_pauses_total", "counter", "Weight-sync holds of every dispatch, ended.",
                records.sync_pauses)
    page.metric("thunder_sync_paused_seconds_total", "counter", "Time every dispatch was held for weight "
                                                                "syncs, ended holds (s).", records.sync_paused_s)
    page.metric("thunder_sync_held_requests", "gauge", "Requests the current weight-sync hold made wait.",
                hold.held_requests if hold is not None else 0)


def _sandbox_metrics(page: Exposition, tools: ToolHostStats) -> None:
    for name, kind, help_text, value in (
            ("thunder_sandboxes_live", "gauge", "Sandboxes preparing or ready.", tools.sandboxes_live),
            ("thunder_sandbox_disk_bytes", "gauge", "Disk measured under live sandboxes and unfinished "
                                                    "teardowns (bytes).", tools.disk_bytes),
            ("thunder_sandbox_disk_reserved_bytes", "gauge", "Disk quotas held by sandboxes (bytes).",
             tools.disk_reserved_bytes),
            ("thunder_sandbox_ports_held", "gauge", "Loopback ports held by sandboxes.", tools.ports_held),
            ("thunder_sandbox_teardowns", "gauge", "Teardowns in progress or being retried.", tools.teardowns),
            ("thunder_sandbox_reclaims_total", "counter", "Sandbox instances torn down.", tools.reclaims),
            ("thunder_sandbox_reclaim_failures_total", "counter", "Teardown attempts that left something held "
                                                                  "(retried).", tools.reclaim_failures),
            ("thunder_sandbox_setup_failures_total", "counter", "Sandboxes whose setup failed.",
             tools.setup_failures),
            ("thunder_sandbox_sigkills_total", "counter", "Process trees that needed SIGKILL.", tools.sigkills),
            ("thunder_tool_resources_attached", "gauge", "Client-owned resources attached to programs.",
             tools.attached)):
        page.metric(name, kind, help_text, value)
    page.family("thunder_sandbox_preparations", "gauge", "Preparations in flight, by state.")
    page.sample("thunder_sandbox_preparations", tools.pending, state="pending")
    page.sample("thunder_sandbox_preparations", tools.preparing, state="preparing")


def _backend_metrics(page: Exposition, cluster: LiveCluster, clients: Sequence[BackendClient]) -> None:
    rows = backend_rows(cluster, clients)
    for name, key, help_text in (
            ("thunder_backend_healthy", "healthy", "1 if the backend answers /metrics with a KV capacity."),
            ("thunder_backend_capacity_tokens", "capacity_tokens", "KV capacity (tokens) from vLLM's cache config."),
            ("thunder_backend_program_tokens", "program_tokens", "Context tokens of the programs bound to it."),
            ("thunder_backend_running_requests", "proxy_running_requests", "Requests the proxy has in flight there."),
            ("thunder_backend_engine_waiting_requests", "engine_waiting_requests", "vLLM's waiting requests."),
            ("thunder_backend_kv_usage", "kv_usage", "vLLM's KV cache usage (0..1).")):
        page.family(name, "gauge", help_text)
        for row in rows:
            page.sample(name, float(row[key]), backend=row["backend"], url=row["url"])
    page.family("thunder_backend_prefix_cache_hit_rate", "gauge", "vLLM prefix cache hits / queries (tokens).")
    for row, client in zip(rows, clients):
        queries = client.stats.prefix_queries_tokens
        page.sample("thunder_backend_prefix_cache_hit_rate",
                    client.stats.prefix_hits_tokens / queries if queries else 0.0,
                    backend=row["backend"], url=row["url"])
