"""ThunderAgent's thrashing check and pause rules (paper 4.3.1, Eq. 6, 7, 9, 11).

Backends hold 1000 tokens and lambda_max = 1 unless a test says otherwise.
"""

from __future__ import annotations

import pytest
from policy_views import acting, cluster, reasoning

from thunder.core.view import TICK, Pause, Trigger, TriggerKind
from thunder.policies.thunder.demand import decay_weight
from thunder.policies.thunder.paper import ProgramAwarePolicy, ThunderConfig


def decide(view, **options):
    return ProgramAwarePolicy(ThunderConfig(**options)).decide(view, TICK)


def test_no_pause_while_demand_fits_capacity():
    assert decide(cluster(reasoning("r", 600), acting("a", 400))) == ()


def test_acting_program_weighs_x_to_the_minus_seconds_acting():
    program = acting("a", 800, since=7.0)
    assert decay_weight(program, now_s=10.0, decay_base=2) == pytest.approx(1 / 8)
    assert decay_weight(program, now_s=10.0, decay_base=1) == 1.0
    assert decay_weight(reasoning("r", 800), now_s=10.0, decay_base=2) == 1.0


def test_decay_keeps_a_long_acting_program_from_triggering_a_pause():
    # 900 + 800/8 = 1000 <= 1000: no thrashing once the tool has run 3 s.
    view = cluster(reasoning("r", 900), acting("a", 800, since=7.0), now=10.0)
    assert decide(view, decay_base=2) == ()


def test_without_decay_the_same_backend_thrashes():
    view = cluster(reasoning("r", 900), acting("a", 800, since=7.0), now=10.0)
    assert decide(view, decay_base=1) == (Pause("a"),)


def test_restore_only_decay_counts_acting_programs_in_full_when_checking():
    # The public code's variant: decay only when computing room for restores.
    view = cluster(reasoning("r", 900), acting("a", 800, since=7.0), now=10.0)
    assert decide(view, decay_when="restore-only") == (Pause("a"),)


def test_pauses_acting_programs_shortest_first():
    # Demand 1350, 350 to free: 200 then 250 suffice; the 300 stays.
    view = cluster(reasoning("r", 600), acting("a300", 300), acting("a200", 200), acting("a250", 250))
    assert decide(view) == (Pause("a200"), Pause("a250"))


def test_acting_before_reasoning_even_when_reasoning_is_shorter():
    view = cluster(reasoning("r100", 100), reasoning("r600", 600), acting("a400", 400))
    assert decide(view) == (Pause("a400"),)


def test_reasoning_programs_are_marked_only_when_acting_ones_are_not_enough():
    # Demand 1200: the only acting program frees 100, then the shortest reasoning one.
    view = cluster(reasoning("r700", 700), reasoning("r400", 400), acting("a100", 100))
    assert decide(view) == (Pause("a100"), Pause("r400"))


def test_exactly_one_pause_when_one_suffices():
    view = cluster(reasoning("r", 700), acting("a1", 200), acting("a2", 300))
    assert decide(view) == (Pause("a1"),)


def test_programs_already_marked_count_as_freed():
    # r600 was marked on an earlier step; its request is still running.
    # Without it demand is 800, so nothing more is paused.
    view = cluster(reasoning("r600", 600, marked_for_pause=True), reasoning("r500", 500),
                   acting("a300", 300))
    assert decide(view) == ()


def test_a_second_step_does_not_pause_again_for_the_same_overflow():
    policy = ProgramAwarePolicy()
    first = cluster(reasoning("r1", 600), reasoning("r2", 500))
    assert policy.decide(first, TICK) == (Pause("r2"),)
    marked = cluster(reasoning("r1", 600), reasoning("r2", 500, marked_for_pause=True))
    assert policy.decide(marked, Trigger(TriggerKind.REQUEST_DONE, "r1")) == ()


def test_short_picks_made_redundant_by_a_long_one_are_kept_running():
    # Greedy takes 20, 30, then 700; 700 alone frees enough, and
    # 700^2 < 20^2 + 30^2 + 700^2 (Eq. 9), so only it is paused.
    view = cluster(reasoning("r", 500), acting("a20", 20), acting("a30", 30), acting("a700", 700))
    assert decide(view) == (Pause("a700"),)


def test_lambda_max_below_one_leaves_headroom():
    view = cluster(reasoning("r", 700), acting("a", 200))
    assert decide(view, lambda_max=0.8, lambda_min=0.8) == (Pause("a"),)


def test_shared_prefix_is_counted_once_per_backend():
    # Three programs of 400 tokens, 300 of them a shared system prompt:
    # 300 + 3 * 100 = 600 held, not 1200.
    same_prompt = {"shared_prefix_id": "sys", "shared_prefix_tokens": 300}
    view = cluster(*(reasoning(f"r{i}", 400, **same_prompt) for i in range(3)))
    assert decide(view, shared_prefix_once=True) == ()
    assert decide(view, shared_prefix_once=False) == (Pause("r0"),)


def test_each_backend_is_checked_against_its_own_capacity():
    view = cluster(reasoning("r0", 900, on=0), acting("a0", 200, on=0),
                   reasoning("r1", 900, on=1), capacity=[1000, 1000])
    assert decide(view) == (Pause("a0"),)


def test_programs_on_an_unhealthy_backend_are_requeued():
    view = cluster(reasoning("r", 100, on=1), acting("a", 100, on=1),
                   reasoning("m", 100, on=1, marked_for_pause=True),
                   capacity=[1000, 1000], unhealthy=[1])
    assert set(decide(view)) == {Pause("r"), Pause("a")}
