"""Options shared by all converters, and the synthetic tool-time distributions.

Some sources record no tool timing (tau-bench). Their tool times stay absent
unless the user names a distribution, which is then drawn from a seeded
``random.Random`` in input order, so the same command gives the same trace.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass


class ConversionError(ValueError):
    """The input or the options cannot be converted at all (not one bad run)."""


@dataclass(frozen=True, slots=True)
class ToolTimeSpec:
    """A tool-time distribution in seconds.

    ``const:S`` always S; ``exp:MEAN`` exponential with that mean;
    ``lognormal:MEDIAN,SIGMA`` log-normal with that median and log-space sigma.
    """

    kind: str
    params: tuple[float, ...]

    def draw(self, rng: random.Random) -> float:
        if self.kind == "const":
            return self.params[0]
        if self.kind == "exp":
            return rng.expovariate(1.0 / self.params[0])
        median, sigma = self.params
        return rng.lognormvariate(math.log(median), sigma)

    def describe(self) -> str:
        return f"{self.kind}:{','.join(f'{p:g}' for p in self.params)}"


_ARITY = {"const": 1, "exp": 1, "lognormal": 2}


def parse_tool_time(text: str) -> ToolTimeSpec:
    """Parse ``const:S``, ``exp:MEAN`` or ``lognormal:MEDIAN,SIGMA``; raise ``ConversionError``."""
    kind, _, rest = text.partition(":")
    if kind not in _ARITY:
        raise ConversionError(f"tool time {text!r}: unknown distribution {kind!r} "
                              f"(use const:S, exp:MEAN or lognormal:MEDIAN,SIGMA)")
    try:
        params = tuple(float(p) for p in rest.split(",")) if rest else ()
    except ValueError as exc:
        raise ConversionError(f"tool time {text!r}: parameters must be numbers") from exc
    if len(params) != _ARITY[kind]:
        raise ConversionError(f"tool time {text!r}: {kind} takes {_ARITY[kind]} parameter(s)")
    if not all(math.isfinite(p) for p in params):
        raise ConversionError(f"tool time {text!r}: parameters must be finite")
    if kind == "const" and params[0] < 0:
        raise ConversionError(f"tool time {text!r}: a constant time must be >= 0")
    if kind in ("exp", "lognormal") and params[0] <= 0:
        raise ConversionError(f"tool time {text!r}: the mean or median must be > 0")
    if kind == "lognormal" and params[1] < 0:
        raise ConversionError(f"tool time {text!r}: sigma must be >= 0")
    return ToolTimeSpec(kind, params)


@dataclass(frozen=True, slots=True)
class ConvertOptions:
    """What the user may choose about a conversion.

    ``chars_per_token``: ratio for sources without token counts (None: the
    converter's documented default). ``tool_time``/``seed``: synthetic tool
    times for sources without timing; a converter whose source records tool
    time refuses ``tool_time`` rather than overwrite measurements.
    """

    chars_per_token: float | None = None
    tool_time: ToolTimeSpec | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.chars_per_token is not None and not (math.isfinite(self.chars_per_token)
                                                     and self.chars_per_token > 0):
            raise ConversionError(f"chars per token must be a positive number, got {self.chars_per_token}")


def refuse_tool_time(options: ConvertOptions, format_name: str) -> None:
    """Raise if a synthetic tool time was asked of a source that measured its own."""
    if options.tool_time is not None:
        raise ConversionError(f"--tool-time is for sources without tool timing; "
                              f"{format_name} records tool time, so it is not replaced")
