"""The typer application objects and the helpers every command group shares."""

from __future__ import annotations

import typer

app = typer.Typer(help="thunder: program-aware agentic LLM inference (simulator and live runtime).",
                  no_args_is_help=True, add_completion=False)
trace_app = typer.Typer(help="Agent traces: validate, convert, synthesize, summarize.", no_args_is_help=True)
app.add_typer(trace_app, name="trace")


def fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)


def parse_options(options: list[str]) -> tuple[tuple[str, object], ...]:
    """``--option name=value`` pairs; values parsed as JSON where they parse (numbers, bools)."""
    import json
    parsed = []
    for item in options:
        if "=" not in item:
            fail(f"--option {item!r}: expected NAME=VALUE")
        name, raw = item.split("=", 1)
        try:
            value: object = json.loads(raw)
        except ValueError:
            value = raw
        parsed.append((name.strip().replace("-", "_"), value))
    return tuple(parsed)


def int_list(text: str, flag: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        fail(f"{flag}: expected comma-separated integers, got {text!r}")
    if not values or min(values) < 1:
        fail(f"{flag}: values must be >= 1, got {text!r}")
    return values
