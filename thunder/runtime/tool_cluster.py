"""LiveCluster with sandboxes: the tool-resource policy runs after every control step.

The live twin of ``thunder.sim.tool_cluster.ToolAwareCluster``. What it adds to
``LiveCluster``:

* after each control step (events and the dt tick), the tool policy sees the
  same ``ClusterView`` plus the ``LiveToolHost``'s ``ToolHostView``, and its
  decisions are applied (the host starts the I/O and returns at once);
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

from thunder.core.view import Decision, Trigger
from thunder.core.policy import Policy
from thunder.policies.tool_registry import make_tool_policy
from thunder.policies.tools import ToolPolicy
from thunder.core.program import ProgramId
from thunder.core.environments import ToolDecision
from thunder.runtime.config import ServeConfig
from thunder.runtime.cluster import LiveCluster
from thunder.runtime.records import LiveRecords
from thunder.runtime.state import BackendState, LiveProgram
from thunder.runtime.sandboxes.provider import LocalSandboxProvider, PortRegistry
from thunder.runtime.sandboxes.state import ToolHostConfig
from thunder.runtime.sandboxes.tool_host import LiveToolHost

log = logging.getLogger(__name__)


class ToolAwareLiveCluster(LiveCluster):
    def __init__(self, policy: Policy, backends: Sequence[BackendState], clock: Callable[[], float],
                 tools: LiveToolHost, tool_policy: ToolPolicy, records: LiveRecords | None = None) -> None:
        super().__init__(policy, backends, clock, records=records)
        self.tools = tools
        self.tool_policy = tool_policy

    def control(self, trigger: Trigger) -> list[Decision]:
        decisions = super().control(trigger)
        self.tool_step()
        return decisions

    def tool_step(self) -> list[ToolDecision]:
        if not self.tools.programs:
            return []  # nothing declared: the proxy pays nothing for the feature
        view = self.snapshot()
        last_seen = {pid: p.last_seen_s for pid, p in self.programs.items()}
        host = self.tools.snapshot(view.now_s, view.programs, last_seen)
        decisions = list(self.tool_policy.decide(view, host))
        for decision in decisions:
            done = self.tools.apply(decision, view.now_s, view.programs.get(decision.program_id))
            if done is not None:
                # Same table as the scheduler's decisions; "env_" actions never collide with its own.
                self._log(f"env_{done}", decision.program_id, None, decision.reason)
        return decisions

    def _terminate(self, program: LiveProgram) -> None:
        super()._terminate(program)
        self.tools.release(program.program_id)

    def release(self, program_id: ProgramId) -> bool:
        """End a program the cluster knows, or one that only holds sandboxes."""
        if super().release(program_id):
            return True
        if not self.tools.release(program_id):
            return False
        self.tool_step()
        return True

    def reclaim_idle(self, idle_timeout_s: float) -> list[ProgramId]:
        reclaimed = super().reclaim_idle(idle_timeout_s)
        stale = self.tools.idle_programs(self.clock(), idle_timeout_s, self.programs)
        for program_id in stale:
            log.warning("program %s held sandboxes idle for over %.0f s without release: reclaimed",
                        program_id, idle_timeout_s)
            self._log("reclaim", program_id, None, "idle timeout (sandboxes only)")
            self.tools.release(program_id)
        if stale:
            self.tool_step()
        return reclaimed + stale


def build_tool_host(config: ServeConfig, clock: Callable[[], float]) -> LiveToolHost | None:
    """The sandbox host ``config`` asks for; None when sandboxes are off (no ``sandbox_root``)."""
    if config.sandbox_root is None:
        return None
    root = Path(config.sandbox_root)
    root.mkdir(parents=True, exist_ok=True)
    provider = LocalSandboxProvider(root, PortRegistry(*config.sandbox_ports), config.sandbox_term_grace_s)
    return LiveToolHost(provider, clock, ToolHostConfig(disk_capacity_bytes=config.disk_capacity_bytes,
                                                        setup_timeout_s=config.sandbox_setup_timeout_s))


def build_cluster(policy: Policy, backends: Sequence[BackendState], clock: Callable[[], float],
                  records: LiveRecords, config: ServeConfig,
                  tool_policy: ToolPolicy | None = None) -> LiveCluster:
    """A ``ToolAwareLiveCluster`` when sandboxes are on, else the plain ``LiveCluster``."""
    tools = build_tool_host(config, clock)
    if tools is None:
        return LiveCluster(policy, backends, clock, records=records)
    chosen = tool_policy if tool_policy is not None else make_tool_policy(config.tool_policy)
    return ToolAwareLiveCluster(policy, backends, clock, tools, chosen, records=records)
