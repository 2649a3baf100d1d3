"""Tool-resource policies on hand-built snapshots: the rules of paper section 4.4, one per test."""

from __future__ import annotations

import math

import pytest
from tool_builders import cluster, env, host, ids, new, paused_acting, running, waiting

from thunder.core.environments import EnvState, PrepareEnv, ReclaimEnv
from thunder.policies.registry import make_tool_policy, tool_policy_names

READY, NONE, PENDING, PREPARING = EnvState.READY, EnvState.NONE, EnvState.PENDING, EnvState.PREPARING


def test_registry_names_the_two_baselines_and_thunders():
    assert tool_policy_names() == ["keep", "on-demand", "program-aware"]
    with pytest.raises(ValueError, match="unknown tool policy 'gc'.*keep, on-demand, program-aware"):
        make_tool_policy("gc")
    with pytest.raises(ValueError, match="no option.*'lookahed'.*known options: interval_s, lookahead"):
        make_tool_policy("program-aware", lookahed=3)
    with pytest.raises(ValueError, match="ahead_disk_fraction"):
        make_tool_policy("program-aware", ahead_disk_fraction=0)


@pytest.mark.parametrize("name", ["keep", "on-demand", "program-aware"])
def test_every_policy_prepares_what_a_held_program_waits_for_longest_wait_first(name):
    view = host(env("late", needed_since_s=4.0), env("early", needed_since_s=1.0), env("idle"),
                env("busy", PREPARING, needed_since_s=0.0))
    decisions = make_tool_policy(name, **({"lookahead": 0} if name == "program-aware" else {})).decide(
        cluster(running("late"), running("early"), running("busy")), view)
    assert ids(decisions, PrepareEnv) == ["early", "late"]
    assert all(d.reason == "needed" for d in decisions if isinstance(d, PrepareEnv))


def test_keep_never_reclaims_not_even_a_finished_programs_environment():
    view = host(env("done", READY, released=True, last_used_s=0.0), now=10_000.0)
    assert make_tool_policy("keep").decide(cluster(now=10_000.0), view) == []


@pytest.mark.parametrize("name", ["on-demand", "program-aware"])
def test_gc_reclaims_released_environments_at_once_in_any_live_state(name):
    view = host(env("a", READY, released=True), env("b", PREPARING, released=True),
                env("c", PENDING, released=True), env("alive", READY, last_used_s=0.0))
    decisions = make_tool_policy(name).decide(cluster(running("alive")), view)
    assert ids(decisions, ReclaimEnv) == ["a", "b", "c"]
    assert {d.reason for d in decisions if isinstance(d, ReclaimEnv)} == {"released"}


def test_on_demand_prepares_nothing_for_programs_that_only_wait_in_the_queue():
    view = host(env("q1"), env("q2"))
    assert make_tool_policy("on-demand").decide(cluster(new("q1", 100), new("q2", 200)), view) == []


def test_program_aware_prepares_the_front_of_the_restore_order():
    # Restore order (Eq. 10): reasoning-ready first, then new (shortest first), then acting.
    programs = [waiting("back", 900), new("n-long", 800), new("n-short", 100), paused_acting("act", 50)]
    view = host(env("back", READY, last_used_s=0.0), env("n-long"), env("n-short"), env("act"))
    decisions = make_tool_policy("program-aware", lookahead=2).decide(cluster(*programs), view)
    # "back" has its environment: looked past at no cost; the two next without one get theirs.
    assert decisions == [PrepareEnv("n-short", "ahead"), PrepareEnv("n-long", "ahead")]


def test_program_aware_keeps_within_its_budget_of_preparations_in_flight():
    programs = [new(f"n{i}", 100 + i) for i in range(5)]
    view = host(env("n0", PREPARING), *(env(f"n{i}") for i in range(1, 5)))
    decisions = make_tool_policy("program-aware", lookahead=8, max_preparing=3).decide(cluster(*programs), view)
    assert ids(decisions, PrepareEnv) == ["n1", "n2"]


def test_program_aware_prepares_ahead_only_within_its_disk_share_and_never_skips_the_order():
    # 100 GB disk, 0.9 share: 40 used; n-first (40) fits (80), n-second (30) would make 110 > 90 and
    # n-small (5) further back would fit but must not take the room of the program ahead of it.
    programs = [running("r"), new("n-first", 100), new("n-second", 200), new("n-small", 300)]
    view = host(env("r", READY, disk_gb=40, last_used_s=0.0), env("n-first", disk_gb=40),
                env("n-second", disk_gb=30), env("n-small", disk_gb=5), capacity_gb=100)
    decisions = make_tool_policy("program-aware", ahead_disk_fraction=0.9).decide(cluster(*programs), view)
    assert ids(decisions, PrepareEnv) == ["n-first"]


def test_program_aware_reclaims_queued_environments_idle_past_the_timeout_but_not_at_the_front():
    # Restore order: front, stale, fresh (reasoning, shortest first), then tool (acting).
    programs = [waiting("front", 10), waiting("stale", 500), waiting("fresh", 600), paused_acting("tool", 700),
                running("bound", 800)]
    view = host(env("front", READY, last_used_s=0.0), env("stale", READY, last_used_s=0.0),
                env("fresh", READY, last_used_s=50.0), env("tool", READY, in_use=True, last_used_s=0.0),
                env("bound", READY, last_used_s=0.0), now=100.0)
    decisions = make_tool_policy("program-aware", idle_timeout_s=60.0, lookahead=1).decide(
        cluster(*programs, now=100.0), view)
    # front: next to be restored; fresh: idle 50 s only; tool: in use; bound: holds the GPU.
    assert decisions == [ReclaimEnv("stale", "idle")]


def test_idle_collection_can_be_switched_off():
    view = host(env("q", READY, last_used_s=0.0), env("x"), now=1e9)
    decisions = make_tool_policy("program-aware", idle_timeout_s=math.inf, lookahead=0).decide(
        cluster(waiting("q", 100), new("x", 50), now=1e9), view)
    assert ids(decisions, ReclaimEnv) == []


def test_a_held_programs_environment_gets_room_from_the_back_of_the_queue():
    # 30 GB disk, all held by three queued programs' idle environments; "held" holds the GPU and
    # waits for 15 GB: the two at the back of the restore order make room, the front one stays.
    programs = [running("held"), waiting("q-front", 100), waiting("q-mid", 200), waiting("q-back", 300)]
    view = host(env("held", PENDING, disk_gb=15, needed_since_s=0.0),
                *(env(p, READY, disk_gb=10, last_used_s=0.0) for p in ("q-front", "q-mid", "q-back")),
                capacity_gb=30)
    decisions = make_tool_policy("program-aware", lookahead=0).decide(cluster(*programs), view)
    assert ids(decisions, ReclaimEnv) == ["q-back", "q-mid"]
    assert {d.reason for d in decisions if isinstance(d, ReclaimEnv)} == {"make-room"}


def test_no_environment_is_torn_down_for_room_that_would_still_not_suffice():
    programs = [running("held"), waiting("q", 100), running("busy", 50)]
    view = host(env("held", PENDING, disk_gb=25, needed_since_s=0.0), env("q", READY, disk_gb=10, last_used_s=0.0),
                env("busy", READY, disk_gb=20, last_used_s=0.0), capacity_gb=30)
    assert ids(make_tool_policy("program-aware").decide(cluster(*programs), view), ReclaimEnv) == []


def test_ports_count_like_disk():
    programs = [new("a", 10), new("b", 20)]
    view = host(env("a", ports=3), env("b", ports=3), ports=4)
    assert ids(make_tool_policy("program-aware").decide(cluster(*programs), view), PrepareEnv) == ["a"]
