"""The ``thunder`` command line: the one place where the worlds are wired together."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from thunder.trace import TraceError, TraceReader

app = typer.Typer(help="thunder: program-aware agentic LLM inference (simulator and live runtime).",
                  no_args_is_help=True, add_completion=False)
trace_app = typer.Typer(help="Agent traces: validate, convert, synthesize, summarize.", no_args_is_help=True)
app.add_typer(trace_app, name="trace")


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)


@trace_app.command("validate")
def trace_validate(files: list[Path] = typer.Argument(..., help="Trace files (JSON Lines) to check.")) -> None:
    """Check trace files against format v1; print one line per file."""
    failed = False
    for path in files:
        try:
            reader = TraceReader(path)
            programs = steps = 0
            for program in reader:
                programs += 1
                steps += len(program.steps)
            typer.echo(f"{path}: ok, {programs} programs, {steps} steps")
        except TraceError as exc:
            typer.echo(f"error: {exc}", err=True)
            failed = True
    if failed:
        raise typer.Exit(code=1)


@trace_app.command("synth")
def trace_synth(
    workload: str = typer.Option(..., "--workload", "-w", help="coding, routing or science."),
    programs: int = typer.Option(..., "--programs", "-n", min=1, help="Number of programs to draw."),
    seed: int = typer.Option(0, "--seed", "-s", help="Random seed: the same seed gives the same trace."),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Trace file to write (default: traces/<workload>.jsonl)."),
    rate: float | None = typer.Option(
        None, "--rate", help="Poisson arrivals, programs per second (default: no arrival_s, a closed loop)."),
) -> None:
    """Draw a synthetic trace (format v1); see docs/synthetic-traces.md."""
    # imported here so `thunder trace validate` does not pay for numpy
    from collections.abc import Iterator

    from thunder.synth import synthesize
    from thunder.trace import TraceProgram, write_trace

    try:
        header, drawn = synthesize(workload, programs, seed, rate=rate)
    except ValueError as exc:
        _fail(str(exc))
        return
    target = output if output is not None else Path("traces") / f"{workload}.jsonl"
    steps = 0

    def counted() -> Iterator[TraceProgram]:
        nonlocal steps
        for program in drawn:
            steps += len(program.steps)
            yield program

    try:
        written = write_trace(target, header, counted())
    except OSError as exc:
        _fail(f"{target}: cannot write: {exc.strerror}")
        return
    typer.echo(f"{target}: wrote {written} {workload} programs, {steps} steps (seed {seed})")


@trace_app.command("stats")
def trace_stats_command(
    file: Path = typer.Argument(..., help="Trace file (JSON Lines)."),
    as_json: bool = typer.Option(False, "--json", help="Print the numbers as one JSON object."),
) -> None:
    """Summarise a trace: programs, steps, token and tool-time distributions."""
    import json

    from thunder.trace_stats import render_stats, trace_stats

    try:
        stats = trace_stats(file)
    except TraceError as exc:
        _fail(str(exc))
        return
    typer.echo(json.dumps(stats, indent=2) if as_json else render_stats(stats))


@trace_app.command("convert")
def trace_convert(
    input_path: Path = typer.Argument(..., metavar="INPUT", help="Recorded runs: a file or a folder."),
    source_format: str = typer.Option(..., "--from", help="Source format: mini-swe-agent, openhands, tau-bench."),
    output: Path = typer.Option(..., "-o", "--output", help="Trace file to write (JSON Lines, format v1)."),
    chars_per_token: float | None = typer.Option(
        None, "--chars-per-token", help="Characters per token where the source has no token counts (default 4.0)."),
    tool_time: str | None = typer.Option(
        None, "--tool-time", help="Synthetic tool time where the source has none: const:S, exp:MEAN, "
                                  "lognormal:MEDIAN,SIGMA (seconds)."),
    seed: int = typer.Option(0, "--seed", help="Seed for --tool-time draws."),
) -> None:
    """Convert recorded agent runs into a trace; print what was written and every skipped run."""
    # Imported here so the other trace commands do not load the converters.
    from thunder.converters import ConversionError, ConvertOptions, convert, parse_tool_time
    from thunder.trace import write_trace

    try:
        options = ConvertOptions(chars_per_token=chars_per_token,
                                 tool_time=parse_tool_time(tool_time) if tool_time else None, seed=seed)
        header, programs, report = convert(source_format, input_path, options)
    except ConversionError as exc:
        _fail(str(exc))
        return
    if not programs:
        for source, reason in report.skipped:
            typer.echo(f"  skipped {source}: {reason}", err=True)
        _fail(f"no programs converted from {input_path} ({len(report.skipped)} skipped)")
    try:
        write_trace(output, header, programs)
        # The converters promise valid traces; check the file, not the promise.
        steps = sum(len(program.steps) for program in TraceReader(output))
    except OSError as exc:
        _fail(f"cannot write {output}: {exc.strerror}")
        return
    except TraceError as exc:
        _fail(f"converted trace does not validate: {exc}")
        return
    typer.echo(f"wrote {len(programs)} programs, {steps} steps to {output}")
    typer.echo(f"skipped {len(report.skipped)}")
    for source, reason in report.skipped:
        typer.echo(f"  skipped {source}: {reason}")
    for source, what in report.warnings:
        typer.echo(f"  warning {source}: {what}")


def _parse_options(options: list[str]) -> tuple[tuple[str, object], ...]:
    """``--option name=value`` pairs; values parsed as JSON where they parse (numbers, bools)."""
    import json
    parsed = []
    for item in options:
        if "=" not in item:
            _fail(f"--option {item!r}: expected NAME=VALUE")
        name, raw = item.split("=", 1)
        try:
            value: object = json.loads(raw)
        except ValueError:
            value = raw
        parsed.append((name.strip().replace("-", "_"), value))
    return tuple(parsed)


def _int_list(text: str, flag: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        _fail(f"{flag}: expected comma-separated integers, got {text!r}")
    if not values or min(values) < 1:
        _fail(f"{flag}: values must be >= 1, got {text!r}")
    return values


@app.command("simulate")
def simulate_command(
    trace: Path = typer.Option(Path("traces/swebench.jsonl"), "--trace", help="Trace file (format v1)."),
    policy: str = typer.Option("thunder", "--policy", help="Scheduling policy: vllm, continuum, thunder, gateway, power-of-two, autellix."),
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
) -> None:
    """Simulate one policy on a trace and print the summary."""
    import json

    from thunder.metrics import format_summary, write_tables
    from thunder.sim.cluster import SimulationError
    from thunder.sim.experiment import CellSpec, run_cell

    cell = CellSpec(trace=str(trace), policy=policy, parallel=parallel, replicas=replicas,
                    preset=str(profile) if profile else preset, horizon_s=horizon_s, open_loop=open_loop,
                    tool_time_scale=tool_time_scale, default_tool_s=default_tool_s,
                    policy_options=_parse_options(option), mode=mode, programs=rollout_programs, seed=seed,
                    tool_policy=tool_policy, disk_capacity_gb=disk_capacity_gb)
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
        except ImportError as exc:
            _fail(f"--format {fmt} needs pyarrow: pip install 'thunder[parquet]', or use --format csv")
    if out is not None and tables is not None and mode == "rollout":
        from thunder.plots import memory_balance_plot
        memory_balance_plot({policy: tables.timeseries}, out / "memory_balance.png",
                            f"{policy}: {summary['rollout_programs']} programs on {replicas} replica(s)")
    if as_json:
        typer.echo(json.dumps(summary, indent=2, default=str))
    else:
        typer.echo(format_summary(summary))
        if mode == "rollout":
            from thunder.rollout import format_rollout
            typer.echo(format_rollout(summary))
        if out is not None:
            typer.echo(f"tables written to {out}/")


@app.command("compare")
def compare_command(
    trace: Path = typer.Option(Path("traces/swebench.jsonl"), "--trace", help="Trace file (format v1)."),
    policies: str = typer.Option("vllm,continuum,thunder", "--policies", help="Comma-separated policies."),
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
) -> None:
    """Run a policy x parallelism grid; print the table and write plots."""
    import os

    import pandas as pd

    from thunder.plots import cost_breakdown_plot, hit_rate_plot, throughput_plot
    from thunder.policies.registry import policy_names
    from thunder.sim.cluster import SimulationError
    from thunder.sim.experiment import CellSpec, run_grid

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
    workers = workers or min(len(cells), os.cpu_count() or 1)

    def report(s: dict) -> None:
        typer.echo(f"  {s['policy']:>10} x{s['parallel']:<4} seed {s.get('seed', 0):<3} "
                   f"{s['steps_per_min']:8.1f} steps/min  hit {s['kv_hit_rate']:.3f}", err=True)

    try:
        if executor == "ray":
            from thunder.sim.ray_grid import run_grid_ray
            results = run_grid_ray(cells, address=address, on_result=report)
        else:
            results = run_grid(cells, workers=workers, on_result=report)
    except (TraceError, SimulationError, ValueError, RuntimeError) as exc:
        _fail(str(exc))
        return
    frame = pd.DataFrame(results)
    out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out / "results.csv", index=False)
    if len(seed_list) > 1:
        from thunder.sweep import mean_over_seeds
        frame = mean_over_seeds(frame)
    base = frame.loc[frame["policy"] == names[0]].set_index("parallel")["steps_per_min"]
    frame["speedup_vs_" + names[0]] = frame["steps_per_min"] / frame["parallel"].map(base)
    columns = ["policy", "parallel", "steps_per_min", "speedup_vs_" + names[0], "kv_hit_rate",
               "cost_recompute", "cost_caching", "cost_unused", "pauses", "preemptions", "p95_step_latency_s"]
    typer.echo(frame[columns].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    title = f"{trace.stem}, {preset}, {replicas} replica(s)"
    for path in (throughput_plot(frame, out / "throughput.png", f"Throughput: {title}"),
                 hit_rate_plot(frame, out / "hit_rate.png", f"KV hit rate: {title}"),
                 cost_breakdown_plot(frame, out / "cost_breakdown.png", f"Cost split: {title}")):
        typer.echo(f"wrote {path}")


@app.command("run")
def run_command(
    trace: Path = typer.Option(Path("traces/swebench.jsonl"), "--trace", help="Trace file (format v1)."),
    endpoint: str = typer.Option(..., "--endpoint", help="Base URL of a thunder proxy or a vLLM server."),
    parallel: int = typer.Option(8, "--parallel", min=1, help="Programs running at once (closed loop)."),
    time_scale: float = typer.Option(1.0, "--time-scale", min=0.0, help="Multiply every tool time."),
    token_scale: float = typer.Option(1.0, "--token-scale", min=0.0001, help="Multiply every token count."),
    programs: int | None = typer.Option(None, "--programs", min=1, help="Replay only the first N programs."),
    max_steps: int | None = typer.Option(None, "--max-steps", min=1, help="Replay only the first N steps of each."),
    model: str | None = typer.Option(None, "--model", help="Model name (default: the endpoint's first)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the synthetic token ids."),
    out: Path | None = typer.Option(None, "--out", help="Write the steps/programs tables here."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Replay a trace against a live endpoint and print the same summary as `simulate`."""
    import asyncio
    import dataclasses
    import json

    from thunder.metrics import build_tables, format_summary, summarize, write_tables
    from thunder.runtime.replay import ReplayConfig, ReplayError, replay
    from thunder.trace import load_trace

    try:
        selected = list(load_trace(trace).programs)
    except TraceError as exc:
        _fail(str(exc))
        return
    if programs is not None:
        selected = selected[:programs]
    if max_steps is not None:
        selected = [dataclasses.replace(p, steps=p.steps[:max_steps]) for p in selected]
    config = ReplayConfig(endpoint=endpoint.rstrip("/"), parallel=parallel, time_scale=time_scale,
                          token_scale=token_scale, model=model, seed=seed)
    total = sum(len(p.steps) for p in selected)
    try:
        with typer.progressbar(length=total, label="replaying", file=sys.stderr) as bar:
            result = asyncio.run(replay(selected, config, on_step=lambda: bar.update(1)))
    except ReplayError as exc:
        _fail(str(exc))
        return
    tables = build_tables(result.steps, result.programs, [], [])
    summary = summarize(tables, None, result.duration_s, policy="(live)", parallel=parallel, replicas="?",
                        preset=f"live {result.model}", endpoint=endpoint, token_scale=token_scale,
                        time_scale=time_scale, failures=len(result.failures),
                        synthetic_reply_steps=result.synthetic_reply_steps)
    if out is not None:
        write_tables(tables, out, summary)
    if as_json:
        typer.echo(json.dumps(summary, indent=2, default=str))
    else:
        typer.echo(format_summary(summary))
    for failure in result.failures:
        typer.echo(f"failed: {failure}", err=True)
    if result.failures:
        raise typer.Exit(code=1)


@app.command("serve")
def serve_command(
    backends: str = typer.Option(..., "--backends", help="Engine base URLs, comma-separated."),
    backend_kind: str = typer.Option("vllm", "--backend-kind",
                                     help="vllm, or sglang (adapter tested on recorded responses only)."),
    policy: str = typer.Option("thunder", "--policy",
                               help="Scheduling policy: vllm, continuum, thunder, gateway, power-of-two, autellix."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8300, "--port", min=0, max=65535, help="Port to listen on."),
    option: list[str] = typer.Option([], "--option", "-O", help="Policy option NAME=VALUE (repeatable)."),
    max_hold_s: float = typer.Option(300.0, "--max-hold-s", min=0.001,
                                     help="Longest a request is held for the policy before a 503."),
    idle_timeout_s: float = typer.Option(1800.0, "--idle-timeout-s", min=0.001,
                                         help="Reclaim a program with no request for this long."),
    max_body_bytes: int = typer.Option(32 * 1024 * 1024, "--max-body-bytes", min=1,
                                       help="Largest request body accepted (413 beyond)."),
    capacity_tokens: int | None = typer.Option(None, "--capacity-tokens", min=1,
                                               help="KV capacity per backend when /metrics does not say."),
    export: Path | None = typer.Option(None, "--export", help="On shutdown, write steps/programs/decisions "
                                                              "CSV tables into this folder."),
    log_level: str = typer.Option("INFO", "--log-level", help="DEBUG, INFO, WARNING or ERROR."),
    tool_policy: str = typer.Option("on-demand", "--tool-policy",
                                    help="Sandbox policy: keep, on-demand, program-aware."),
    sandbox_root: Path | None = typer.Option(None, "--sandbox-root", help="Directory for sandboxes; turns the "
                                             "sandbox endpoints on (they run clients' shell commands)."),
    disk_capacity_gb: float | None = typer.Option(None, "--disk-capacity-gb", min=0.001,
                                                  help="Disk all sandboxes may reserve together (GB)."),
) -> None:
    """Run the OpenAI-compatible proxy in front of vLLM backends (Ctrl-C stops it)."""
    import asyncio
    import logging

    from thunder.policies.registry import make_policy
    from thunder.runtime.config import ServeConfig
    from thunder.runtime.server import serve_forever

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        chosen = make_policy(policy, **dict(_parse_options(option)))
        config = ServeConfig(backends=tuple(u.strip() for u in backends.split(",") if u.strip()),
                             backend_kind=backend_kind, host=host,
                             port=port, max_hold_s=max_hold_s, idle_timeout_s=idle_timeout_s,
                             max_body_bytes=max_body_bytes, capacity_tokens=capacity_tokens,
                             tool_policy=tool_policy,
                             sandbox_root=str(sandbox_root) if sandbox_root is not None else None,
                             disk_capacity_bytes=(int(disk_capacity_gb * 10**9) if disk_capacity_gb is not None
                                                  else None))
    except (TypeError, ValueError) as exc:
        _fail(str(exc))
        return
    try:
        asyncio.run(serve_forever(config, chosen, export_dir=export))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        _fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")


@app.command("calibrate")
def calibrate_command(
    endpoint: str = typer.Option(..., "--endpoint", help="Base URL of a vLLM server (the engine itself, not a proxy)."),
    output: Path = typer.Option(..., "-o", "--output", help="Profile JSON to write (for simulate --profile)."),
    name: str | None = typer.Option(None, "--name", help="Profile name (default: MODEL-vllm-VERSION)."),
    model: str | None = typer.Option(None, "--model", help="Model name (default: the server's first)."),
    repeats: int = typer.Option(5, "--repeats", min=1, help="Runs of every probe (the fit takes medians)."),
    max_num_batched_tokens: int = typer.Option(
        2048, "--max-num-batched-tokens", min=1,
        help="The server's token budget per step (not visible over HTTP; default: vLLM's on CPU)."),
    max_num_seqs: int = typer.Option(128, "--max-num-seqs", min=1,
                                     help="The server's max running requests (default: vLLM's on CPU)."),
    serving_flags: str | None = typer.Option(None, "--serving-flags", help="How the server was started, "
                                                                         "recorded in the profile."),
    seed: int | None = typer.Option(None, "--seed", help="Seed of the prompt token ids (default: a fresh one, "
                                                          "recorded in the profile)."),
) -> None:
    """Measure a live vLLM server and fit the simulator's step-time model to it."""
    import asyncio
    import json

    from thunder.calibration import Probe, ProbeRun, ServerFacts, default_probes
    from thunder.runtime.calibrate import CalibrateConfig, CalibrationError, measure
    from thunder.sim.calibration import build_profile

    config = CalibrateConfig(endpoint=endpoint.rstrip("/"), model=model, repeats=repeats, seed=seed)

    def probes(facts: ServerFacts) -> tuple[Probe, ...]:
        return default_probes(facts.max_model_len or 4096, facts.capacity_tokens, max_num_batched_tokens)

    def report(run: ProbeRun) -> None:
        typer.echo(f"  {run.probe.name:>22}  median {1e3 * sorted(run.latencies_s)[len(run.latencies_s) // 2]:8.1f} ms",
                   err=True)

    try:
        measured = asyncio.run(measure(config, probes, on_probe=report))
    except CalibrationError as exc:
        _fail(str(exc))
        return
    profile = build_profile(measured, max_num_batched_tokens, max_num_seqs, name=name, serving_flags=serving_flags)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(profile, indent=2) + "\n")
    cal, step = profile["calibration"], profile["step_time"]
    typer.echo(f"vLLM {cal['engine_version']}, {profile['num_blocks']} x {profile['block_size']}-token KV blocks; "
               f"{cal['fit']['rows']} requests in {cal['duration_s']:.0f} s")
    typer.echo(f"  step = {step['overhead_s'] * 1e3:.3f} ms + {step['per_prefill_token_s'] * 1e6:.3f} us/prefill token"
               f" + {step['per_decode_seq_s'] * 1e6:.2f} us/decoding seq + {step['per_context_token_s'] * 1e9:.3f} "
               f"ns/context token + {step['per_prefill_pair_s'] * 1e9:.3f} ns/prefill attention pair; "
               f"request overhead {profile['request_overhead_s'] * 1e3:.1f} ms under load "
               f"({cal['fit']['coefficients']['request_overhead_s'] * 1e3:.1f} ms idle)")
    typer.echo(f"  fit: R^2 {cal['fit']['r2']:.4f}, median |rel error| {cal['fit']['median_abs_rel_error']:.1%}, "
               f"max {cal['fit']['max_abs_rel_error']:.1%}"
               + (f"; left out as outliers: {', '.join(cal['fit']['excluded_probes'])}"
                  if cal["fit"]["excluded_probes"] else ""))
    prefix = cal["prefix_cache"]
    typer.echo(f"  prefix cache: repeat {prefix['repeat_cached_tokens']}/{prefix['prompt_tokens']} cached, extension "
               f"{prefix['extended_cached_tokens']}/{prefix['extended_prompt_tokens']} "
               f"({'as' if prefix['matches_simulator'] else 'NOT as'} the simulator's block rule)")
    if cal["preemptions_while_probing"]:
        typer.echo(f"  warning: {cal['preemptions_while_probing']:.0f} preemptions while probing", err=True)
    if cal["fit"]["r2"] < 0.9:
        typer.echo("  warning: a poor fit, likely load from elsewhere on the machine while probing: "
                   "calibrate again (or with more --repeats)", err=True)
    if cal["cached_probe_tokens"]:
        typer.echo(f"  warning: probes found {cal['cached_probe_tokens']} prompt tokens cached (the fit assumes "
                   "none): calibrate again with another --seed", err=True)
    typer.echo(f"wrote {output}")


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
