"""`thunder trace ...`: validate, synth, stats, convert."""

from __future__ import annotations

from pathlib import Path

import typer

from thunder.cli.app import fail as _fail, trace_app

from thunder.traces import TraceError, TraceReader


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

    from thunder.traces.synth import synthesize
    from thunder.traces import TraceProgram, write_trace

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

    from thunder.traces.stats import render_stats, trace_stats

    try:
        stats = trace_stats(file)
    except TraceError as exc:
        _fail(str(exc))
        return
    typer.echo(json.dumps(stats, indent=2) if as_json else render_stats(stats))


@trace_app.command("convert")
def trace_convert(
    input_path: Path = typer.Argument(..., metavar="INPUT", help="Recorded runs: a file or a folder."),
    source_format: str = typer.Option(..., "--from", help="Source format: mini-swe-agent, openhands, tau-bench, swe-agent-profile."),
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
    from thunder.traces.converters import ConversionError, ConvertOptions, convert, parse_tool_time
    from thunder.traces import write_trace

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
