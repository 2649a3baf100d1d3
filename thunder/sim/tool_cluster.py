"""SimCluster with tool environments: a program runs no step until its environment is ready.

``ToolAwareCluster`` is the ``SimCluster`` mechanism plus one ``ToolHost``
and a tool-resource policy (``thunder.policies.tools``). What it adds:

* Every dispatch is gated: if the program's environment is not READY the
  request stays held at the proxy (the program keeps whatever backend the
  scheduler gave it) and is dispatched the moment the environment is ready.
  A program paused meanwhile is dispatched by its next restore instead.
* After every scheduler control step (tick and events), and on its own
  ``interval_s`` tick, the tool policy sees the same ``ClusterView`` plus
  the ``ToolHostView`` and its decisions are applied; a teardown of an
  environment in use, or of a program bound to a backend and reasoning, is
  refused and counted.
* Environments come from the trace's ``env``; what it lacks is filled from
  ``ToolHostConfig``: setup time drawn from the bundled Terminal-Bench
  distribution (seeded by ``env_seed`` and the program id, so every policy
  sees the same draw), default disk and ports.
* When the host is out of room for good (``ToolHost.stuck``), ``stop`` ends
  the run; the summary reports the programs left waiting.
"""

from __future__ import annotations

import zlib
from typing import Any, Callable

import numpy as np
import simpy

from thunder.core.view import Decision, Trigger, TriggerKind
from thunder.core.policy import Policy
from thunder.policies.tool_registry import make_tool_policy
from thunder.policies.tools import ToolPolicy
from thunder.core.program import Phase, Status
from thunder.core.environments import EnvResources, PrepareEnv, ReclaimEnv, ToolDecision
from thunder.sim.cluster import SimCluster, SimProgram
from thunder.sim.engine import Replica
from thunder.sim.tool_host import ToolHost, ToolHostConfig
from thunder.traces.synth.setup_times import setup_time_distribution
from thunder.traces import EnvSpec, TraceProgram


def drawn_setup_s(program_id: str, seed: int) -> float:
    """A setup time from the Terminal-Bench table, fixed by (seed, program id)."""
    rng = np.random.default_rng([seed, zlib.crc32(program_id.encode())])
    return float(setup_time_distribution().sample(rng, 1)[0])


def env_resources(trace: TraceProgram, config: ToolHostConfig) -> EnvResources:
    spec = trace.env or EnvSpec()
    setup_s = spec.setup_s if spec.setup_s is not None else drawn_setup_s(trace.program_id, config.env_seed)
    return EnvResources(
        disk_bytes=spec.disk_bytes if spec.disk_bytes is not None else config.default_disk_bytes,
        ports=spec.ports if spec.ports is not None else config.default_ports,
        setup_s=setup_s)


class ToolAwareCluster(SimCluster):
    def __init__(self, env: simpy.Environment, replicas: list[Replica], policy: Policy,
                 tool_policy: ToolPolicy, host_config: ToolHostConfig = ToolHostConfig(),
                 on_program_end: Callable[[SimProgram], None] | None = None,
                 stop: Callable[[], None] | None = None) -> None:
        super().__init__(env, replicas, policy, on_program_end=on_program_end)
        self.tool_policy = tool_policy
        self.tools = ToolHost(env, host_config, on_change=self.tool_step)
        self.host_config = host_config
        self.stop = stop
        interval = getattr(getattr(tool_policy, "config", None), "interval_s", None) or 5.0
        env.process(self._tool_ticker(interval))

    # -- lifecycle hooks ---------------------------------------------------------------

    def arrive(self, trace: TraceProgram) -> SimProgram:
        program = super().arrive(trace)
        self.tools.register(program.program_id, env_resources(trace, self.host_config))
        return program

    def control(self, trigger: Trigger) -> list[Decision]:
        kind, program_id = trigger.kind, trigger.program_id
        if kind is not TriggerKind.TICK and program_id is not None:
            self.tools.progress()
            if kind is TriggerKind.REQUEST_DONE:
                self.tools.set_in_use(program_id, True)  # its tool call starts now
            elif kind is TriggerKind.TOOL_DONE:
                self.tools.set_in_use(program_id, False)
            elif kind is TriggerKind.RELEASE:
                self.tools.release(program_id)
        decisions = super().control(trigger)
        self.tool_step()
        return decisions

    def _dispatch(self, program: SimProgram, backend: int, priority: float | None) -> None:
        if self.tools.is_ready(program.program_id):
            super()._dispatch(program, backend, priority)
            return
        program.held = True  # held at the proxy until the environment is ready
        self.tools.block(program.program_id, lambda: self._resume(program, priority))

    def _resume(self, program: SimProgram, priority: float | None) -> None:
        view = self.views.get(program.program_id)
        if view is None or not program.held or view.status is not Status.ACTIVE or view.backend is None:
            return  # paused (or gone) meanwhile: its next restore dispatches it
        self._dispatch(program, view.backend, priority)

    # -- the tool policy ---------------------------------------------------------------

    def tool_step(self) -> list[ToolDecision]:
        decisions = list(self.tool_policy.decide(self.snapshot(), self.tools.snapshot()))
        for decision in decisions:
            self._apply_tool(decision)
        return decisions

    def _apply_tool(self, decision: ToolDecision) -> None:
        program_id = decision.program_id
        if isinstance(decision, PrepareEnv):
            if self.tools.prepare(program_id, ahead=decision.reason == "ahead"):
                self._log_tool("prepare", program_id, decision.reason)
            return
        assert isinstance(decision, ReclaimEnv)
        env_view = self.tools.views.get(program_id)
        view = self.views.get(program_id)
        bound_reasoning = (view is not None and view.status is Status.ACTIVE and view.phase is Phase.REASONING)
        if env_view is not None and (env_view.in_use or bound_reasoning) and not env_view.released:
            self.tools.refused += 1
            self._log_tool("refuse_reclaim", program_id, decision.reason)
        elif self.tools.reclaim(program_id, decision.reason):
            self._log_tool("reclaim", program_id, decision.reason)

    def _log_tool(self, action: str, program_id: str, reason: str) -> None:
        # Same table as the scheduler's decisions; "env_" actions never collide with its counts.
        self._log(f"env_{action}", program_id, None, reason)

    def _tool_ticker(self, interval_s: float):
        while True:
            yield self.env.timeout(interval_s)
            self.tool_step()
            if self.tools.stuck and self.tools.stalled_at_s is None:
                self.tools.stalled_at_s = self.tools.last_progress_s
                if self.stop is not None:
                    self.stop()


def build_tool_cluster(env: simpy.Environment, replicas: list[Replica], policy: Policy, tool_policy: str,
                       tool_options: dict[str, Any], host_config: ToolHostConfig,
                       on_program_end: Callable[[SimProgram], None] | None,
                       done: simpy.Event) -> ToolAwareCluster:
    """The cluster ``simulate`` runs when environments are modelled; ``done`` fires if the host
    runs out of room for good."""
    def stop() -> None:
        if not done.triggered:
            done.succeed()

    return ToolAwareCluster(env, replicas, policy, make_tool_policy(tool_policy, **tool_options), host_config,
                            on_program_end=on_program_end, stop=stop)


def tool_tables(cluster: SimCluster) -> dict[str, list[dict[str, Any]]]:
    """``build_tables`` keyword arguments for the environment tables; {} when not modelled."""
    if not isinstance(cluster, ToolAwareCluster):
        return {}
    return {"environments": cluster.tools.environment_rows(), "tool_timeseries": list(cluster.tools.series)}


def tool_context(cluster: SimCluster) -> dict[str, Any]:
    """Summary fields only the mechanism knows: when the host ran out of room, what was left."""
    if not isinstance(cluster, ToolAwareCluster):
        return {}
    return {"tool_host_stalled_at_s": cluster.tools.stalled_at_s, "programs_unfinished": len(cluster.programs),
            "programs_waiting_env_at_end": cluster.tools.waiting_programs}


__all__ = ["ToolAwareCluster", "ToolHostConfig", "build_tool_cluster", "drawn_setup_s", "env_resources",
           "tool_context", "tool_tables"]
