"""thunder: program-aware agentic LLM inference.

A table of contents (docs/architecture.md has the picture):

* ``core/``: the contract every other room is written against: the program
  (``program``), the read-only view a policy sees and the decisions it returns
  (``view``), tool environments (``environments``), the policy protocols
  (``policy``), the one code path that applies decisions in both worlds
  (``applier``), the result tables' schema (``records``), the cost ledger
  (``cost``), calibration probes (``probes``), config helpers (``options``);
* ``policies/``: schedulers and tool-resource policies, pure decisions over a view
  (``thunder/`` holds the program-aware ones, the default and the paper's);
* ``traces/``: the trace format, its writer, converters of real agent runs,
  synthetic workloads;
* ``results/``: tables, summaries, fairness, rollout and tool metrics, plots;
* ``sim/``: the SimPy world (simulated vLLM replicas, agents, tool host);
* ``runtime/``: the live world (the proxy in front of real engines, sandboxes);
* ``cli/``: the ``thunder`` command, the one place the worlds are wired together.

The rules, checked by tests/test_architecture.py: ``core/`` imports nothing of
thunder outside itself; ``policies/``, ``traces/`` and ``results/`` only ``core/``;
``sim/`` and ``runtime/`` never each other; no import circles; nothing in
``core/`` or ``policies/`` reads a clock, sleeps, or imports SimPy or a network
library.
"""

__version__ = "0.1.0"
