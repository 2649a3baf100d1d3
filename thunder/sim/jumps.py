"""Decode jumps: many identical decode steps advanced as one simulated event, exactly.

When a step has no prefill and admission was tried, the next steps are identical but
for one token of context each, until a request finishes, blocks run out, a pin expires
or a request arrives. ``thunder.sim.engine.Replica`` advances them in one jump; this
module plans it: how many blocks steps 1..i take, each step's duration, and each step's
end as the sequential float sum that single steps would reach (``TimeoutAt`` then fires
on that very instant). Short jumps (most) are planned in plain Python, long ones with numpy.
"""

from __future__ import annotations

import heapq
from typing import Any, Callable

import numpy as np
import simpy
from simpy.events import NORMAL

from thunder.sim.decoders import DecodeSet
from thunder.sim.step_time import StepTimeModel

# Two instants closer than this are the same step boundary (float sums of step
# times taken along different paths differ in the last bits).
BOUNDARY_S = 1e-9
# Jumps planned to end within this many steps are planned in plain Python (most are).
SHORT_JUMP_STEPS = 64


class TimeoutAt(simpy.Timeout):
    """A timeout that fires at the instant ``at_s`` itself.

    ``env.timeout(at_s - now)`` fires at ``now + (at_s - now)``, which can miss ``at_s``
    by a rounding step, and then no delay lands on it. A decode jump must end where its
    steps, one by one, would have: on the sequential sum of their durations. So this
    is SimPy's ``Timeout`` with the same fields, queued at an absolute time.
    """

    def __init__(self, env: simpy.Environment, at_s: float) -> None:
        if at_s < env.now:
            raise ValueError(f"{at_s} is in the past (now {env.now})")
        self.env = env
        self.callbacks = []
        self._value = None
        self._delay = at_s - env.now
        self._ok = True
        heapq.heappush(env._queue, (at_s, NORMAL, next(env._eid), self))  # as Environment.schedule


def first_of(env: simpy.Environment, *events: simpy.Event) -> simpy.Event:
    """An event that succeeds when the first of ``events`` is processed: ``a | b`` without
    building a Condition and its value. The hops are a Condition's (the first event's
    callback schedules this one at that instant), so the order of events is unchanged."""
    gate = env.event()

    def open_gate(_: simpy.Event) -> None:
        if not gate.triggered:
            gate.succeed()
    for event in events:
        event.callbacks.append(open_gate)  # pending events have a list (it is None once processed)
    return gate


def plan_long_jump(decoders: DecodeSet, step_time: StepTimeModel, max_steps: int, free: int,
                   start: float) -> tuple[Any, Any, list[float]]:
    """Blocks taken by steps 1..i, step durations and step ends of the jump, vectorised."""
    extra = decoders.new_blocks_per_step(max_steps)  # a fresh array
    extra[0] = 0  # allocated by the plan
    np.cumsum(extra, out=extra)  # blocks for steps 1..i
    steps = min(max_steps, int(np.searchsorted(extra, free, side="right")))
    durations = step_time.decode_run_s(len(decoders), decoders.context_tokens, steps)
    # Sequential sums from ``start``, as successive single steps would add them up.
    ends = durations.copy()
    ends[0] += start
    np.cumsum(ends, out=ends)
    return extra[:steps], durations, ends.tolist()


def plan_short_jump(decoders: DecodeSet, step_s: Callable[..., float], max_steps: int, free: int,
                    start: float) -> tuple[list[int], list[float], list[float]]:
    """``plan_long_jump`` one step at a time, for the common short jump (numpy's cost per
    call outweighs its speed per element there). Each duration is the single step's
    ``step_s``, which equals ``decode_run_s`` element by element."""
    block_size = decoders.block_size
    clock = decoders.clock
    counts = [len(bucket) for bucket in decoders.buckets]
    extra = [0]
    taken = 0
    for i in range(1, max_steps):
        taken += counts[-(clock + i) % block_size]
        if taken > free:
            break
        extra.append(taken)
    seqs = len(decoders)
    context = decoders.context_tokens
    durations: list[float] = []
    ends: list[float] = []
    end = start
    for i in range(len(extra)):
        duration = step_s(0, 0.0, seqs, context + seqs * i, 0)
        durations.append(duration)
        end = end + duration
        ends.append(end)
    return extra, durations, ends
