"""ServeConfig: every knob of ``thunder serve`` in one frozen value.

The CLI builds it from flags and passes it down; nothing below reads
environment variables or files on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from thunder.core.options import option, require


@dataclass(frozen=True, slots=True)
class ServeConfig:
    backends: tuple[str, ...] = field(default=(), metadata={"help": "vLLM base URLs, e.g. http://127.0.0.1:8000"})
    backend_kind: str = option("vllm", "engine behind the backend URLs: vllm or sglang (how capacity, usage and "
                                       "hit rate are read)")
    host: str = option("127.0.0.1", "address the proxy listens on")
    port: int = option(8300, "port the proxy listens on (0: any free port)")
    max_hold_s: float = option(300.0, "longest a request is held for the policy before a 503 (s)")
    idle_timeout_s: float = option(1800.0, "a program with no request for this long is reclaimed (s)")
    max_body_bytes: int = option(32 * 1024 * 1024, "largest request body accepted (413 beyond)")
    max_programs: int | None = option(10_000, "programs tracked at once at most; a request that would register "
                                              "one more gets 429 with Retry-After (None: no limit)")
    retry_after_s: float = option(5.0, "Retry-After of that 429 (s)")
    max_sync_pause_s: float = option(600.0, "a weight-sync hold of every dispatch (POST /admin/pause) ends by "
                                            "itself after this long (s)")
    control_interval_s: float | None = option(None, "dt of the control loop; default: the policy's "
                                                    "interval_s, else 1 s")
    poll_interval_s: float = option(1.0, "how often each backend's /metrics is read (s)")
    scrape_timeout_s: float = option(3.0, "a /metrics read slower than this counts as a failure (s)")
    failures_to_down: int = option(2, "consecutive failed /metrics reads that mark a backend unhealthy")
    capacity_tokens: int | None = option(None, "KV capacity per backend when /metrics does not say (tokens)")
    max_connections: int = option(256, "connections to each backend at most; more requests queue for one")
    connect_timeout_s: float = option(5.0, "TCP connect to a backend (s)")
    read_timeout_s: float = option(600.0, "longest silence from a backend mid-response (s)")
    max_records: int = option(1_000_000, "step and decision rows kept for export (oldest dropped)")
    tool_policy: str = option("on-demand", "tool-resource policy: keep, on-demand, program-aware")
    sandbox_root: str | None = option(None, "directory for sandboxes; None: sandbox endpoints are off (they "
                                            "run clients' commands, so they are opt-in)")
    disk_capacity_bytes: int | None = option(None, "disk the sandboxes may reserve in all (None: unlimited)")
    sandbox_quota_bytes: int = option(1 << 30, "disk a sandbox reserves when its request names no quota")
    sandbox_ports: tuple[int, int] = option((20000, 29999), "loopback port range handed to sandboxes "
                                                            "(below Linux's ephemeral range)")
    sandbox_setup_timeout_s: float = option(600.0, "longest a sandbox's setup may run (s)")
    sandbox_term_grace_s: float = option(2.0, "SIGTERM to SIGKILL grace when a sandbox's processes are killed (s)")
    sandbox_measure_s: float = option(1.0, "how often sandbox directories are walked for disk use (s)")

    def __post_init__(self) -> None:
        require(len(self.backends) > 0, "at least one backend URL is needed")
        require(self.backend_kind in ("vllm", "sglang"),
                f"unknown backend kind {self.backend_kind!r}; known: vllm, sglang")
        require(self.max_hold_s > 0, "max_hold_s must be > 0")
        require(self.idle_timeout_s > 0, "idle_timeout_s must be > 0")
        require(self.max_body_bytes > 0, "max_body_bytes must be > 0")
        require(self.max_programs is None or self.max_programs >= 1, "max_programs must be >= 1")
        require(self.retry_after_s > 0, "retry_after_s must be > 0")
        require(self.max_sync_pause_s > 0, "max_sync_pause_s must be > 0")
        require(self.control_interval_s is None or self.control_interval_s > 0, "control_interval_s must be > 0")
        require(self.poll_interval_s > 0, "poll_interval_s must be > 0")
        require(self.failures_to_down >= 1, "failures_to_down must be >= 1")
        require(self.capacity_tokens is None or self.capacity_tokens > 0, "capacity_tokens must be > 0")
        require(self.max_connections >= 1, "max_connections must be >= 1")
        require(self.tool_policy in ("keep", "on-demand", "program-aware"),
                f"unknown tool policy {self.tool_policy!r}; known: keep, on-demand, program-aware")
        require(self.disk_capacity_bytes is None or self.disk_capacity_bytes > 0, "disk_capacity_bytes must be > 0")
        require(self.sandbox_quota_bytes >= 0, "sandbox_quota_bytes must be >= 0")
        require(0 < self.sandbox_ports[0] <= self.sandbox_ports[1] < 65536, "sandbox_ports must be a range "
                                                                           "within 1..65535")
        require(self.sandbox_setup_timeout_s > 0, "sandbox_setup_timeout_s must be > 0")
        require(self.sandbox_term_grace_s >= 0, "sandbox_term_grace_s must be >= 0")
        require(self.sandbox_measure_s > 0, "sandbox_measure_s must be > 0")
        for url in self.backends:
            require(url.startswith(("http://", "https://")), f"backend URL {url!r} must start with http:// "
                                                             "or https://")
