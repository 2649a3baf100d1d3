"""Scheduling policies: one module per policy, plus a registry (name -> factory).

Every policy implements ``thunder.policies.base.Policy`` and is pure: it sees
a ``ClusterView`` (which carries ``now_s``) and returns decisions. No clocks,
no SimPy, no sockets in this package.
"""

from thunder.policies.registry import POLICIES, make_policy, policy_names

__all__ = ["POLICIES", "make_policy", "policy_names"]
