"""The request-level baseline: vLLM's router, no program awareness."""

from __future__ import annotations

from policy_views import acting, cluster, engine_loads, new, reasoning

from thunder.core.view import TICK, Dispatch, Hold, Trigger, TriggerKind
from thunder.policies.vllm import RequestLevelPolicy, VllmConfig


def router(rule: str) -> RequestLevelPolicy:
    return RequestLevelPolicy(VllmConfig(routing=rule))


def test_sticky_sends_a_program_back_to_its_backend():
    view = engine_loads(0, 900)
    assert router("sticky").route(view, reasoning("p", 100, on=1)) == Dispatch(1)


def test_sticky_sends_a_new_program_to_the_least_loaded_backend():
    assert router("sticky").route(engine_loads(500, 200, 300), new("n", 100)) == Dispatch(1)


def test_least_loaded_breaks_ties_by_waiting_requests_then_lowest_id():
    assert router("least-loaded").route(engine_loads(200, 200, waiting=[3, 1]), new("n", 1)) == Dispatch(1)
    assert router("least-loaded").route(engine_loads(200, 200), new("n", 1)) == Dispatch(0)


def test_least_loaded_ignores_where_the_program_ran_before():
    assert router("least-loaded").route(engine_loads(0, 900), reasoning("p", 100, on=1)) == Dispatch(0)


def test_round_robin_cycles_through_backends():
    policy, view = router("round-robin"), engine_loads(0, 0, 0)
    picks = [policy.route(view, new(f"n{i}", 1)).backend for i in range(4)]
    assert picks == [0, 1, 2, 0]


def test_unhealthy_backends_are_skipped_by_every_rule():
    view = cluster(capacity=[1000, 1000, 1000], unhealthy=[1])
    program = reasoning("p", 100, on=1)
    assert router("sticky").route(view, program) == Dispatch(0)
    assert router("least-loaded").route(view, program) == Dispatch(0)
    policy = router("round-robin")
    assert [policy.route(view, program).backend for _ in range(3)] == [0, 2, 0]


def test_never_holds_unless_no_backend_is_healthy():
    assert isinstance(router("sticky").route(cluster(unhealthy=[0]), new("n", 1)), Hold)


def test_decides_nothing_the_engine_lru_does_the_rest():
    policy = router("sticky")
    view = cluster(reasoning("r", 900), acting("a", 900))
    for trigger in (TICK, Trigger(TriggerKind.REQUEST_DONE, "r"), Trigger(TriggerKind.RELEASE, "a")):
        assert policy.decide(view, trigger) == ()
