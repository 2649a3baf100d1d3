"""Simulator speed: wall time and simulated agent steps per wall-second.

Cases (from the simulator's speed goals):
1. the whole swebench trace at 96 parallel programs on 1 replica (paper preset),
2. a synthetic 10,000-program coding trace at 768 parallel on 8 replicas.
Each case is run ``--repeat`` times per policy; the median is reported.

    python benchmarks/sim_speed.py [--repeat 3] [--policies vllm,thunder] [--skip-large]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from thunder.policies.registry import make_policy
from thunder.sim.hardware import load_engine_spec
from thunder.sim.run import SimConfig, simulate
from thunder.synth import synthesize
from thunder.trace import load_trace

REPO = Path(__file__).resolve().parents[1]


def measure(programs, policy: str, parallel: int, replicas: int, repeat: int) -> tuple[float, int]:
    spec = load_engine_spec("paper-8xh100-glm46")
    walls, steps = [], 0
    for _ in range(repeat):
        start = time.perf_counter()
        outcome = simulate(programs, make_policy(policy), spec, SimConfig(parallel=parallel, replicas=replicas))
        walls.append(time.perf_counter() - start)
        steps = len(outcome.cluster.records.steps)
    return statistics.median(walls), steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--policies", default="vllm,continuum,thunder")
    parser.add_argument("--skip-large", action="store_true", help="only the swebench case")
    args = parser.parse_args()
    cases = [("swebench, 96 parallel, 1 replica", load_trace(REPO / "traces" / "swebench.jsonl").programs, 96, 1,
              args.repeat)]
    if not args.skip_large:
        _, generated = synthesize("coding", 10_000, 0)
        cases.append(("coding 10k programs, 768 parallel, 8 replicas", tuple(generated), 768, 8, 1))
    print(f"{'case':<48} {'policy':<10} {'wall s':>8} {'steps':>8} {'steps/s':>9}")
    for name, programs, parallel, replicas, repeat in cases:
        for policy in args.policies.split(","):
            wall, steps = measure(programs, policy, parallel, replicas, repeat)
            print(f"{name:<48} {policy:<10} {wall:8.2f} {steps:8d} {steps / wall:9.0f}", flush=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
