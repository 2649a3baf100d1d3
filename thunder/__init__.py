"""thunder: program-aware agentic LLM inference.

What lives here: the policy core (``program``, ``cluster``, ``cost``,
``policies/``) and the trace format (``trace``). The rule that keeps it clean:
nothing in this package's top level or in ``policies/`` reads a clock, sleeps,
or imports SimPy or a network library; ``sim/`` (simulated time) and
``runtime/`` (real time, real vLLM) drive the same policies, and only
``cli/`` wires the worlds together.
"""

__version__ = "0.1.0"
