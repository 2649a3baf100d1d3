"""Scheduling and tool-resource policies: pure decisions over a ``ClusterView``.

Every policy implements a protocol of ``thunder.core.policy`` and sees only a view
(which carries ``now_s``): no clocks, no SimPy, no sockets. Request-level baselines:
``vllm`` (vLLM's router), ``continuum`` (TTL pinning), ``gateway`` (cache-aware gateway,
power of two), ``autellix`` (least attained service). Program-aware: ``thunder/`` (the
default ``thunder`` policy and the paper's ``thunder-paper``). Tool resources: ``tools``.
``registry`` names them all (``make_policy``, ``make_tool_policy``); ``routing`` holds the
routers' shared backend choice.
"""

from thunder.policies.registry import POLICIES, make_policy, policy_names

__all__ = ["POLICIES", "make_policy", "policy_names"]
