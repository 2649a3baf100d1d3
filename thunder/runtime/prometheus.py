"""The Prometheus text exposition format, both ways: parse a scrape, render ours.

Parsing covers what vLLM's ``/metrics`` emits: ``name{label="v",...} value``
lines, ``#`` comments, and optional trailing timestamps. Label values may
hold escaped quotes, backslashes and newlines. Lines that do not parse are
skipped, not fatal: a backend that adds an odd metric must not make the
proxy think it is down.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping

_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?\s*$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


@dataclass(frozen=True, slots=True)
class Sample:
    """One exposition line: metric name, labels, value."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    value: float = 0.0


def _unescape(text: str) -> str:
    return re.sub(r"\\[\\\"n]", lambda m: _UNESCAPE[m.group(0)], text)


def _labels(text: str | None) -> dict[str, str]:
    if not text:
        return {}
    return {m.group(1): _unescape(m.group(2)) for m in _LABEL.finditer(text)}


def _value(text: str) -> float | None:
    try:
        return float(text)  # float() already accepts NaN, +Inf, -Inf
    except ValueError:
        return None


def parse_text(text: str) -> list[Sample]:
    """All samples in a scrape, in order; malformed lines are skipped."""
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None:
            continue
        value = _value(match.group(3))
        if value is not None:
            samples.append(Sample(match.group(1), _labels(match.group(2)), value))
    return samples


def total(samples: Iterable[Sample], name: str) -> float | None:
    """Sum of every sample called ``name`` (vLLM labels one per engine); None if absent."""
    values = [s.value for s in samples if s.name == name and not math.isnan(s.value)]
    return sum(values) if values else None


def first(samples: Iterable[Sample], name: str) -> Sample | None:
    return next((s for s in samples if s.name == name), None)


# -- rendering ----------------------------------------------------------------------


def _escape(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


class Exposition:
    """Builds one text scrape; each metric family gets its HELP and TYPE once."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self._lines.append(f"# HELP {name} {help_text}")
        self._lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, value: float, **labels: object) -> None:
        if labels:
            body = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
            self._lines.append(f"{name}{{{body}}} {_number(value)}")
        else:
            self._lines.append(f"{name} {_number(value)}")

    def metric(self, name: str, kind: str, help_text: str, value: float) -> None:
        self.family(name, kind, help_text)
        self.sample(name, value)

    def histogram(self, name: str, help_text: str, bounds: Iterable[float], counts: Iterable[int],
                  sum_value: float) -> None:
        """``counts`` per bucket (not cumulative), one more than ``bounds`` (the +Inf bucket)."""
        self.family(name, "histogram", help_text)
        running = 0
        for bound, count in zip([*bounds, math.inf], counts):
            running += count
            self.sample(f"{name}_bucket", running, le=_number(bound))
        self.sample(f"{name}_sum", sum_value)
        self.sample(f"{name}_count", running)

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"
