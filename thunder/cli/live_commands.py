"""`thunder run`, `thunder serve`, `thunder calibrate`: the live world."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from thunder.cli.app import app, fail as _fail, parse_options as _parse_options

from thunder.traces import TraceError


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

    from thunder.results.tables import build_tables, format_summary, summarize, write_tables
    from thunder.runtime.replay import ReplayConfig, ReplayError, replay
    from thunder.traces import load_trace

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
    max_programs: int = typer.Option(10_000, "--max-programs", min=0,
                                     help="Programs tracked at once; one more gets 429 + Retry-After (0: no limit)."),
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
                             max_programs=max_programs or None,
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
    endpoints: list[str] = typer.Option(
        ..., "--endpoint", help="Base URL of a vLLM server (the engine itself, not a proxy). Repeat it for the "
                                "identical engines of one cluster: they are measured together, as they run."),
    output: Path = typer.Option(..., "-o", "--output", help="Profile JSON to write (for simulate --profile)."),
    name: str | None = typer.Option(None, "--name", help="Profile name (default: MODEL-vllm-VERSION)."),
    model: str | None = typer.Option(None, "--model", help="Model name (default: the server's first)."),
    repeats: int = typer.Option(5, "--repeats", min=1, help="Runs of every probe (the fit takes medians)."),
    max_num_batched_tokens: int = typer.Option(
        2048, "--max-num-batched-tokens", min=1,
        help="The server's token budget per step (not visible over HTTP; default: vLLM's on CPU)."),
    max_num_seqs: int = typer.Option(128, "--max-num-seqs", min=1,
                                     help="The server's max running requests (default: vLLM's on CPU)."),
    admission: str = typer.Option(
        "full-prompt", "--admission",
        help="How the server admits a waiting request: full-prompt (its whole prompt must fit the free KV "
             "blocks: vLLM's scheduler_reserve_full_isl, the default in 0.32) or first-chunk (earlier vLLM)."),
    serving_flags: str | None = typer.Option(None, "--serving-flags", help="How the server was started, "
                                                                         "recorded in the profile."),
    seed: int | None = typer.Option(None, "--seed", help="Seed of the prompt token ids (default: a fresh one, "
                                                          "recorded in the profile)."),
) -> None:
    """Measure a live vLLM server (or a cluster's identical servers at once) and fit the simulator's
    step-time model to it."""
    import asyncio
    import json

    from thunder.core.probes import Probe, ProbeRun, ServerFacts, default_probes
    from thunder.runtime.engines.measure import CalibrateConfig, CalibrationError, measure_together
    from thunder.sim.fit_profile import build_profile

    if admission not in ("full-prompt", "first-chunk"):
        _fail(f"--admission: expected full-prompt or first-chunk, got {admission!r}")
    configs = [CalibrateConfig(endpoint=url.rstrip("/"), model=model, repeats=repeats,
                               seed=None if seed is None else seed + index) for index, url in enumerate(endpoints)]

    def probes(facts: ServerFacts) -> tuple[Probe, ...]:
        return default_probes(facts.max_model_len or 4096, facts.capacity_tokens, max_num_batched_tokens)

    def report(run: ProbeRun) -> None:
        typer.echo(f"  {run.probe.name:>22}  median {1e3 * sorted(run.latencies_s)[len(run.latencies_s) // 2]:8.1f} ms",
                   err=True)

    try:
        measured = asyncio.run(measure_together(configs, probes, on_probe=report))
    except CalibrationError as exc:
        _fail(str(exc))
        return
    profile = build_profile(measured, max_num_batched_tokens, max_num_seqs, name=name, serving_flags=serving_flags,
                            admit_full_prompt=admission == "full-prompt", engines=len(configs))
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(profile, indent=2) + "\n")
    cal, step = profile["calibration"], profile["step_time"]
    typer.echo(f"vLLM {cal['engine_version']}, {profile['num_blocks']} x {profile['block_size']}-token KV blocks; "
               f"{len(cal['latencies_s'])} probe runs in {cal['duration_s']:.0f} s, fitted to {cal['fit_target']}")
    typer.echo(f"  step = {step['overhead_s'] * 1e3:.3f} ms + {step['per_prefill_token_s'] * 1e6:.3f} us/prefill token"
               f" + {step['per_decode_seq_s'] * 1e6:.2f} us/decoding seq + {step['per_context_token_s'] * 1e9:.3f} "
               f"ns/context token + {step['per_prefill_pair_s'] * 1e9:.3f} ns/prefill attention pair"
               f" + {step.get('per_admitting_step_s', 0.0) * 1e3:.2f} ms if the step admits a request; "
               f"front end {profile['frontend_s'] * 1e3:.1f} ms per request")
    check = cal["frontend_check"]
    if check is not None:
        typer.echo(f"  front-end check: {cal['load_probe']['clients']} clients under load spend "
                   f"{check['measured_s'] * 1e3:.1f} ms outside the engine; its queue predicts "
                   f"{check['predicted_s'] * 1e3:.1f} ms")
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
