"""RunningDemand's error bound holds: the reference's float is always within it.

The reference adds every member to a fresh ``BackendDemand`` in view order;
``RunningDemand`` was fed the same members one change at a time (with
programs coming and going before) and scales its decaying sum on use.
"""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st
from policy_views import acting, reasoning

from thunder.policies.thunder.certify import Uncertain, compare
from thunder.policies.thunder.demand import BackendDemand, decay_weight, split_tokens
from thunder.policies.thunder.running_demand import HORIZON_BITS, RunningDemand


def count(running: RunningDemand, program, origin_s: float, base: float, once: bool, sign: int) -> None:
    prefix, private_tokens = split_tokens(program, once)
    decays = program.phase.value == "acting" and base != 1.0
    factor = float(base ** (program.phase_since_s - origin_s)) if decays else None
    running.change(prefix, private_tokens, program.shared_prefix_tokens, factor, sign)


def reference_total(members, now_s: float, base: float, once: bool) -> float:
    demand = BackendDemand(10**6, once)
    for program in members:
        demand.add(program, decay_weight(program, now_s, base))
    return demand.total_tokens


@st.composite
def programs(draw):
    prefix = draw(st.sampled_from([None, "sys"]))
    shared = {"shared_prefix_id": prefix, "shared_prefix_tokens": 300 if prefix else 0}
    pid, tokens = draw(st.uuids()).hex, draw(st.integers(1, 400_000))
    if draw(st.booleans()):
        return acting(pid, tokens, since=draw(st.floats(0.0, 60.0)), **shared)
    return reasoning(pid, tokens, **shared)


@settings(max_examples=300, deadline=None)
@given(members=st.lists(programs(), max_size=40), gone=st.lists(programs(), max_size=40),
       base=st.sampled_from([1.0, 2.0, 1.1, 10.0]), once=st.booleans(),
       origin_s=st.floats(0.0, 30.0), ahead_s=st.floats(0.0, 60.0), order=st.randoms())
def test_the_reference_float_is_within_the_error_bound(members, gone, base, once, origin_s, ahead_s, order):
    now_s = max([origin_s + ahead_s] + [p.phase_since_s for p in members])  # no phase starts in the future
    if base > 1 and now_s - origin_s > HORIZON_BITS / math.log2(base):
        return  # the index would have started over with a new origin by now
    running = RunningDemand()
    for program in gone + members:
        count(running, program, origin_s, base, once, 1)
    for program in gone:
        count(running, program, origin_s, base, once, -1)
    order.shuffle(members)
    expected = reference_total(members, now_s, base, once)
    scale = float(base ** -(now_s - origin_s)) if base != 1.0 else 1.0
    total, error = running.total(scale)
    assert abs(total - expected) <= error
    if not any(p.phase.value == "acting" for p in members) or base == 1.0:
        assert (total, error) == (expected, 0.0)  # exact: the same float, bit for bit


def test_a_prefix_with_two_sizes_is_uncertain():
    running = RunningDemand()
    running.change("sys", 10, 300, None, 1)
    running.change("sys", 10, 200, None, 1)
    try:
        running.total(1.0)
    except Uncertain:
        pass
    else:
        raise AssertionError("expected Uncertain")
    running.change("sys", 10, 200, None, -1)
    assert running.total(1.0) == (310.0, 0.0)  # one holder left: 10 private + 300 shared


def test_compare_answers_only_when_certain():
    assert compare(1.0, 0.0, 1.0, 0.0) == 0  # exact values compare as floats
    assert compare(1.0, 1e-9, 2.0, 1e-9) == -1
    try:
        compare(1.0, 1e-9, 1.0 + 1e-10, 0.0)
    except Uncertain:
        pass
    else:
        raise AssertionError("expected Uncertain")
