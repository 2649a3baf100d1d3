"""ThunderAgent's restore rules: global queue, Eq. 10 priority, best-fit
placement, hysteresis, starvation guards (paper 4.3.1-4.3.2).

Backends hold 1000 tokens, lambda_min = lambda_max = 1 unless a test says otherwise.
"""

from __future__ import annotations

from policy_views import acting, cluster, new, paused_acting, reasoning, waiting

from thunder.core.view import TICK, Dispatch, Hold, Pause, Restore, Trigger, TriggerKind
from thunder.policies.thunder.paper import ProgramAwarePolicy, ThunderConfig

ARRIVAL = Trigger(TriggerKind.ARRIVAL, "n")


def decide(view, **options):
    return ProgramAwarePolicy(ThunderConfig(**options)).decide(view, TICK)


def restored(decisions):
    return [(d.program_id, d.backend) for d in decisions if isinstance(d, Restore)]


def test_new_program_is_held_then_restored_in_the_same_instant():
    policy = ProgramAwarePolicy()
    view = cluster(new("n", 100))
    assert isinstance(policy.route(view, view.programs["n"]), Hold)
    assert policy.decide(view, ARRIVAL) == (Restore("n", 0),)


def test_route_dispatches_active_programs_and_holds_the_rest():
    policy = ProgramAwarePolicy()
    view = cluster(reasoning("r", 100, on=1), reasoning("m", 100, marked_for_pause=True),
                   waiting("w", 100), capacity=[1000, 1000])
    assert policy.route(view, view.programs["r"]) == Dispatch(1)
    assert isinstance(policy.route(view, view.programs["m"]), Hold)
    assert isinstance(policy.route(view, view.programs["w"]), Hold)
    down = cluster(reasoning("r", 100, on=1), capacity=[1000, 1000], unhealthy=[1])
    assert isinstance(policy.route(down, down.programs["r"]), Hold)


def test_reasoning_is_restored_before_new_before_acting():
    queue = [paused_acting("a", 100), new("n", 100), waiting("w", 100)]
    assert restored(decide(cluster(reasoning("r", 900), *queue))) == [("w", 0)]
    assert restored(decide(cluster(reasoning("r", 900), *queue[:2]))) == [("n", 0)]
    assert restored(decide(cluster(reasoning("r", 800), *queue))) == [("w", 0), ("n", 0)]


def test_shortest_context_first_within_a_class_ties_by_id():
    view = cluster(reasoning("r", 650), waiting("w300", 300), waiting("w200", 200),
                   waiting("b100", 100), waiting("a100", 100))
    # Room 350: 100 (a), 100 (b), then 200 no longer fits, nor 300.
    assert restored(decide(view)) == [("a100", 0), ("b100", 0)]


def test_restores_count_immediately_so_one_step_does_not_overfill():
    view = cluster(*(waiting(f"w{i}", 300) for i in range(4)))
    assert restored(decide(view)) == [("w0", 0), ("w1", 0), ("w2", 0)]


def test_skip_ahead_a_candidate_that_fits_nowhere():
    # w500 has priority but does not fit the 400 left; the 300 behind it does.
    view = cluster(reasoning("r", 600), waiting("w500", 500), paused_acting("a300", 300))
    assert restored(decide(view)) == [("a300", 0)]


def test_best_fit_picks_the_tightest_backend():
    view = cluster(reasoning("r0", 700, on=0), reasoning("r1", 200, on=1), waiting("w", 250),
                   capacity=[1000, 1000])
    assert restored(decide(view, placement="best-fit")) == [("w", 0)]


def test_most_free_picks_the_emptiest_backend():
    view = cluster(reasoning("r0", 700, on=0), reasoning("r1", 200, on=1), waiting("w", 250),
                   capacity=[1000, 1000])
    assert restored(decide(view, placement="most-free")) == [("w", 1)]


def test_best_fit_keeps_room_for_a_big_program_that_most_free_would_strand():
    # Two 300s then a 700. Best fit packs both 300s onto backend 0's 600,
    # leaving backend 1 for the 700 later; most-free splits them.
    running = [reasoning("r0", 400, on=0), reasoning("r1", 200, on=1)]
    queue = [waiting("w1", 300), waiting("w2", 300)]
    view = cluster(*running, *queue, capacity=[1000, 1000])
    assert restored(decide(view, placement="best-fit")) == [("w1", 0), ("w2", 0)]
    assert restored(decide(view, placement="most-free")) == [("w1", 1), ("w2", 0)]


def test_global_queue_migrates_paused_programs_to_the_idle_backend():
    # Figure 3: backend 0 thrashes, backend 1 is underused. The acting
    # program on 0 is paused and the queued reasoning ones go to backend 1.
    view = cluster(reasoning("p1", 900, on=0), acting("p2", 300, on=0),
                   reasoning("p10", 300, on=1), waiting("p6", 200), waiting("p9", 150),
                   capacity=[1000, 1000])
    assert decide(view) == (Pause("p2"), Restore("p9", 1), Restore("p6", 1))


def test_shared_prefix_once_lets_more_programs_fit():
    prompt = {"shared_prefix_id": "sys", "shared_prefix_tokens": 300}
    view = cluster(*(new(f"n{i}", 400, **prompt) for i in range(4)))
    # Once: 300 + 4 * 100 = 700. Full: 400 each, two fit.
    assert len(restored(decide(view, shared_prefix_once=True))) == 4
    assert len(restored(decide(view, shared_prefix_once=False))) == 2


def test_restore_room_counts_acting_programs_with_decay():
    # Tool running for 3 s: 800 tokens weigh 100, so it fits the 150 left.
    view = cluster(reasoning("r", 850), paused_acting("a", 800, since=7.0), now=10.0)
    assert restored(decide(view)) == [("a", 0)]


def test_marked_programs_still_occupy_memory_until_their_request_ends():
    view = cluster(reasoning("m", 600, marked_for_pause=True), reasoning("r", 300), waiting("w", 200))
    assert decide(view) == ()


def test_hysteresis_restores_only_below_the_low_watermark():
    queue = [waiting(f"w{i}", 200) for i in range(3)]
    busy = cluster(reasoning("r", 600), *queue)
    assert decide(busy, lambda_min=0.5, lambda_max=1.0) == ()
    quiet = cluster(reasoning("r", 400), *queue)
    # Below 500, so it restores, and fills up to lambda_max: 400 + 3 * 200 = 1000.
    assert len(restored(decide(quiet, lambda_min=0.5, lambda_max=1.0))) == 3


def test_never_restores_onto_an_unhealthy_backend():
    view = cluster(reasoning("r", 900, on=0), waiting("w", 200), capacity=[1000, 1000], unhealthy=[1])
    assert decide(view) == ()


def test_a_program_larger_than_any_backend_runs_alone_on_an_empty_one():
    view = cluster(reasoning("r", 100, on=0), waiting("huge", 1500), capacity=[1000, 1000])
    assert restored(decide(view)) == [("huge", 1)]


def test_a_program_larger_than_any_backend_waits_while_none_is_empty():
    view = cluster(reasoning("r", 100), waiting("huge", 1500), waiting("w", 100))
    assert restored(decide(view)) == [("w", 0)]


def test_a_program_queued_past_the_aging_bound_goes_first():
    # Acting is the last class, but 100 s in the queue beats a fresh reasoning one.
    view = cluster(reasoning("r", 900), waiting("fresh", 100, queued_at=90.0),
                   paused_acting("old", 100, queued_at=0.0), now=100.0)
    assert restored(decide(view, starvation_s=60, decay_base=1)) == [("old", 0)]
    assert restored(decide(view, starvation_s=1000, decay_base=1)) == [("fresh", 0)]


def test_an_aged_program_that_does_not_fit_reserves_the_roomiest_backend():
    # "old" needs 700; backend 1 has the most room (500), so nothing else is
    # restored there and it drains; backend 0 still takes what fits it.
    view = cluster(reasoning("r0", 800, on=0), reasoning("r1", 500, on=1),
                   waiting("old", 700, queued_at=0.0), waiting("w", 150, queued_at=95.0),
                   waiting("v", 400, queued_at=95.0), capacity=[1000, 1000], now=100.0)
    assert restored(decide(view, starvation_s=60)) == [("w", 0)]
    assert restored(decide(view, starvation_s=1000)) == [("w", 0), ("v", 1)]


def test_timer_only_mode_ignores_events_until_the_tick():
    # The public code decides only on its periodic timer.
    policy = ProgramAwarePolicy(ThunderConfig(decide_on_events=False))
    view = cluster(new("n", 100))
    assert policy.decide(view, ARRIVAL) == ()
    assert policy.decide(view, TICK) == (Restore("n", 0),)
