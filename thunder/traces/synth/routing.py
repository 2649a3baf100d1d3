"""The ``routing`` workload: a ToolOrchestra-like orchestrator on HLE.

A small local model (the paper serves Qwen3-8B) reads a question, then calls
remote tools: ``search`` (web retrieval), ``enhance_reasoning`` (a stronger
model used as a tool) and finally ``answer`` (a model that writes the answer).
No sandbox, so no env. Short programs, small contexts, slow and unpredictable
tools: the case where a KV cache pinned across a tool call is most often wasted.

No public per-step trace of this workload exists, so every number below is an
assumption, chosen to match what the ThunderAgent paper reports: tool buckets
HLE-search, HLE-enhance-reasoning and HLE-answer whose latency histograms
(paper Fig. 9) have medians of a few seconds to tens of seconds and tails to
about 60 s, 150 s and 240 s respectively (the plots' extents, used as caps:
clients time out somewhere). Latencies are lognormal because a remote call's
time is a product of factors (queueing, rate-limit backoff, generation length);
a sigma of 0.9-1.1 puts p99 at 8-13x the median, the "tens to hundreds of
seconds" tail the paper describes. A Pareto tail would need a cap anyway.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from thunder.traces.synth.distributions import Choice, LogNormal, Sampler, whole
from thunder.traces.synth.workload import Drawn, draw_steps, draw_tools, tool_names


@dataclass(frozen=True, slots=True)
class RoutingParams:
    """Distributions of the routing workload (tokens, seconds); all assumed, see module doc."""

    # Orchestrator turns: median 9, about 5 to 16 for the middle 90%.
    steps: Sampler = LogNormal(median=9, sigma=0.35, low=3, high=20)
    # System prompt listing the tools and the models behind them.
    shared_prefix_tokens: int = 1_200
    # HLE questions: mostly a paragraph, some with long context.
    question_tokens: Sampler = LogNormal(median=250, sigma=0.8, low=30, high=4_000)
    # Qwen3-8B reasoning before each call.
    output_tokens: Sampler = LogNormal(median=300, sigma=0.7, low=20, high=4_096)
    # Tool results appended: search snippets, an expert model's reply.
    growth_tokens: Sampler = LogNormal(median=400, sigma=0.8, low=30, high=6_000)
    search_share: float = 0.6  # of the non-final calls; the rest is enhance_reasoning
    search_s: Sampler = LogNormal(median=2.5, sigma=1.1, low=0.2, high=60)
    enhance_reasoning_s: Sampler = LogNormal(median=12, sigma=0.9, low=1, high=150)
    answer_s: Sampler = LogNormal(median=15, sigma=1.0, low=1, high=240)
    # Qwen3-8B's native window.
    max_context_tokens: int = 32_768


def draw(params: RoutingParams, rng: np.random.Generator, programs: int) -> Drawn:
    steps = draw_steps(rng, params.steps, programs)
    total = int(steps.sum())
    prompt0 = params.shared_prefix_tokens + whole(params.question_tokens.sample(rng, programs), 1)
    output = whole(params.output_tokens.sample(rng, total))
    growth = whole(params.growth_tokens.sample(rng, total))
    mix = Choice(("search", "enhance_reasoning"), (params.search_share, 1 - params.search_share))
    latency = {"search": params.search_s, "enhance_reasoning": params.enhance_reasoning_s,
               "answer": params.answer_s}
    # The orchestrator's last call hands the question to the answer model.
    index, seconds = draw_tools(rng, steps, mix, latency, final_tool="answer")
    return Drawn(workflow="routing", shared_prefix_tokens=params.shared_prefix_tokens,
                 steps=steps, prompt0_tokens=prompt0, output_tokens=output,
                 growth_tokens=growth, tool_index=index, tool_s=seconds,
                 tool_names=tool_names(mix, "answer"))
