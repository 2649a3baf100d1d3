"""Parse a Prometheus text scrape (a backend's ``/metrics``).

The proxy's own page is written by ``prometheus_client`` (``telemetry.py``);
this side stays hand-written because it must be lenient, which that
library's parser is not.

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
