"""The live world: the same policies, in front of real vLLM servers, in real time.

What lives here: ``thunder serve`` (an OpenAI-compatible proxy: ``server``
wires ``proxy`` and ``admin`` endpoints, ``admission`` holds requests,
``backend`` talks to vLLM and reads its ``/metrics``), the mechanism
``LiveCluster`` (``live_cluster``, mirror of the simulator's SimCluster),
``thunder run`` (``replay``: a trace replayed against an endpoint) and a
local vLLM CPU server for tests (``vllm_server``). With a sandbox root,
programs also get real sandboxes (``sandboxes``, ``tool_host``,
``tool_cluster``, ``sandbox_api``) under the tool-resource policies.

The rule that keeps it clean: nothing here decides. Policies from
``thunder.policies`` decide over a ``ClusterView``; this package builds the
view, calls them, and applies what they return. ``LiveCluster`` holds no
sockets, futures or clocks of its own (time is injected), so it can be
driven on a fake clock and compared with the simulator decision by decision.
Time is the event loop's ``loop.time()``, never the wall clock.
"""
