"""Small helpers for the policies' frozen config dataclasses.

Every config field carries its help text in ``metadata["help"]`` so the CLI
and the registry can describe options without a second source of truth.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any, Iterable


def option(default: Any, help: str) -> Any:
    """A dataclass field with a default and a help string."""
    return field(default=default, metadata={"help": help})


def require_choice(name: str, value: str, choices: Iterable[str]) -> None:
    allowed = tuple(choices)
    if value not in allowed:
        raise ValueError(f"{name}={value!r}: expected one of {', '.join(map(repr, allowed))}")


def require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)
