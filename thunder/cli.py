"""The ``thunder`` command line: the one place where the worlds are wired together."""

from __future__ import annotations

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


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
