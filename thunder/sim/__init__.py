"""The SimPy world: simulated vLLM replicas, trace-driven agents, SimCluster.

Time here is ``env.now``. Policies come from ``thunder.policies`` and are
called through ``SimCluster`` exactly as the live proxy calls them.
"""
