"""Scheduling policies: one module per policy, plus a registry (name -> factory).

Every policy implements ``thunder.core.policy.Policy`` and is pure: it sees
a ``ClusterView`` (which carries ``now_s``) and returns decisions. No clocks,
no SimPy, no sockets in this package.

ThunderAgent's policy (``thunder``) is split for speed: ``thunder_index``
keeps per-backend demand (``running_demand``) and the queue between calls,
``thunder_steps`` feeds one control step from that index or from the whole
view, and ``certify`` decides when the index's approximate sums are close
enough to the exact ones to act on.
"""

from thunder.policies.registry import POLICIES, make_policy, policy_names

__all__ = ["POLICIES", "make_policy", "policy_names"]
