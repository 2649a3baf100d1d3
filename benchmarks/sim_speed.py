"""Simulator speed: wall time and simulated agent steps per wall-second, optionally
side by side with an earlier version of the code.

Cases (from the simulator's speed goals):
1. ``swebench``: the whole swebench trace at 96 parallel programs on 1 replica (paper preset),
2. ``coding``: a synthetic 10,000-program coding trace at 768 parallel on 8 replicas.
Every measurement runs in a fresh process (so peak memory is its own); with
``--baseline REF`` the same cases also run on the code at git ref REF, alternating
old and new run by run, so both see the same machine load. Medians of ``--repeat``.

    python benchmarks/sim_speed.py --repeat 3 --baseline 300a5a7
    python benchmarks/sim_speed.py --cases coding --policies vllm --scaling 1000,10000,100000

``--scaling`` times the coding case (vllm) at several program counts, to show how
wall time grows with the trace (it should grow linearly: seconds per program flat).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CASES = {  # name: (label, parallel, replicas)
    "swebench": ("swebench, 96 parallel, 1 replica", 96, 1),
    "coding": ("coding, {n:,} programs, 768 parallel, 8 replicas", 768, 8),
}


def run_one(case: str, policy: str, programs: int) -> dict:
    """One simulation in this process (the code is whatever ``thunder`` imports as; a baseline
    from before the package layout of docs/architecture.md has the old module names)."""
    from thunder.policies.registry import make_policy
    from thunder.sim.run import SimConfig, simulate
    try:
        from thunder.sim.presets import load_engine_spec
        from thunder.traces import load_trace
        from thunder.traces.synth import synthesize
    except ImportError:  # the layout before core/, traces/, results/
        from thunder.sim.hardware import load_engine_spec  # type: ignore[no-redef]
        from thunder.synth import synthesize  # type: ignore[no-redef]
        from thunder.trace import load_trace  # type: ignore[no-redef]

    if case == "swebench":
        trace = load_trace(REPO / "traces" / "swebench.jsonl").programs
    else:
        trace = tuple(synthesize("coding", programs, 0)[1])
    _, parallel, replicas = CASES[case]
    spec = load_engine_spec("paper-8xh100-glm46")
    try:
        chosen = make_policy(policy)
    except ValueError:
        if policy != "thunder-paper":
            raise
        chosen = make_policy("thunder")  # before the default policy landed, the paper's was called thunder
    wall, cpu = time.perf_counter(), time.process_time()
    outcome = simulate(trace, chosen, spec, SimConfig(parallel=parallel, replicas=replicas))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"wall_s": wall, "cpu_s": cpu, "steps": len(outcome.cluster.records.steps),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def measure(tree: Path, case: str, policy: str, programs: int) -> dict:
    """``run_one`` in a fresh interpreter importing ``thunder`` from ``tree``."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    command = [sys.executable, str(Path(__file__).resolve()), "--one", case, policy, str(programs)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True, cwd=tree)
    return json.loads(done.stdout.strip().splitlines()[-1])


def export_ref(ref: str) -> Path:
    """The tree at git ref ``ref`` in a temporary directory (``git archive``; nothing checked out)."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref], capture_output=True, check=True).stdout
    target = Path(tempfile.mkdtemp(prefix="thunder-baseline-"))
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(target)
    return target


def median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--policies", default="vllm,continuum,thunder")
    parser.add_argument("--cases", default="swebench,coding", help="comma-separated: swebench, coding")
    parser.add_argument("--programs", type=int, default=10_000, help="coding case: programs in the trace")
    parser.add_argument("--large-repeat", type=int, default=None, help="repeats of the coding case (default --repeat)")
    parser.add_argument("--baseline", metavar="REF", help="also run the code at this git ref, alternating runs")
    parser.add_argument("--scaling", metavar="N,N,...", help="coding case (vllm) at these program counts")
    parser.add_argument("--one", nargs=3, metavar=("CASE", "POLICY", "PROGRAMS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one[0], args.one[1], int(args.one[2]))))
        return
    trees = {"new": REPO}
    if args.baseline:
        trees = {"old": export_ref(args.baseline), "new": REPO}
    header = f"| case | policy | {'old wall s | ' if args.baseline else ''}wall s | agent steps | steps / wall-s " \
             f"| {'speedup | ' if args.baseline else ''}peak MB |"
    print(f"code: {subprocess.run(['git', '-C', str(REPO), 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True).stdout.strip()}"
          f"{f', baseline {args.baseline}' if args.baseline else ''}; {args.repeat} repeats, medians; "
          f"load average {os.getloadavg()[0]:.1f} at start", flush=True)
    print(header)
    print("|---|---|" + "---:|" * (header.count("|") - 3), flush=True)
    for case in [c.strip() for c in args.cases.split(",") if c.strip()]:
        repeat = args.large_repeat or args.repeat if case == "coding" else args.repeat
        label = CASES[case][0].format(n=args.programs)
        for policy in args.policies.split(","):
            runs: dict[str, list[dict]] = {name: [] for name in trees}
            for _ in range(repeat):
                for name, tree in trees.items():  # alternating: old and new see the same load
                    runs[name].append(measure(tree, case, policy, args.programs))
            new = runs["new"]
            wall = median(new, "wall_s")
            steps = new[0]["steps"]
            cells = [label, policy]
            if args.baseline:
                cells.append(f"{median(runs['old'], 'wall_s'):.2f}")
                assert runs["old"][0]["steps"] == steps, "old and new simulated different step counts"
            cells += [f"{wall:.2f}", f"{steps:,}", f"{steps / wall:,.0f}"]
            if args.baseline:
                cells.append(f"{median(runs['old'], 'wall_s') / wall:.2f}x")
            cells.append(f"{max(r['peak_rss_mb'] for r in new):,.0f}")
            print("| " + " | ".join(cells) + " |", flush=True)
    if args.baseline:
        shutil.rmtree(trees["old"], ignore_errors=True)
    if args.scaling:
        print("\n| programs | agent steps | wall s | us per agent step | peak MB |\n|---:|---:|---:|---:|---:|")
        for count in [int(v) for v in args.scaling.split(",")]:
            one = measure(REPO, "coding", "vllm", count)
            print(f"| {count:,} | {one['steps']:,} | {one['wall_s']:.1f} | {1e6 * one['wall_s'] / one['steps']:.0f} "
                  f"| {one['peak_rss_mb']:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
