"""The indexed ThunderAgent policy makes the simulator log the same decisions
as the walk-everything reference (``tests/policies/reference_thunder.py``),
on a slice of the real swebench trace."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path

import pytest

from thunder.policies.thunder.paper import ProgramAwarePolicy, ThunderConfig
from thunder.sim.presets import load_engine_spec
from thunder.sim.run import SimConfig, simulate
from thunder.traces import load_trace

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent


def reference_policy_type() -> type:
    module = sys.modules.get("reference_thunder")
    if module is None:
        spec = importlib.util.spec_from_file_location("reference_thunder", TESTS / "policies" / "reference_thunder.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["reference_thunder"] = module
        spec.loader.exec_module(module)
    return module.ReferenceThunderPolicy


@pytest.mark.parametrize(("options", "replicas"), [
    ({}, 1),
    # two half-size replicas: migrations, and the public code's variants of the rules
    ({"placement": "most-free", "decay_when": "restore-only", "starvation_s": 5.0, "lambda_min": 0.8}, 2),
])
def test_swebench_slice_gives_the_same_decision_log(options, replicas):
    programs = load_trace(REPO / "traces" / "swebench.jsonl").programs[:40]
    spec = load_engine_spec("paper-8xh100-glm46")
    spec = dataclasses.replace(spec, num_blocks=spec.num_blocks // replicas)
    config = ThunderConfig(**options)
    fast = ProgramAwarePolicy(config)
    logs = []
    for policy in (reference_policy_type()(config), fast):
        outcome = simulate(programs, policy, spec, SimConfig(parallel=48, replicas=replicas))
        logs.append(outcome.cluster.records.decisions)
    reference, indexed = logs
    assert any(action == "pause" for _, action, *_ in reference)  # the slice does exercise the rules
    assert any(action == "restore" for _, action, *_ in reference)
    assert replicas == 1 or any(action == "migrate" for _, action, *_ in reference)
    assert indexed == reference
    assert fast.exact_steps <= outcome.cluster.control_steps // 20  # the index answers nearly every step
