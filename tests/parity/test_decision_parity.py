"""Decision parity: one deterministic scenario through the simulator and through
the live mechanism gives the same sequence of pause and restore decisions.

The live side is not fed the simulator's timings (that is
``tests/runtime/test_live_cluster_parity.py``): here ``LiveCluster`` runs on a
fake clock under its own small driver, agents that sleep fixed tool times and
an engine that answers a dispatched request after ``output_tokens`` steps of a
fixed length, which is what the simulated engine does with an overhead-only
step time and no preemption. The two worlds then differ only in how they get
there (SimPy processes and a paged KV model vs. a heap of events), so equal
decisions show that the proxy's mechanism applies the policy as the simulator
does: same pauses, same restores, same programs, same order, nearly the same
times (the simulated engine aligns a request to its step clock, so times may
drift by a few steps).

Scenario: one backend of 640 tokens, four programs whose contexts grow by
exactly their output each turn (so the live rule "context = prompt +
completion of the last response" equals the trace's prompt), fixed tool
times chosen so that no two events coincide.
"""

from __future__ import annotations

import heapq
import itertools

import pytest

from thunder.policies.registry import make_policy
from thunder.runtime.cluster import LiveCluster
from thunder.runtime.state import BackendState, Ticket, Usage
from thunder.sim.run import SimConfig, simulate
from thunder.sim.step_time import EngineSpec, StepTimeModel
from thunder.traces import TraceProgram, TraceStep

STEP_S = 0.002  # one engine step; a request of n output tokens takes n steps
OUTPUT_TOKENS = 40
INTERVAL_S = 0.37  # the policy's dt: ticks fall between request events
BLOCK = 16
NUM_BLOCKS = 40  # 640 tokens: the four programs together outgrow it by their third turn
TOOL_S = {"a": (0.50, 0.83, 0.61, 0.97), "b": (0.71, 0.55, 1.13, 0.66),
          "c": (0.93, 1.27, 0.58, 0.79), "d": (0.62, 0.89, 1.31, 0.53)}
FIRST_PROMPT = {"a": 96, "b": 128, "c": 160, "d": 192}
TOLERANCE_S = 10 * STEP_S


def scenario() -> list[TraceProgram]:
    programs = []
    for pid, tools in TOOL_S.items():
        turns = len(tools) + 1
        steps = tuple(
            TraceStep(prompt_tokens=FIRST_PROMPT[pid] + i * OUTPUT_TOKENS, output_tokens=OUTPUT_TOKENS,
                      tool=None if i == turns - 1 else "bash", tool_s=None if i == turns - 1 else tools[i])
            for i in range(turns))
        programs.append(TraceProgram(program_id=pid, workflow="parity", steps=steps))
    return programs


def engine_spec() -> EngineSpec:
    # Overhead-only steps and a budget no prompt reaches: a request admitted at a step
    # boundary finishes exactly OUTPUT_TOKENS steps later, whatever else runs.
    return EngineSpec(name="parity", num_blocks=NUM_BLOCKS, block_size=BLOCK, max_num_seqs=64,
                      max_num_batched_tokens=100_000, step_time=StepTimeModel(overhead_s=STEP_S))


def policy(decay_base: float):  # type: ignore[no-untyped-def]
    # lambda 0.8 leaves room for the tokens decoding adds, so the simulated engine never
    # preempts (the live stand-in has no KV model and could not follow it there).
    return make_policy("thunder-paper", interval_s=INTERVAL_S, decay_base=decay_base, lambda_max=0.8, lambda_min=0.8)


def simulated(decay_base: float) -> tuple[list[tuple[float, str, str, int | None]], int]:
    outcome = simulate(scenario(), policy(decay_base), engine_spec(), SimConfig(parallel=4))
    preemptions = sum(row["preemptions"] for row in outcome.cluster.records.steps)
    return [d[:4] for d in outcome.cluster.records.decisions], preemptions


class LiveDriver:
    """Agents and an engine around a LiveCluster, on a heap of (time, order, event)."""

    def __init__(self, decay_base: float) -> None:
        self.now = 0.0
        self.events: list[tuple[float, int, str, object]] = []
        self.order = itertools.count()
        self.cluster = LiveCluster(policy(decay_base),
                                   [BackendState("fake://0", True, NUM_BLOCKS * BLOCK, BLOCK)],
                                   clock=lambda: self.now)
        self.cluster.on_dispatch = self.dispatched
        self.programs = {p.program_id: p for p in scenario()}

    def at(self, time_s: float, kind: str, payload: object) -> None:
        heapq.heappush(self.events, (time_s, next(self.order), kind, payload))

    def dispatched(self, ticket: Ticket) -> None:
        # The engine: busy for one step per output token from the moment of dispatch.
        self.at(self.now + OUTPUT_TOKENS * STEP_S, "done", ticket)

    def ready(self, program_id: str) -> None:
        program = self.programs[program_id]
        index = self.cluster.views[program_id].steps_done if program_id in self.cluster.views else 0
        self.cluster.request_ready(program_id, program.steps[index].prompt_tokens, program.steps[index].tool)

    def done(self, ticket: Ticket) -> None:
        program = self.programs[ticket.program_id]
        step = program.steps[ticket.step]
        last = ticket.step == len(program.steps) - 1
        self.cluster.request_done(ticket, Usage(step.prompt_tokens, step.output_tokens), release=last)
        if not last:
            assert step.tool_s is not None
            self.at(self.now + step.tool_s, "ready", ticket.program_id)

    def run(self) -> list[tuple[float, str, str, int | None]]:
        for program_id in self.programs:
            self.at(0.0, "ready", program_id)
        tick = INTERVAL_S
        while self.events or self.cluster.programs:
            if not self.events or tick < self.events[0][0]:
                self.now = tick
                self.cluster.tick()
                tick += INTERVAL_S
                continue
            self.now, _, kind, payload = heapq.heappop(self.events)
            if kind == "ready":
                self.ready(str(payload))
            else:
                assert isinstance(payload, Ticket)
                self.done(payload)
        return [d[:4] for d in self.cluster.records.decisions]


@pytest.mark.parametrize("decay_base", [1.0, 2.0])
def test_simulator_and_live_mechanism_pause_and_restore_alike(decay_base: float) -> None:
    sim, preemptions = simulated(decay_base)
    live = LiveDriver(decay_base).run()
    assert preemptions == 0, "the scenario must not preempt: the live engine stand-in cannot"

    def moves(decisions: list[tuple[float, str, str, int | None]]) -> list[tuple[str, str, int | None]]:
        return [(action, pid, backend) for _, action, pid, backend in decisions]

    assert sum(action == "pause" for action, _, _ in moves(sim)) >= 3, "the scenario must exercise the policy"
    assert moves(live) == moves(sim)  # pauses, restores and marks: same programs, same order
    drift = max(abs(a[0] - b[0]) for a, b in zip(sim, live))
    assert drift <= TOLERANCE_S
