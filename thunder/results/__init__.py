"""What a run produced, as tables and numbers: the same for a simulated and a live run.

* ``tables``: ``build_tables`` (steps, programs, decisions, time series as DataFrames) and
  ``summarize`` (throughput, hit rate, latency, the cost split, decisions);
* ``fairness``: hold-time percentiles, by prompt-size quartile, eviction spread;
* ``tools``: tool-environment metrics (disk, ports, setup waits);
* ``rollout``: RL rollout batches and groups (makespan, straggler wait);
* ``sweep``: option grids; ``plots``: the notebooks' figures.
"""
