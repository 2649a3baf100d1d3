"""The ``science`` workload: an OpenHands-like agent on ScienceAgentBench.

Long programs in a heavy sandbox: the agent edits files and runs data
analysis scripts and notebook cells that take tens of seconds to minutes, in
an environment that is slow to prepare and large on disk.

Sources, per parameter:
- env.setup_s: the bundled Terminal-Bench table (``setup_time_distribution``):
  2,371 public leaderboard trials, container start + agent install.
- env.disk_bytes: the ThunderAgent paper measures OpenHands sandboxes at an
  average above 10 GB; lognormal with median 11 GB, sigma 0.3 (mean 11.5 GB).
- env.ports: OpenHands' Docker runtime publishes one port for its action
  server, one for VS Code and two application ports: 4.
- tool mix and latency: the paper's ScienceAgentBench tool buckets (Fig. 9):
  execute_bash and execute_ipython_cell with tails to about 600 s (used as
  caps), str_replace_editor under 0.75 s, task_tracker under 0.15 s. Medians,
  sigmas and the mix are assumptions: the paper publishes histograms only.
- tokens and step counts: assumptions sized for OpenHands (a long system
  prompt with tool schemas; file views and script output appended each step).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from thunder.traces.synth.distributions import Choice, LogNormal, Sampler, whole
from thunder.traces.synth.setup_times import setup_time_distribution
from thunder.traces.synth.workload import Drawn, draw_steps, draw_tools, tool_names

TOOLS = ("execute_bash", "execute_ipython_cell", "str_replace_editor", "task_tracker")


@dataclass(frozen=True, slots=True)
class ScienceParams:
    """Distributions of the science workload (tokens, seconds, bytes); see module doc."""

    steps: Sampler = LogNormal(median=22, sigma=0.5, low=3, high=100)
    shared_prefix_tokens: int = 5_000
    # Task instruction, dataset preview and domain knowledge.
    task_tokens: Sampler = LogNormal(median=900, sigma=0.5, low=100, high=8_000)
    output_tokens: Sampler = LogNormal(median=250, sigma=0.9, low=10, high=8_192)
    growth_tokens: Sampler = LogNormal(median=450, sigma=1.1, low=20, high=16_000)
    tool_mix: tuple[float, ...] = (0.35, 0.25, 0.35, 0.05)  # in TOOLS order
    execute_bash_s: Sampler = LogNormal(median=6, sigma=1.5, low=0.05, high=600)
    execute_ipython_cell_s: Sampler = LogNormal(median=10, sigma=1.4, low=0.05, high=600)
    str_replace_editor_s: Sampler = LogNormal(median=0.1, sigma=0.6, low=0.01, high=0.75)
    task_tracker_s: Sampler = LogNormal(median=0.02, sigma=0.5, low=0.002, high=0.15)
    max_context_tokens: int = 131_072
    setup_s: Sampler = field(default_factory=setup_time_distribution)
    disk_bytes: Sampler = LogNormal(median=11e9, sigma=0.3, low=4e9, high=40e9)
    ports: int = 4


def draw(params: ScienceParams, rng: np.random.Generator, programs: int) -> Drawn:
    steps = draw_steps(rng, params.steps, programs)
    total = int(steps.sum())
    prompt0 = params.shared_prefix_tokens + whole(params.task_tokens.sample(rng, programs), 1)
    output = whole(params.output_tokens.sample(rng, total))
    growth = whole(params.growth_tokens.sample(rng, total))
    mix = Choice(TOOLS, params.tool_mix)
    latency = {"execute_bash": params.execute_bash_s,
               "execute_ipython_cell": params.execute_ipython_cell_s,
               "str_replace_editor": params.str_replace_editor_s,
               "task_tracker": params.task_tracker_s}
    # OpenHands ends with a `finish` action, which runs nothing in the sandbox.
    index, seconds = draw_tools(rng, steps, mix, latency, final_tool=None)
    return Drawn(workflow="science", shared_prefix_tokens=params.shared_prefix_tokens,
                 steps=steps, prompt0_tokens=prompt0, output_tokens=output,
                 growth_tokens=growth, tool_index=index, tool_s=seconds,
                 tool_names=tool_names(mix, None),
                 setup_s=params.setup_s.sample(rng, programs),
                 disk_bytes=whole(params.disk_bytes.sample(rng, programs)),
                 ports=params.ports)
