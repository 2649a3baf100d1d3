"""Tool environments in the simulator: a program runs no step until its environment is ready.

``SimTools`` attaches one ``ToolHost`` and a tool-resource policy
(``thunder.policies.tools``) to a ``SimCluster``; its decisions go through the
shared ``thunder.core.applier.ToolApplier``. What it adds:

* Every dispatch is gated: if the program's environment is not READY the
  request stays held at the proxy (the program keeps whatever backend the
  scheduler gave it) and is dispatched the moment the environment is ready.
  A program paused meanwhile is dispatched by its next restore instead.
* After every scheduler control step (tick and events), and on its own
  ``interval_s`` tick, the tool policy sees the same ``ClusterView`` plus
  the ``ToolHostView`` and its decisions are applied; a teardown of an
  environment in use, or of a program bound to a backend and reasoning, is
  refused and counted (``thunder.core.environments.reclaim_refused``).
* Environments come from the trace's ``env``; what it lacks is filled from
  ``SimHostConfig``: setup time drawn from the bundled Terminal-Bench
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

from thunder.core.applier import ToolApplier
from thunder.core.environments import EnvResources, ToolDecision, ToolHostView, env_in_use
from thunder.core.policy import Policy, ToolPolicy
from thunder.core.program import Status
from thunder.core.view import ClusterView, Trigger, TriggerKind
from thunder.policies.registry import make_tool_policy
from thunder.sim.cluster import SimCluster, SimProgram
from thunder.sim.engine import Replica
from thunder.sim.tool_host import ToolHost, SimHostConfig
from thunder.traces import EnvSpec, TraceProgram
from thunder.traces.synth.setup_times import setup_time_distribution


def drawn_setup_s(program_id: str, seed: int) -> float:
    """A setup time from the Terminal-Bench table, fixed by (seed, program id)."""
    rng = np.random.default_rng([seed, zlib.crc32(program_id.encode())])
    return float(setup_time_distribution().sample(rng, 1)[0])


def trace_env_resources(trace: TraceProgram, config: SimHostConfig) -> EnvResources:
    """The environment the trace describes, with what it lacks filled from the host's defaults."""
    spec = trace.env or EnvSpec()
    setup_s = spec.setup_s if spec.setup_s is not None else drawn_setup_s(trace.program_id, config.env_seed)
    return EnvResources(
        disk_bytes=spec.disk_bytes if spec.disk_bytes is not None else config.default_disk_bytes,
        ports=spec.ports if spec.ports is not None else config.default_ports,
        setup_s=setup_s)


class SimTools:
    """The tool-resource side of a ``SimCluster``: one simulated host, the tool policy, and
    the gate that holds a program's request until its environment is ready.

    It is attached to the cluster (``attach``), not a subclass of it: it watches triggers
    before the scheduler's step (``before_control``), runs the tool policy after it
    (``after_control``) and on its own tick, and gates dispatches (``SimCluster.gate``)."""

    def __init__(self, cluster: SimCluster, tool_policy: ToolPolicy, host_config: SimHostConfig,
                 stop: Callable[[], None] | None = None) -> None:
        self.cluster = cluster
        self.host = ToolHost(cluster.env, host_config, on_change=self.step)
        self.host_config = host_config
        self.applier = ToolApplier(tool_policy, self, self._log)
        self.stop = stop
        self._interval_s = tool_policy.interval_s

    def attach(self) -> None:
        cluster = self.cluster
        cluster.before_control.append(self._observe)
        cluster.after_control.append(self._after_control)
        cluster.gate = self
        cluster.env.process(self._ticker(self._interval_s))

    # -- hooks the cluster runs ----------------------------------------------------------

    def _after_control(self, trigger: Trigger) -> None:
        self.step()

    def arrive(self, program: SimProgram) -> None:
        self.host.register(program.program_id, trace_env_resources(program.trace, self.host_config))

    def admit(self, program: SimProgram, priority: float | None) -> bool:
        """True: dispatch now. False: held at the proxy until the environment is ready,
        then dispatched to the backend the program has by then."""
        if self.host.is_ready(program.program_id):
            return True
        program.held = True
        self.host.block(program.program_id, lambda: self._resume(program, priority))
        return False

    def _resume(self, program: SimProgram, priority: float | None) -> None:
        view = self.cluster.views.get(program.program_id)
        if view is None or not program.held or view.status is not Status.ACTIVE or view.backend is None:
            return  # paused (or gone) meanwhile: its next restore dispatches it
        self.cluster.dispatch(program, view.backend, priority)

    def _observe(self, trigger: Trigger) -> None:
        """Before the scheduler's step: the event's effect on the environment (progress for
        the stall check, a tool call starting or ending, a release)."""
        program_id = trigger.program_id
        if trigger.kind is TriggerKind.TICK or program_id is None:
            return
        self.host.progress()
        if trigger.kind is TriggerKind.RELEASE:
            self.host.release(program_id)
            return
        env = self.host.views.get(program_id)
        in_use = env_in_use(self.cluster.views.get(program_id))
        if env is not None and env.in_use != in_use:
            self.host.set_in_use(program_id, in_use)  # a tool call starts (request done) or ends

    # -- the tool policy (through the shared applier) ------------------------------------

    def step(self) -> list[ToolDecision]:
        return self.applier.step(self.cluster.snapshot())

    def snapshot(self, cluster: ClusterView) -> ToolHostView:
        return self.host.snapshot()

    def prepare(self, program_id: str, ahead: bool) -> bool:
        return self.host.prepare(program_id, ahead)

    def reclaim(self, program_id: str, reason: str) -> bool:
        return self.host.reclaim(program_id, reason)

    def _log(self, action: str, program_id: str, reason: str) -> None:
        self.cluster._log(action, program_id, None, reason)  # the scheduler's decisions table

    def _ticker(self, interval_s: float):
        while True:
            yield self.cluster.env.timeout(interval_s)
            self.step()
            if self.host.stuck and self.host.stalled_at_s is None:
                self.host.stalled_at_s = self.host.last_progress_s
                if self.stop is not None:
                    self.stop()


def build_tool_cluster(env: simpy.Environment, replicas: list[Replica], policy: Policy, tool_policy: str,
                       tool_options: dict[str, Any], host_config: SimHostConfig,
                       on_program_end: Callable[[SimProgram], None] | None,
                       done: simpy.Event) -> SimCluster:
    """The cluster ``simulate`` runs when environments are modelled, with its ``SimTools``
    attached; ``done`` fires if the host runs out of room for good."""
    def stop() -> None:
        if not done.triggered:
            done.succeed()

    cluster = SimCluster(env, replicas, policy, on_program_end=on_program_end)
    tools = SimTools(cluster, make_tool_policy(tool_policy, **tool_options), host_config, stop=stop)
    tools.attach()
    return cluster


def tool_tables(cluster: SimCluster) -> dict[str, list[dict[str, Any]]]:
    """``build_tables`` keyword arguments for the environment tables; {} when not modelled."""
    tools = cluster.gate
    if not isinstance(tools, SimTools):
        return {}
    return {"environments": tools.host.environment_rows(), "tool_timeseries": list(tools.host.series)}


def tool_context(cluster: SimCluster) -> dict[str, Any]:
    """Summary fields only the mechanism knows: when the host ran out of room, what was left."""
    tools = cluster.gate
    if not isinstance(tools, SimTools):
        return {}
    return {"tool_host_stalled_at_s": tools.host.stalled_at_s, "programs_unfinished": len(cluster.programs),
            "programs_waiting_env_at_end": tools.host.waiting_programs}


__all__ = ["SimTools", "SimHostConfig", "build_tool_cluster", "drawn_setup_s", "trace_env_resources",
           "tool_context", "tool_tables"]
