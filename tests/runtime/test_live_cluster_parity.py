"""Parity: LiveCluster, fed the events of a simulated run on a fake clock, shows
the policy the same programs at the same times and applies the same decisions.

The simulator runs a small thrashing scenario; its step table gives, per
request, when it became ready and when it completed (with usage). Replaying
those events and the dt ticks into a LiveCluster (no sockets, no asyncio)
must reproduce every policy call (trigger, time, program views) and the
decision log exactly. Prompts grow by exactly the previous output, so the
live rule "context = last prompt + completion" equals the trace's prompt.
"""

from __future__ import annotations

import heapq

import pytest

from thunder.policies.registry import make_policy
from thunder.runtime.cluster import LiveCluster
from thunder.runtime.state import BackendState, Usage
from thunder.sim.run import SimConfig, simulate
from thunder.sim.step_time import EngineSpec, StepTimeModel
from thunder.traces import TraceProgram, TraceStep

INTERVAL_S = 0.37  # no tick coincides with a request event


def engine(num_blocks: int) -> EngineSpec:
    """A replica with 16-token blocks and a simple step time: 10 ms + 1 us per prefill token."""
    return EngineSpec(name="test", num_blocks=num_blocks, block_size=16, max_num_seqs=64,
                      max_num_batched_tokens=2048,
                      step_time=StepTimeModel(overhead_s=0.01, per_prefill_token_s=1e-6))


def growing(program_id: str, first: int, turns: int, output: int, tool_s: float) -> TraceProgram:
    """Each prompt is the previous prompt plus the previous output: a growing conversation."""
    steps = tuple(TraceStep(prompt_tokens=first + i * output, output_tokens=output,
                            tool=None if i == turns - 1 else "bash", tool_s=None if i == turns - 1 else tool_s)
                  for i in range(turns))
    return TraceProgram(program_id=program_id, workflow="test", steps=steps)


class Recorder:
    """Wraps a policy and logs what it was shown and what it answered."""

    def __init__(self, policy):
        self.policy = policy
        self.name = policy.name
        self.config = policy.config
        self.interval_s = policy.interval_s
        self.checks_before_dispatch = policy.checks_before_dispatch
        self.calls = []

    def route(self, view, program):
        answer = self.policy.route(view, program)
        self.calls.append(("route", round(view.now_s, 9), _programs(view), program.program_id, answer))
        return answer

    def decide(self, view, trigger):
        answer = tuple(self.policy.decide(view, trigger))
        self.calls.append(("decide", round(view.now_s, 9), _programs(view), trigger, answer))
        return answer


def _programs(view):
    return tuple(sorted(view.programs.values(), key=lambda p: p.program_id))


def simulated(programs, replicas, num_blocks, options):
    policy = Recorder(make_policy("thunder-paper", interval_s=INTERVAL_S, **options))
    outcome = simulate(programs, policy, engine(num_blocks), SimConfig(parallel=len(programs), replicas=replicas))
    return outcome, policy


def replayed(outcome, sim_policy, programs, replicas, options):
    clock = [0.0]
    policy = Recorder(make_policy("thunder-paper", interval_s=INTERVAL_S, **options))
    spec = outcome.spec
    backends = [BackendState(f"fake://{i}", True, spec.num_blocks * spec.block_size, spec.block_size)
                for i in range(replicas)]
    cluster = LiveCluster(policy, backends, clock=lambda: clock[0])
    first_prompt = {p.program_id: p.steps[0].prompt_tokens for p in programs}
    tools = {(p.program_id, i): step.tool for p in programs for i, step in enumerate(p.steps)}
    last_step = {p.program_id: len(p.steps) - 1 for p in programs}
    # (time, order, kind, row): at equal times, requests become ready in the order the
    # simulator routed them and complete in the order it recorded them.
    routed = [call[3] for call in sim_policy.calls if call[0] == "route"]
    route_order = {}
    for index, pid in enumerate(routed):
        route_order.setdefault(pid, []).append(index)
    events = []
    for order, row in enumerate(outcome.cluster.records.steps):
        events.append((row["ready_s"], route_order[row["program_id"]][row["step"]], "ready", row))
        events.append((row["done_s"], len(routed) + order, "done", row))
    end_s = max(e[0] for e in events)
    tick_s = INTERVAL_S  # summed like SimPy's timeouts, so the floats match exactly
    while tick_s <= end_s:
        events.append((tick_s, -1, "tick", None))
        tick_s += INTERVAL_S
    heapq.heapify(events)
    tickets = {}
    while events:
        time_s, _, kind, row = heapq.heappop(events)
        clock[0] = time_s
        if kind == "tick":
            cluster.tick()
        elif kind == "ready":
            key = (row["program_id"], row["step"])
            tickets[key] = cluster.request_ready(row["program_id"], first_prompt[row["program_id"]], tools[key])
        else:
            key = (row["program_id"], row["step"])
            usage = Usage(row["prompt_tokens"], row["output_tokens"], row["cached_tokens"])
            if row["step"] == last_step[row["program_id"]]:
                cluster.request_done(tickets[key], usage, release=True)
            else:
                cluster.request_done(tickets[key], usage)
    return cluster, policy


@pytest.mark.parametrize("replicas,num_blocks,decay_base", [(1, 64, 1.0), (2, 48, 1.0), (1, 64, 2.0)])
def test_live_cluster_makes_the_simulators_decisions(replicas, num_blocks, decay_base):
    programs = [growing(pid, 200 + 40 * i, 5, output=80, tool_s=0.5 + 0.11 * i)
                for i, pid in enumerate("abcd")]
    options = {"decay_base": decay_base}
    outcome, sim_policy = simulated(programs, replicas, num_blocks, options)
    cluster, live_policy = replayed(outcome, sim_policy, programs, replicas, options)
    sim_decisions = [d[:4] for d in outcome.cluster.records.decisions]
    live_decisions = [d[:4] for d in cluster.records.decisions]
    assert any(d[1] == "pause" for d in sim_decisions)  # the scenario does exercise the policy
    assert live_decisions == sim_decisions
    assert live_policy.calls == sim_policy.calls
    assert cluster.programs == {}
