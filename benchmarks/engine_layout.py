#!/usr/bin/env python3
"""Where the CPU goes while a trace replays against real vLLM, per process, and how long
a request spends outside vLLM's own timestamps: the measurement behind
``VllmServerConfig.single_process`` (docs/vllm-cpu.md).

    python benchmarks/engine_layout.py                       # single-process vLLM (the default)
    python benchmarks/engine_layout.py --multiprocess        # vLLM's own CPU layout: worker + engine core
    python benchmarks/engine_layout.py --modes direct:8,vllm:8,thunder:8,direct:16

The trace is the fidelity benchmark's (16 SWE-bench programs, 20 steps, tokens x 0.25,
tools x 0.1). Each mode is ``direct`` (``thunder run`` straight at vLLM) or a policy name
(through ``thunder serve --policy``), then the number of parallel programs. Prints one
JSON line per mode: steps/min, mean client latency, vLLM's engine time (queue +
inference) and e2e time per request, the difference (time outside vLLM's stamps), CPU
seconds of every process of the server and of the proxy, and how busy the machine was.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import fidelity  # noqa: E402
from thunder.results.tables import build_tables, summarize  # noqa: E402
from thunder.runtime.engines.cpu_affinity import process_group  # noqa: E402
from thunder.runtime.engines.launcher import VllmServer, VllmServerConfig  # noqa: E402
from thunder.runtime.replay import ReplayConfig, replay  # noqa: E402


def cpu_seconds(pid: int) -> float:
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy() -> tuple[int, int]:
    values = [int(v) for v in open("/proc/stat").readline().split()[1:]]
    return sum(values), values[3] + values[4]  # all, idle + iowait


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    fidelity.add_trace_arguments(parser)
    parser.add_argument("--modes", default="direct:8,vllm:8,direct:16,vllm:16")
    parser.add_argument("--multiprocess", action="store_true", help="vLLM's default CPU layout instead")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="thunder-layout-") as tmp:
        work = Path(tmp)
        trace = fidelity.write_scaled_trace(args, work / "trace.jsonl")
        config = VllmServerConfig(model_dir=fidelity.build_model(work / "tiny-llama"), served_model_name="tiny-llama",
                                  log_path=work / "vllm.log", single_process=not args.multiprocess)
        with VllmServer(config) as server:
            assert server.pid is not None
            for seed, mode in enumerate(args.modes.split(","), start=1):
                how, parallel = mode.split(":")
                proxy = None if how == "direct" else fidelity.Proxy(server.url, how, work / f"export-{seed}")
                processes = {**process_group(server.pid), **({proxy.proc.pid: "thunder serve"} if proxy else {})}
                before = {pid: cpu_seconds(pid) for pid in processes}
                busy0, engine0 = machine_busy(), fidelity.engine_seconds([server.url])
                result = asyncio.run(replay(trace, ReplayConfig(endpoint=proxy.url if proxy else server.url,
                                                                parallel=int(parallel), time_scale=args.time_scale,
                                                                seed=seed)))
                busy1 = machine_busy()
                cpu = {f"{name} ({pid})": round(cpu_seconds(pid) - before[pid], 2) for pid, name in processes.items()}
                if proxy is not None:
                    proxy.stop()
                time.sleep(1.0)  # vLLM's counters update in batches
                engine1 = fidelity.engine_seconds([server.url])
                served = engine1[2] - engine0[2]
                summary = summarize(build_tables(result.steps, result.programs, [], []), None, result.duration_s)
                e2e = (engine1[1] - engine0[1]) / served
                print(json.dumps({
                    "mode": mode, "layout": "multiprocess" if args.multiprocess else "single-process",
                    "steps_per_min": round(summary["steps_per_min"]),
                    "client_latency_s": round(summary["mean_step_latency_s"], 4),
                    "vllm_engine_s": round((engine1[0] - engine0[0]) / served, 4), "vllm_e2e_s": round(e2e, 4),
                    "outside_vllm_s": round(summary["mean_step_latency_s"] - e2e, 4),
                    "cpu_s": cpu, "wall_s": round(result.duration_s, 1),
                    "machine_busy": round(1 - (busy1[1] - busy0[1]) / (busy1[0] - busy0[0]), 3)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
