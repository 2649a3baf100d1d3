"""The policy core: what a policy sees and returns, and how decisions are applied.

* ``program``: ``Program`` (the paper's P = <id, tokens, tools, backend, phase, status>), its
  phase and status;
* ``view``: ``ClusterView`` and ``BackendView`` (what a policy sees), the decisions (``Route``,
  ``Pause``, ``Restore``, ``Pin``) and the triggers of a control step, with the contract both
  worlds keep;
* ``environments``: tool environments (``EnvView``, ``ToolHostView``), tool decisions
  (``PrepareEnv``, ``ReclaimEnv``) and the rules for them (``env_in_use``, ``reclaim_refused``);
* ``policy``: the ``Policy`` and ``ToolPolicy`` protocols (``interval_s``, ``decide``, ...);
* ``applier``: ``DecisionApplier`` (the scheduler's decisions) and ``ToolApplier`` (tool
  decisions), written once for the simulator and the proxy; control hooks;
* ``records``: the steps / programs / decisions tables' one schema and row builders;
* ``cost``: the KV space-time ledger (decode, prefill, recompute, unused, caching);
* ``probes``: calibration probes and the least-squares fit of the step-time model;
* ``options``: help-carrying fields for the policies' frozen configs.

Nothing here imports another room of thunder, reads a clock, or touches SimPy or a socket.
"""
