"""The registry: names to factories, options checked by name."""

from __future__ import annotations

import pytest

from thunder.policies import make_policy, policy_names
from thunder.policies.registry import POLICIES


def test_every_named_policy_builds_with_defaults():
    assert policy_names() == ["autellix", "continuum", "gateway", "power-of-two", "thunder", "thunder-paper",
                              "vllm"]
    for name in policy_names():
        policy = make_policy(name)
        assert policy.name == name
        assert callable(policy.route) and callable(policy.decide)


def test_options_reach_the_config():
    assert make_policy("thunder-paper", decay_base=4.0, placement="most-free").config.placement == "most-free"
    assert make_policy("thunder", aging_s=30.0).config.aging_s == 30.0


def test_each_call_gives_a_fresh_policy():
    assert make_policy("vllm") is not make_policy("vllm")


def test_unknown_policy_lists_the_known_names():
    with pytest.raises(ValueError, match="unknown policy 'sglang'.*autellix, continuum, gateway"):
        make_policy("sglang")


def test_unknown_option_is_named():
    with pytest.raises(ValueError, match="no option\\(s\\) 'decay'.*decay_base"):
        make_policy("thunder-paper", decay=2)


@pytest.mark.parametrize("name, options", [
    ("vllm", {"routing": "random"}),
    ("thunder-paper", {"placement": "worst-fit"}),
    ("thunder-paper", {"lambda_min": 1.2, "lambda_max": 1.0}),
    ("thunder-paper", {"decay_base": 0.5}),
    ("thunder", {"pause_rule": "longest-first"}),
    ("thunder", {"reserve_quantile": 1.5}),
    ("thunder", {"aging_s": 0.0}),
    ("continuum", {"quantile": 0.0}),
])
def test_bad_option_values_are_rejected(name, options):
    with pytest.raises(ValueError):
        make_policy(name, **options)


def test_every_option_has_help():
    for factory in POLICIES.values():
        assert all(factory.option_help().values()), factory.name
