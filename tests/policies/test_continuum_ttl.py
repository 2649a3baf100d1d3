"""Continuum: program-level FCFS and KV pinning for a learned tool time (TTL)."""

from __future__ import annotations

from policy_views import acting, cluster, new, reasoning

from thunder.core.view import Dispatch, Pin, Trigger, TriggerKind
from thunder.policies.continuum import ContinuumConfig, TtlPinningPolicy


def request_done(policy, pid, now, tool="bash", started=None):
    """The request of ``pid`` finished at ``now`` and its tool call started."""
    view = cluster(acting(pid, 500, since=now if started is None else started, tool=tool), now=now)
    return policy.decide(view, Trigger(TriggerKind.REQUEST_DONE, pid))


def tool_done(policy, pid, now):
    """The tool returned at ``now``; the program is already reasoning again."""
    view = cluster(reasoning(pid, 600, phase_since_s=now), now=now)
    return policy.decide(view, Trigger(TriggerKind.TOOL_DONE, pid))


def run_tool(policy, pid, start, duration, tool="bash"):
    request_done(policy, pid, start, tool)
    tool_done(policy, pid, start + duration)


def test_older_programs_requests_run_first_on_their_sticky_backend():
    policy = TtlPinningPolicy()
    view = cluster(capacity=[1000, 1000])
    assert policy.route(view, reasoning("p", 100, on=1, arrived_s=7.0)) == Dispatch(1, priority=7.0)
    assert policy.route(view, new("n", 100, arrived=9.0)) == Dispatch(0, priority=9.0)


def test_an_unseen_tool_is_pinned_for_the_default_estimate():
    policy = TtlPinningPolicy(ContinuumConfig(unseen_tool_s=2.0))
    assert request_done(policy, "p", now=10.0) == (Pin("p", 12.0),)


def test_ttl_is_learned_from_the_tools_observed_durations():
    policy = TtlPinningPolicy(ContinuumConfig(margin=1.5))
    run_tool(policy, "p", start=10.0, duration=4.0)
    assert request_done(policy, "p", now=20.0) == (Pin("p", 26.0),)


def test_durations_are_measured_from_the_acting_start_seen_at_request_done():
    policy = TtlPinningPolicy()
    request_done(policy, "p", now=10.5, started=10.0)
    tool_done(policy, "p", now=13.0)
    assert policy.predicted_tool_s("bash") == 3.0


def test_prediction_is_a_quantile_of_recent_durations_per_tool():
    policy = TtlPinningPolicy(ContinuumConfig(quantile=0.9, window=10))
    for i, seconds in enumerate(range(1, 11)):
        run_tool(policy, f"p{i}", start=0.0, duration=float(seconds))
    run_tool(policy, "q", start=0.0, duration=0.5, tool="edit")
    assert policy.predicted_tool_s("bash") == 9.0
    assert policy.predicted_tool_s("edit") == 0.5


def test_long_tools_are_not_pinned():
    policy = TtlPinningPolicy(ContinuumConfig(pin_threshold_s=10.0))
    run_tool(policy, "p", start=0.0, duration=50.0)
    assert request_done(policy, "p", now=60.0) == ()


def test_ttl_is_capped():
    policy = TtlPinningPolicy(ContinuumConfig(pin_threshold_s=100.0, max_ttl_s=30.0))
    run_tool(policy, "p", start=0.0, duration=50.0)
    assert request_done(policy, "p", now=60.0) == (Pin("p", 90.0),)


def test_release_forgets_the_program():
    policy = TtlPinningPolicy()
    request_done(policy, "p", now=0.0)
    policy.decide(cluster(), Trigger(TriggerKind.RELEASE, "p"))
    tool_done(policy, "p", now=5.0)
    assert policy.durations.quantile("bash", 0.9) is None


def test_nothing_to_pin_when_no_tool_call_follows():
    policy = TtlPinningPolicy()
    view = cluster(reasoning("p", 100))
    assert policy.decide(view, Trigger(TriggerKind.REQUEST_DONE, "p")) == ()
    assert policy.decide(cluster(), Trigger(TriggerKind.REQUEST_DONE, "gone")) == ()
