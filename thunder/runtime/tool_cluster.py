"""Sandboxes in the live runtime: the tool-resource policy runs after every control step.

The live twin of ``thunder.sim.tool_cluster``. ``LiveTools`` attaches a
``LiveToolHost`` and a tool-resource policy to a ``LiveCluster`` (composed, not a
subclass of it); its decisions go through the shared
``thunder.core.applier.ToolApplier``. What it adds:

* after each control step (events and the dt tick), the tool policy sees the
  same ``ClusterView`` plus the host's ``ToolHostView``, and its decisions are
  applied (the host starts the I/O and returns at once);
* a program that ends (release call, last request, idle reclaim) is released
  on the host too, so the policy can tear its sandboxes down;
* idle reclaim also ends programs that only hold sandboxes (they never sent an
  LLM request, so the cluster does not know them).

Unlike the simulator it does not hold LLM requests until a sandbox is ready:
the client's tool call waits for it (``POST /programs/{id}/sandboxes/wait``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Sequence

from thunder.core.applier import ToolApplier
from thunder.core.environments import ToolDecision, ToolHostView
from thunder.core.policy import Policy, ToolPolicy
from thunder.core.program import ProgramId
from thunder.core.view import ClusterView, Trigger
from thunder.policies.registry import make_tool_policy
from thunder.runtime.cluster import LiveCluster
from thunder.runtime.config import ServeConfig
from thunder.runtime.records import LiveRecords
from thunder.runtime.sandboxes.provider import LocalSandboxProvider, PortRegistry
from thunder.runtime.sandboxes.state import SandboxHostConfig
from thunder.runtime.sandboxes.tool_host import LiveToolHost
from thunder.runtime.state import BackendState, Ticket

log = logging.getLogger(__name__)


class LiveTools:
    """The tool-resource side of a ``LiveCluster`` (see the module doc)."""

    def __init__(self, cluster: LiveCluster, host: LiveToolHost, tool_policy: ToolPolicy) -> None:
        self.cluster = cluster
        self.host = host
        self.applier = ToolApplier(tool_policy, self, self._log)

    def attach(self) -> None:
        self.cluster.after_control.append(self._after_control)
        self.cluster.tools = self

    # -- hooks the cluster runs ----------------------------------------------------------

    def _after_control(self, trigger: Trigger) -> None:
        self.step()

    def ended(self, program_id: ProgramId) -> None:
        """The cluster ended the program: its sandboxes may go."""
        self.host.release(program_id)

    def release_unknown(self, program_id: ProgramId) -> bool:
        """End a program that only holds sandboxes (the cluster does not know it)."""
        if not self.host.release(program_id):
            return False
        self.step()
        return True

    def reclaim_idle(self, idle_timeout_s: float) -> list[ProgramId]:
        """End programs that only hold sandboxes and were not seen for ``idle_timeout_s``."""
        stale = self.host.idle_programs(self.cluster.clock(), idle_timeout_s, self.cluster.programs)
        for program_id in stale:
            log.warning("program %s held sandboxes idle for over %.0f s without release: reclaimed",
                        program_id, idle_timeout_s)
            self.cluster._log("reclaim", program_id, None, "idle timeout (sandboxes only)")
            self.host.release(program_id)
        if stale:
            self.step()
        return stale

    # -- the tool policy (through the shared applier) ------------------------------------

    def step(self) -> list[ToolDecision]:
        if not self.host.programs:
            return []  # nothing declared: the proxy pays nothing for the feature
        return self.applier.step(self.cluster.snapshot())

    def snapshot(self, cluster: ClusterView) -> ToolHostView:
        last_seen = {pid: p.last_seen_s for pid, p in self.cluster.programs.items()}
        return self.host.snapshot(cluster.now_s, cluster.programs, last_seen)

    def prepare(self, program_id: ProgramId, ahead: bool) -> bool:
        return self.host.prepare(program_id, self.cluster.clock())

    def reclaim(self, program_id: ProgramId, reason: str) -> bool:
        return self.host.reclaim(program_id, self.cluster.clock(), reason)

    def _log(self, action: str, program_id: ProgramId, reason: str) -> None:
        self.cluster._log(action, program_id, None, reason)  # the scheduler's decisions table


def build_tool_host(config: ServeConfig, clock: Callable[[], float]) -> LiveToolHost | None:
    """The sandbox host ``config`` asks for; None when sandboxes are off (no ``sandbox_root``)."""
    if config.sandbox_root is None:
        return None
    root = Path(config.sandbox_root)
    root.mkdir(parents=True, exist_ok=True)
    provider = LocalSandboxProvider(root, PortRegistry(*config.sandbox_ports), config.sandbox_term_grace_s)
    return LiveToolHost(provider, clock, SandboxHostConfig(disk_capacity_bytes=config.disk_capacity_bytes,
                                                        setup_timeout_s=config.sandbox_setup_timeout_s))


def build_cluster(policy: Policy, backends: Sequence[BackendState], clock: Callable[[], float],
                  records: LiveRecords, config: ServeConfig, tool_policy: ToolPolicy | None = None,
                  on_dispatch: Callable[[Ticket], None] | None = None,
                  on_reject: Callable[[Ticket, str], None] | None = None) -> LiveCluster:
    """The live cluster, with ``LiveTools`` attached when sandboxes are on (``cluster.tools``)."""
    cluster = LiveCluster(policy, backends, clock, records=records, on_dispatch=on_dispatch, on_reject=on_reject)
    host = build_tool_host(config, clock)
    if host is not None:
        chosen = tool_policy if tool_policy is not None else make_tool_policy(config.tool_policy)
        LiveTools(cluster, host, chosen).attach()
    return cluster
