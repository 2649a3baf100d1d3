"""The SGLang gateway's cache-aware routing, and power of two, on hand-built snapshots.

Loads are requests in flight (running + waiting) per backend; thresholds are
the gateway's command-line defaults (cache 0.3, balance 64 absolute and 1.5
relative) unless a test says otherwise.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from policy_views import new, reasoning

from thunder.core.view import BackendView, ClusterView, Dispatch, Hold
from thunder.policies import make_policy
from thunder.policies.gateway import CacheAwareGatewayPolicy, GatewayConfig, PowerOfTwoConfig, PowerOfTwoPolicy


def backends(*loads: int, unhealthy: tuple[int, ...] = ()) -> ClusterView:
    """Backends 0..n-1 with the given requests in flight (all running)."""
    views = tuple(BackendView(i, 100_000, healthy=i not in unhealthy, running_requests=n)
                  for i, n in enumerate(loads))
    return ClusterView(now_s=0.0, backends=views)


def fresh(pid: str, tokens: int, shared: int = 0) -> object:
    """A new program whose first prompt starts with a shared system prompt of ``shared`` tokens."""
    extra = {"shared_prefix_id": "sys", "shared_prefix_tokens": shared} if shared else {}
    return new(pid, tokens, **extra)


def route(policy, view, program) -> int:
    decision = policy.route(view, program)
    assert isinstance(decision, Dispatch) and decision.priority is None
    return decision.backend


def test_defaults_are_the_gateway_command_line_defaults():
    config = make_policy("gateway").config
    assert (config.cache_threshold, config.balance_abs_threshold, config.balance_rel_threshold) == (0.3, 64, 1.5)
    assert config.max_tree_tokens == 2**26 // 4


def test_a_program_follows_its_own_history():
    gateway = CacheAwareGatewayPolicy()
    view = backends(0, 0)
    first = route(gateway, view, fresh("a", 1000))
    route(gateway, view, fresh("b", 5000))  # b's bigger tree would attract nothing: no match
    grown = replace(reasoning("a", 1400, on=first), backend=first)
    assert gateway.match_rate(first, grown) == pytest.approx(1000 / 1400)
    assert gateway.match_rate(1 - first, grown) == 0
    assert route(gateway, view, grown) == first


def test_below_the_cache_threshold_the_smallest_tree_wins():
    gateway = CacheAwareGatewayPolicy()
    view = backends(0, 0)
    assert route(gateway, view, fresh("a", 3000, shared=300)) == 0  # empty trees: lowest id
    # b shares only 300 of 1,500 tokens with backend 0 (0.2 <= 0.3): backend 1, whose tree is empty
    assert route(gateway, view, fresh("b", 1500, shared=300)) == 1
    # c: backend 1 holds 1,500 tokens, backend 0 holds 3,000: c goes to 1 again
    assert route(gateway, view, fresh("c", 1500, shared=300)) == 1


def test_identical_system_prompts_send_every_new_program_to_one_replica():
    """The paper's section 3.2: when the shared prompt is most of a new program's
    first request, every new program matches the replica that served the first."""
    gateway = CacheAwareGatewayPolicy()
    chosen = [route(gateway, backends(n, 0), fresh(f"p{n}", 6000, shared=5000)) for n in range(65)]
    assert chosen == [0] * 65
    # only once backend 0 has 65 requests in flight more than backend 1 (> 64) does one go elsewhere
    assert route(gateway, backends(65, 0), fresh("p65", 6000, shared=5000)) == 1
    assert gateway.balanced_routes == 1


@pytest.mark.parametrize("loads, imbalanced", [
    ((64, 0), False),    # a difference of 64 is not above 64
    ((65, 0), True),     # 65 > 64 and 65 > 1.5 * 0
    ((200, 134), False),  # 66 > 64, but 200 is not above 1.5 * 134 = 201
    ((200, 140), False),  # 60 is not above 64
    ((300, 200), False),  # exactly 1.5 times is not above
    ((301, 200), True),
])
def test_both_balance_thresholds_must_be_passed(loads, imbalanced):
    gateway = CacheAwareGatewayPolicy()
    route(gateway, backends(0, 0), fresh("seed", 6000, shared=5000))  # backend 0 now holds the prompt
    target = route(gateway, backends(*loads), fresh("x", 6000, shared=5000))
    assert target == (1 if imbalanced else 0)
    assert gateway.balanced_routes == int(imbalanced)


def test_load_counts_waiting_requests_too():
    gateway = CacheAwareGatewayPolicy(GatewayConfig(balance_abs_threshold=2, balance_rel_threshold=1.0))
    route(gateway, backends(0, 0), fresh("seed", 6000, shared=5000))
    view = ClusterView(now_s=0.0, backends=(BackendView(0, 1000, running_requests=1, waiting_requests=3),
                                            BackendView(1, 1000, running_requests=1)))
    assert route(gateway, view, fresh("x", 6000, shared=5000)) == 1


def test_a_reset_context_matches_only_the_shared_prompt():
    gateway = CacheAwareGatewayPolicy()
    route(gateway, backends(0, 0), fresh("a", 9000, shared=300))
    shorter = reasoning("a", 2000, on=0, shared_prefix_id="sys", shared_prefix_tokens=300)
    assert gateway.match_rate(0, shorter) == pytest.approx(300 / 2000)


def test_old_records_are_evicted_least_recently_sent_first():
    gateway = CacheAwareGatewayPolicy(GatewayConfig(max_tree_tokens=2500))
    view = backends(0)
    for pid in ("a", "b", "c"):
        route(gateway, view, fresh(pid, 1000))
    record = gateway.records[0]
    assert list(record.prompts) == ["b", "c"] and record.tokens == 2000


def test_no_healthy_backend_holds_the_request():
    assert isinstance(CacheAwareGatewayPolicy().route(backends(0, 0, unhealthy=(0, 1)), fresh("a", 10)), Hold)
    assert route(CacheAwareGatewayPolicy(), backends(0, 0, unhealthy=(0,)), fresh("a", 10)) == 1


def test_power_of_two_picks_the_less_loaded_of_a_seeded_pair():
    view = backends(5, 1, 9, 7)

    def picks(seed: int) -> list[int]:
        policy = PowerOfTwoPolicy(PowerOfTwoConfig(seed=seed))
        return [route(policy, view, fresh(f"p{i}", 10)) for i in range(200)]

    assert picks(3) == picks(3)  # the same seed gives the same routes
    chosen = picks(0)
    assert 2 not in chosen  # the most loaded backend loses every pair it is drawn into
    assert set(chosen) == {0, 1, 3}
    assert route(PowerOfTwoPolicy(), backends(3, 1), fresh("x", 10)) == 1  # two backends: always the lighter
