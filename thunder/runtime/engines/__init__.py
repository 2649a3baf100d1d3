"""The engines behind the proxy, seen over HTTP only.

* ``vllm``: one bounded HTTP client per vLLM backend, and what its ``/metrics`` says
  (capacity, load, prefix-cache hits, preemptions, health);
* ``sglang``: the same for SGLang;
* ``prometheus``: a lenient parser for backends' exposition pages;
* ``launcher``: starting a local vLLM server (the CPU build for tests), with ``cpu_affinity``;
* ``measure``: ``thunder calibrate``'s measurements of a live server.
"""
