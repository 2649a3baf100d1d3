"""The live world: the same policies, in front of real engines, in real time.

* ``server`` wires ``thunder serve``: ``proxy`` (the OpenAI-compatible endpoints),
  ``admin`` (programs, tables, pause/resume, metrics), ``admission`` (held requests as
  futures, each bounded by ``max_hold_s``), ``payload`` (reading and forwarding bodies),
  ``telemetry`` (Prometheus), ``config`` (every knob in one value);
* ``cluster``: ``LiveCluster``, the mechanism (the simulator's ``SimCluster``'s twin), with
  ``state`` (tickets, programs, backends) and ``records`` (bounded row stores);
* ``engines/``: the vLLM and SGLang adapters, the Prometheus text parser, the local server
  launcher, calibration measurements;
* ``sandboxes/`` and ``tool_cluster``: real sandboxes under the tool-resource policies;
* ``replay``: ``thunder run``, a trace replayed against an endpoint.

Nothing here decides: policies decide over a ``ClusterView``; this package builds the view,
calls them and applies what they return. ``LiveCluster`` holds no sockets, futures or clocks
of its own (time is injected), so it can be driven on a fake clock and compared with the
simulator decision by decision. Time is the event loop's ``loop.time()``, never the wall clock.
"""
