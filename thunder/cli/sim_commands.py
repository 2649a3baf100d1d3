"""`thunder simulate` and `thunder compare`: the simulated world."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from thunder.cli.app import app, fail as _fail, int_list as _int_list, parse_options as _parse_options

from thunder.traces import TraceError


@app.command("simulate")
def simulate_command(
    trace: Path = typer.Option(Path("traces/swebench.jsonl"), "--trace", help="Trace file (format v1)."),
    policy: str = typer.Option("thunder", "--policy", help="Scheduling policy: thunder (the default), "
                               "thunder-paper, vllm, continuum, gateway, power-of-two, autellix."),
    parallel: int = typer.Option(48, "--parallel", min=1, help="Programs running at once (closed loop)."),
    replicas: int = typer.Option(1, "--replicas", min=1, help="Data-parallel engine replicas."),
    preset: str = typer.Option("paper-8xh100-glm46", "--preset",
                               help="Engine preset (paper-8xh100-glm46, h100-llama8b, tiny-cpu) or a profile JSON."),
    profile: Path | None = typer.Option(None, "--profile", help="Calibrated engine profile JSON (overrides --preset)."),
    horizon_s: float | None = typer.Option(None, "--horizon-s", help="Stop at this simulated time, cycling the trace."),
    open_loop: bool = typer.Option(False, "--open-loop", help="Start programs at their arrival_s instead."),
    tool_time_scale: float = typer.Option(1.0, "--tool-time-scale", min=0.0, help="Multiply every tool time."),
    default_tool_s: float = typer.Option(0.0, "--default-tool-s", min=0.0,
                                         help="Tool time for steps whose trace has none."),
    mode: str = typer.Option("closed", "--mode", help="closed (steady concurrency) or rollout (an RL batch: "
                                                      "--programs start at t=0 and all run to the end)."),
    rollout_programs: int | None = typer.Option(None, "--programs", min=1,
                                                help="Rollout batch size (default: the whole trace)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Shuffle the trace's programs with this seed (0: as is)."),
    option: list[str] = typer.Option([], "--option", "-O", help="Policy option NAME=VALUE (repeatable)."),
    tool_policy: str | None = typer.Option(
        None, "--tool-policy", help="Model tool environments (disk, ports, setup time) with this policy: "
                                    "keep, on-demand or program-aware (default: not modelled)."),
    disk_capacity_gb: float | None = typer.Option(
        None, "--disk-capacity-gb", min=0.0, help="The tool host's disk in GB (default: unlimited)."),
    out: Path | None = typer.Option(None, "--out", help="Write steps/programs/timeseries/decisions tables here."),
    fmt: str = typer.Option("csv", "--format", help="Table format: csv or parquet (parquet needs pyarrow)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    unbounded_kv: bool = typer.Option(False, "--unbounded-kv", help="KV capacity never binds (no eviction, "
                                                                    "preemption or recompute): the upper bound."),
    group_size: int = typer.Option(1, "--group-size", min=1, help="Rollout mode: run each trace program this "
                                                                  "many times as one group (GRPO samples)."),
) -> None:
    """Simulate one policy on a trace and print the summary."""
    import json

    from thunder.results.tables import format_summary, write_tables
    from thunder.sim.cluster import SimulationError
    from thunder.sim.experiment import CellSpec, run_cell

    cell = CellSpec(trace=str(trace), policy=policy, parallel=parallel, replicas=replicas,
                    preset=str(profile) if profile else preset, horizon_s=horizon_s, open_loop=open_loop,
                    tool_time_scale=tool_time_scale, default_tool_s=default_tool_s,
                    policy_options=_parse_options(option), mode=mode, programs=rollout_programs, seed=seed,
                    tool_policy=tool_policy, disk_capacity_gb=disk_capacity_gb, unbounded_kv=unbounded_kv,
                    group_size=group_size)
    if disk_capacity_gb is not None and tool_policy is None:
        _fail("--disk-capacity-gb needs --tool-policy (tool environments are not modelled without one)")
    try:
        if quiet or as_json:
            summary, tables = run_cell(cell, keep_tables=out is not None)
        else:
            with typer.progressbar(length=1000, label="simulating", file=sys.stderr) as bar:
                done = [0]

                def progress(fraction: float) -> None:
                    target = int(fraction * 1000)
                    bar.update(max(0, target - done[0]))
                    done[0] = max(done[0], target)

                summary, tables = run_cell(cell, progress=progress, keep_tables=out is not None)
    except (TraceError, SimulationError, ValueError) as exc:
        _fail(str(exc))
        return
    if out is not None and tables is not None:
        try:
            write_tables(tables, out, summary, fmt=fmt)
        except ImportError:
            _fail(f"--format {fmt} needs pyarrow: pip install 'thunder[parquet]', or use --format csv")
    if out is not None and tables is not None and mode == "rollout":
        from thunder.results.plots import memory_balance_plot
        memory_balance_plot({policy: tables.timeseries}, out / "memory_balance.png",
                            f"{policy}: {summary['rollout_programs']} programs on {replicas} replica(s)")
    if as_json:
        typer.echo(json.dumps(summary, indent=2, default=str))
    else:
        typer.echo(format_summary(summary))
        if mode == "rollout":
            from thunder.results.rollout import format_rollout
            typer.echo(format_rollout(summary))
        if out is not None:
            typer.echo(f"tables written to {out}/")


@app.command("compare")
def compare_command(
    trace: Path = typer.Option(Path("traces/swebench.jsonl"), "--trace", help="Trace file (format v1)."),
    policies: str = typer.Option("vllm,continuum,thunder-paper,thunder", "--policies",
                                 help="Comma-separated policies."),
    parallel: str = typer.Option("24,48,72,96", "--parallel", help="Comma-separated parallel program counts."),
    replicas: int = typer.Option(1, "--replicas", min=1, help="Data-parallel engine replicas."),
    preset: str = typer.Option("paper-8xh100-glm46", "--preset", help="Engine preset or profile JSON."),
    horizon_s: float | None = typer.Option(None, "--horizon-s", help="Stop each cell here, cycling the trace."),
    tool_time_scale: float = typer.Option(1.0, "--tool-time-scale", min=0.0, help="Multiply every tool time."),
    workers: int = typer.Option(0, "--workers", min=0, help="Worker processes (0 = one per core)."),
    out: Path = typer.Option(Path("results/compare"), "--out", help="Directory for results.csv and plots."),
    executor: str = typer.Option("local", "--executor", help="local (worker processes) or ray (one Ray task "
                                                             "per cell)."),
    address: str | None = typer.Option(None, "--address", help="Ray cluster to use (e.g. auto, ray://HOST:10001); "
                                                               "default: start a local Ray instance."),
    seeds: str = typer.Option("0", "--seeds", help="Comma-separated seeds; each shuffles the trace's program "
                                                   "order (0: as is). Tables show the mean over seeds."),
    mode: str = typer.Option("closed", "--mode", help="closed or rollout (then --parallel is ignored)."),
    rollout_programs: int | None = typer.Option(None, "--programs", min=1, help="Rollout batch size."),
    bound: bool = typer.Option(True, "--bound/--no-bound", help="Also run each cell with unbounded KV and "
                                                                "report every policy's share of it (of_bound)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress line (it is off anyway when stderr is "
                                                      "not a terminal)."),
) -> None:
    """Run a policy x parallelism grid; print the table and write plots."""
    import os

    import pandas as pd

    from thunder.results.plots import cost_breakdown_plot, hit_rate_plot, throughput_plot
    from thunder.policies.registry import policy_names
    from thunder.sim.cluster import SimulationError
    from thunder.sim.experiment import CellSpec, bound_cell, run_grid

    names = [p.strip() for p in policies.split(",") if p.strip()]
    unknown = [n for n in names if n not in policy_names()]
    if unknown:
        _fail(f"--policies: unknown {', '.join(unknown)}; known: {', '.join(policy_names())}")
    if executor not in ("local", "ray"):
        _fail(f"--executor {executor!r}: expected local or ray")
    seed_list = [int(v) for v in seeds.split(",") if v.strip()] if seeds.strip() else [0]
    levels = [rollout_programs or 0] if mode == "rollout" else _int_list(parallel, "--parallel")
    cells = [CellSpec(trace=str(trace), policy=name, parallel=max(1, n), replicas=replicas, preset=preset,
                      horizon_s=horizon_s, tool_time_scale=tool_time_scale, mode=mode,
                      programs=rollout_programs, seed=seed)
             for seed in seed_list for n in levels for name in names]
    bounds = list(dict.fromkeys(bound_cell(c) for c in cells)) if bound else []
    workers = workers or min(len(cells) + len(bounds), os.cpu_count() or 1)

    from thunder.cli.progress import GridProgress
    progress = GridProgress([("bound" if c.unbounded_kv else c.policy) + f" x{c.parallel}"
                             + (f" s{c.seed}" if len(seed_list) > 1 else "") for c in cells + bounds],
                            enabled=False if quiet else None)

    def report(s: dict) -> None:
        progress.clear()
        typer.echo(f"  {s['policy']:>10} x{s['parallel']:<4} seed {s.get('seed', 0):<3} "
                   f"{s['steps_per_min']:8.1f} steps/min  hit {s['kv_hit_rate']:.3f}", err=True)
        progress.draw()

    try:
        if executor == "ray":
            from thunder.sim.ray_grid import run_grid_ray
            results = run_grid_ray(cells + bounds, address=address, on_result=report)
        else:
            results = run_grid(cells + bounds, workers=workers, on_result=report,
                               on_progress=progress.update if progress.enabled else None)
    except (TraceError, SimulationError, ValueError, RuntimeError) as exc:
        progress.clear()
        _fail(str(exc))
        return
    progress.clear()
    frame = pd.DataFrame(results[:len(cells)])
    out.mkdir(parents=True, exist_ok=True)
    if bounds:
        bound_frame = pd.DataFrame(results[len(cells):])
        bound_frame.to_csv(out / "bound.csv", index=False)
        by_cell = bound_frame.set_index(["parallel", "seed"])["steps_per_min"]
        frame["bound_steps_per_min"] = [by_cell[(p, s)] for p, s in zip(frame["parallel"], frame["seed"])]
        frame["of_bound"] = frame["steps_per_min"] / frame["bound_steps_per_min"]
    frame.to_csv(out / "results.csv", index=False)
    if len(seed_list) > 1:
        from thunder.results.sweep import mean_over_seeds
        frame = mean_over_seeds(frame)
    base = frame.loc[frame["policy"] == names[0]].set_index("parallel")["steps_per_min"]
    frame["speedup_vs_" + names[0]] = frame["steps_per_min"] / frame["parallel"].map(base)
    columns = ["policy", "parallel", "steps_per_min", "speedup_vs_" + names[0]]
    columns += ["of_bound"] if bounds else []
    columns += ["kv_hit_rate", "cost_recompute", "cost_caching", "cost_unused", "pauses", "preemptions",
                "p95_step_latency_s"]
    typer.echo(frame[columns].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    title = f"{trace.stem}, {preset}, {replicas} replica(s)"
    for path in (throughput_plot(frame, out / "throughput.png", f"Throughput: {title}"),
                 hit_rate_plot(frame, out / "hit_rate.png", f"KV hit rate: {title}"),
                 cost_breakdown_plot(frame, out / "cost_breakdown.png", f"Cost split: {title}")):
        typer.echo(f"wrote {path}")
