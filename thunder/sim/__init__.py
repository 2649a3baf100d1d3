"""The SimPy world: simulated vLLM replicas, trace-driven agents, SimCluster.

* ``engine`` (a replica: front end, engine loop, steps and decode jumps), ``scheduler``
  (vLLM v1's plan of each step), ``jumps`` (exact multi-step decode jumps), ``decoders``,
  ``kv`` (paged prefix cache), ``kv_costs`` (the cost ledger's charges), ``request``;
* ``step_time`` (the step-time model and engine profile format) and ``presets`` (named
  GPU x model and measured CPU profiles, ``h200_glm45`` fitted to real GPU timings);
* ``cluster``: ``SimCluster``, the mechanism (the live ``LiveCluster``'s twin);
  ``tool_cluster`` + ``tool_host``: tool environments;
* ``run`` (one simulation), ``experiment`` (cells and grids), ``ray_grid``, ``fit_profile``
  (fitting a profile to live measurements through the simulated engine).

Time here is ``env.now``. Policies come from ``thunder.policies`` and are called through
``SimCluster`` exactly as the live proxy calls them.
"""
