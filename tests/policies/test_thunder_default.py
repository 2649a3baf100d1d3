"""thunder's default policy: known answers for each mechanism, and the paper-exact
policy's bugs (B1-B5 of the policy issue) shown on the same scenario, fixed here."""

from __future__ import annotations

import math

from thunder.core.program import Phase, Program, Status
from thunder.core.view import BackendView, ClusterView, Pause, Restore, Trigger, TriggerKind, TICK
from thunder.policies import make_policy
from thunder.policies.thunder.estimates import OutputLengths, SampleWindow, ToolDurations

# Mechanisms off unless a test turns one on, so each test sees one rule at work.
PLAIN = dict(reserve_quantile=0.0, tool_decay=False, decay_base=1.0, eviction_weight=0.0, group_weight=0.0,
             affinity_share=0.0, aging_s=math.inf, max_wait_s=math.inf, restore_headroom=0.0)


def prog(pid: str, c: int, phase: Phase = Phase.ACTING, status: Status = Status.ACTIVE, backend: int | None = 0,
         since: float = 0.0, steps: int = 3, waiting: bool = False, **extra) -> Program:
    if status is Status.PAUSED:
        backend = None
        extra.setdefault("paused_since_s", since)
    return Program(program_id=pid, context_tokens=c, phase=phase, status=status, backend=backend,
                   phase_since_s=since, arrived_s=0.0, steps_done=steps, waiting=waiting, **extra)


def view(now: float, capacity: int | tuple[int, ...], *programs: Program) -> ClusterView:
    capacities = capacity if isinstance(capacity, tuple) else (capacity,)
    return ClusterView(now_s=now, backends=tuple(BackendView(i, c) for i, c in enumerate(capacities)),
                       programs={p.program_id: p for p in programs})


def paused(decisions) -> set[str]:
    return {d.program_id for d in decisions if isinstance(d, Pause)}


def restored(decisions) -> dict[str, int]:
    return {d.program_id: d.backend for d in decisions if isinstance(d, Restore)}


# -- B5: shortest-first is not optimal for Eq. 9 -------------------------------------------

def b5_view():
    # 110 tokens counted on a backend of 100: 10 must go, from acting contexts {9, 9, 10}.
    return view(10.0, 100, prog("r", 82, Phase.REASONING), prog("a1", 9), prog("a2", 9), prog("a3", 10))


def test_b5_paper_policy_pauses_two_short_programs():
    assert paused(make_policy("thunder-paper", decay_base=1.0).decide(b5_view(), TICK)) == {"a1", "a2"}  # 162


def test_b5_min_cost_pauses_the_one_program_that_frees_enough():
    assert paused(make_policy("thunder", **PLAIN).decide(b5_view(), TICK)) == {"a3"}  # sum of c^2: 100


def test_shortest_first_rule_stays_available_for_ablation():
    policy = make_policy("thunder", **{**PLAIN, "pause_rule": "shortest-first"})
    assert paused(policy.decide(b5_view(), TICK)) == {"a1", "a2"}


# -- B3: decayed acting programs paused although they free nothing --------------------------

def b3_view():
    # Two 40-token programs acting for 10 s (weight 2^-10 under x = 2), and a reasoning
    # program that alone overfills the backend: only marking it helps.
    return view(10.0, 100, prog("r", 120, Phase.REASONING, since=9.0), prog("a1", 40), prog("a2", 40))


def test_b3_paper_policy_pauses_acting_programs_that_free_nothing():
    decisions = make_policy("thunder-paper").decide(b3_view(), TICK)
    assert paused(decisions) == {"a1", "a2", "r"}


def test_b3_default_leaves_programs_that_free_nothing_alone():
    decisions = make_policy("thunder", **{**PLAIN, "decay_base": 2.0}).decide(b3_view(), TICK)
    assert paused(decisions) == {"r"}


# -- B4: paused acting programs restored at their decayed weight ---------------------------

def b4_view():
    return view(10.0, 100, prog("r", 50, Phase.REASONING, since=9.0),
                prog("q", 60, Phase.ACTING, Status.PAUSED, since=0.0))


def test_b4_paper_policy_restores_an_acting_program_that_cannot_fit_when_it_returns():
    assert restored(make_policy("thunder-paper").decide(b4_view(), TICK)) == {"q": 0}


def test_b4_default_restores_only_what_fits_in_full():
    assert restored(make_policy("thunder", **{**PLAIN, "decay_base": 2.0}).decide(b4_view(), TICK)) == {}
    roomy = view(10.0, 120, *b4_view().programs.values())
    assert restored(make_policy("thunder", **{**PLAIN, "decay_base": 2.0}).decide(roomy, TICK)) == {"q": 0}


# -- B1 and aging: a long context is not starved ------------------------------------------------

def b1_view(now: float):
    # A 50-token new program queued since t=0 and three 5-token ones that just arrived;
    # the backend has 10 tokens of room, held by two acting programs and a reasoning one.
    return view(now, 100, prog("a", 30), prog("b", 30), prog("r", 30, Phase.REASONING, since=now - 1),
                prog("long", 50, Phase.REASONING, Status.PAUSED, since=0.0, steps=0),
                *[prog(f"s{i}", 5, Phase.REASONING, Status.PAUSED, since=now, steps=0) for i in range(3)])


def test_b1_paper_guard_restores_none_for_an_aged_program_that_does_not_fit():
    decisions = make_policy("thunder-paper", decay_base=1.0).decide(b1_view(700.0), TICK)
    assert "long" not in restored(decisions) and not paused(decisions)


def test_b1_default_makes_room_for_a_program_past_the_wait_bound():
    decisions = make_policy("thunder", **{**PLAIN, "max_wait_s": 600.0}).decide(b1_view(700.0), TICK)
    assert paused(decisions) == {"a", "b"}  # acting programs first; 60 tokens free 40 of room needed
    first_restore = next(d for d in decisions if isinstance(d, Restore))
    assert first_restore == Restore("long", 0)  # ahead of the newcomers, which may follow if room is left


def test_before_the_bound_short_programs_go_first():
    decisions = make_policy("thunder", **{**PLAIN, "max_wait_s": 600.0}).decide(b1_view(100.0), TICK)
    assert set(restored(decisions)) == {"s0", "s1"} and not paused(decisions)


def test_aging_lets_a_long_wait_overtake_shorter_newcomers():
    # room 60: "long" (50) waited 300 s, "mid" (40) just arrived; both cannot go.
    programs = [prog("r", 40, Phase.REASONING, since=299.0),
                prog("long", 50, Phase.REASONING, Status.PAUSED, since=0.0, steps=0),
                prog("mid", 40, Phase.REASONING, Status.PAUSED, since=300.0, steps=0)]
    no_aging = make_policy("thunder", **PLAIN).decide(view(300.0, 100, *programs), TICK)
    aging = make_policy("thunder", **{**PLAIN, "aging_s": 120.0}).decide(view(300.0, 100, *programs), TICK)
    assert restored(no_aging) == {"mid": 0}
    assert restored(aging) == {"long": 0}  # 50 / (1 + 300/120) = 14 < 40


# -- restore affinity ----------------------------------------------------------------------------

def test_restore_stays_on_the_backend_that_holds_the_prefix():
    policy = make_policy("thunder", **{**PLAIN, "affinity_share": 0.05})
    # p runs on backend 1 first: the policy remembers where its KV is.
    policy.decide(view(0.0, (1000, 1000), prog("p", 400, backend=1)), TICK)
    queued = prog("p", 400, Phase.REASONING, Status.PAUSED, since=5.0, waiting=True)
    later = view(5.0, (1000, 1000), prog("x", 580, backend=0), prog("y", 560, backend=1), queued)
    assert restored(policy.decide(later, TICK)) == {"p": 1}  # 20 tokens less room left than backend 0
    best_fit = make_policy("thunder", **PLAIN)
    best_fit.decide(view(0.0, (1000, 1000), prog("p", 400, backend=1)), TICK)
    assert restored(best_fit.decide(later, TICK)) == {"p": 0}


def new_programs_on_two_backends():
    # Backend 0 already runs 300 tokens; two new programs of 200 wait. Both fit on either.
    return view(1.0, (1000, 1000), prog("busy", 300, Phase.REASONING, backend=0),
                prog("n1", 200, Phase.REASONING, Status.PAUSED, steps=0, waiting=True),
                prog("n2", 200, Phase.REASONING, Status.PAUSED, steps=0, waiting=True))


def test_new_programs_go_where_there_is_most_room_to_grow():
    assert restored(make_policy("thunder", **PLAIN).decide(new_programs_on_two_backends(), TICK)) == \
        {"n1": 1, "n2": 1}  # 1000 free beats 700; then 800 free beats 700


def test_best_fit_for_new_programs_stays_available_and_packs_one_backend():
    policy = make_policy("thunder", **{**PLAIN, "new_placement": "best-fit"})
    assert restored(policy.decide(new_programs_on_two_backends(), TICK)) == {"n1": 0, "n2": 0}


# -- groups ------------------------------------------------------------------------------------

def test_a_group_is_restored_together():
    queue = [prog("g-a", 30, Phase.REASONING, Status.PAUSED, steps=0, group_id="g"),
             prog("solo", 35, Phase.REASONING, Status.PAUSED, steps=0),
             prog("g-b", 45, Phase.REASONING, Status.PAUSED, steps=0, group_id="g")]
    assert set(restored(make_policy("thunder", **PLAIN).decide(view(0.0, 80, *queue), TICK))) == {"g-a", "solo"}
    grouped = make_policy("thunder", **{**PLAIN, "group_weight": 1.0})
    assert set(restored(grouped.decide(view(0.0, 80, *queue), TICK))) == {"g-a", "g-b"}


def test_a_program_whose_group_is_further_along_is_dearer_to_pause():
    policy = make_policy("thunder", **{**PLAIN, "group_weight": 4.0})
    members = [prog("g1", 10, group_id="g"), prog("g2", 10, group_id="g"), prog("h1", 12, group_id="h")]
    policy.decide(view(0.0, 1000, *members), TICK)
    policy.decide(view(1.0, 1000, *members[1:]), Trigger(TriggerKind.RELEASE, "g1"))  # g is half done
    over = view(2.0, 100, prog("r", 85, Phase.REASONING), members[1], members[2])
    assert paused(policy.decide(over, TICK)) == {"h1"}  # 144 < 100 * (1 + 4 * 0.5)
    assert paused(make_policy("thunder", **PLAIN).decide(over, TICK)) == {"g2"}


# -- evictions are counted and weighed ------------------------------------------------------

def test_a_program_evicted_before_is_dearer_to_pause_again():
    policy = make_policy("thunder", **{**PLAIN, "eviction_weight": 1.0})
    over = view(1.0, 100, prog("r", 82, Phase.REASONING), prog("small", 10), prog("big", 12))
    assert paused(policy.decide(over, TICK)) == {"small"}
    again = view(2.0, 100, prog("r", 82, Phase.REASONING), prog("small", 10, since=1.5), prog("big", 12))
    assert paused(policy.decide(again, TICK)) == {"big"}  # 144 < 2 * 100
    assert policy.evictions == {"small": 1, "big": 1}


# -- the reservation and the learned estimates ---------------------------------------------

def test_reasoning_programs_reserve_their_output_and_max_tokens_caps_it():
    policy = make_policy("thunder", **{**PLAIN, "reserve_quantile": 0.9, "output_prior_tokens": 30,
                                       "growth_prior_tokens": 0})
    # 60 + 30 reserved, and 20 acting + its next request's 30: 140 > 130, the acting program goes.
    assert paused(policy.decide(view(0.0, 130, prog("r", 60, Phase.REASONING), prog("a", 20)), TICK)) == {"a"}
    capped = view(0.0, 130, prog("r", 60, Phase.REASONING, max_output_tokens=10), prog("a", 20))
    policy = make_policy("thunder", **{**PLAIN, "reserve_quantile": 0.9, "output_prior_tokens": 30,
                                       "growth_prior_tokens": 0})
    assert paused(policy.decide(capped, TICK)) == set()  # 60 + 10 + 50 = 120: the cap holds


def test_acting_programs_reserve_their_next_prompt_growth():
    policy = make_policy("thunder", **{**PLAIN, "reserve_quantile": 1.0, "output_prior_tokens": 0,
                                       "growth_prior_tokens": 15})
    # 70 reasoning + (20 + 15) acting: over by 5; without the growth it would fit.
    assert paused(policy.decide(view(0.0, 100, prog("r", 70, Phase.REASONING), prog("a", 20)), TICK)) == {"a"}


def test_output_lengths_learn_from_completed_requests():
    policy = make_policy("thunder", reserve_quantile=0.5, output_prior_tokens=999, min_samples=2)
    for step, output in enumerate((100, 300, 200)):
        done = prog("p", 1000 + step, Phase.ACTING, since=float(step), last_output_tokens=output)
        policy.decide(view(float(step), 10**6, done), Trigger(TriggerKind.REQUEST_DONE, "p"))
    assert policy.reserve_tokens(prog("p", 2000, Phase.REASONING)) == 200  # median of its own three


def test_sample_window_quantile_and_eviction_of_old_samples():
    window = SampleWindow(3)
    for value in (5.0, 1.0, 3.0, 9.0):
        window.add(value)
    assert window.ordered == [1.0, 3.0, 9.0] and len(window) == 3
    assert window.quantile(0.5) == 3.0 and window.quantile(1.0) == 9.0 and window.quantile(0.0) == 1.0
    assert window.count_above(3.0) == 1


def test_tool_return_probability_is_conditional_on_time_already_spent():
    tools = ToolDurations(horizon_s=1.0, min_samples=4)
    assert tools.return_probability("bash", 0.0) is None  # nothing learned: the caller falls back
    for duration in (0.2, 0.3, 0.4, 5.0):
        tools.observe("bash", duration)
    assert tools.return_probability("bash", 0.0) == 0.75  # 3 of 4 end within a second
    assert tools.return_probability("bash", 0.5) == 0.0  # only the 5 s one is left: not within 1 s
    assert tools.return_probability("bash", 4.5) == 1.0
    assert tools.return_probability("bash", 9.0) == 0.0  # overdue past anything seen: give the KV up
    assert tools.return_probability("pytest", 0.0) == 0.75  # unknown tool: every tool's durations


def test_output_estimate_falls_back_from_own_to_all_to_prior():
    lengths = OutputLengths(quantile=1.0, prior_tokens=50, min_samples=2)
    assert lengths.estimate("p", None) == 50
    lengths.observe("q", 10)
    lengths.observe("q", 20)
    assert lengths.estimate("p", None) == 20  # everyone's
    lengths.observe("p", 70)
    lengths.observe("p", 90)
    assert lengths.estimate("p", None) == 90 and lengths.estimate("p", 60) == 60


def test_restores_leave_headroom_and_never_follow_a_pause_on_the_same_backend():
    queue = [prog("n", 8, Phase.REASONING, Status.PAUSED, steps=0)]
    tight = view(0.0, 100, prog("r", 90, Phase.REASONING), *queue)
    assert restored(make_policy("thunder", **PLAIN).decide(tight, TICK)) == {"n": 0}
    headroom = make_policy("thunder", **{**PLAIN, "restore_headroom": 0.05})
    assert restored(headroom.decide(tight, TICK)) == {}  # 90 + 8 > 95
    over = view(0.0, 100, prog("r", 85, Phase.REASONING), prog("a", 20), *queue)
    decisions = make_policy("thunder", **PLAIN).decide(over, TICK)
    assert paused(decisions) == {"a"} and restored(decisions) == {}  # room, but not in the step that paused
    eager = make_policy("thunder", **{**PLAIN, "restore_after_relief": True})
    assert restored(eager.decide(over, TICK)) == {"n": 0}


def test_a_long_wait_drains_a_backend_so_short_programs_stop_overtaking():
    # "big" (60, ready) fits nowhere in 40 tokens of room; short newcomers would take it.
    programs = [prog("r", 60, Phase.REASONING),
                prog("big", 60, Phase.REASONING, Status.PAUSED, since=0.0, waiting=True),
                *[prog(f"s{i}", 10, Phase.REASONING, Status.PAUSED, since=390.0, steps=0) for i in range(3)]]
    early = make_policy("thunder", **{**PLAIN, "drain_after_s": 300.0}).decide(view(200.0, 100, *programs), TICK)
    assert set(restored(early)) == {"s0", "s1", "s2"}  # before the drain bound, short ones go
    late = make_policy("thunder", **{**PLAIN, "drain_after_s": 300.0}).decide(view(400.0, 100, *programs), TICK)
    assert restored(late) == {}  # after it, what frees up is kept for "big"
    freed = view(401.0, 100, *programs[1:])  # r finished: "big" now fits, and goes first
    decisions = make_policy("thunder", **{**PLAIN, "drain_after_s": 300.0}).decide(freed, TICK)
    assert next(d for d in decisions if isinstance(d, Restore)) == Restore("big", 0)
