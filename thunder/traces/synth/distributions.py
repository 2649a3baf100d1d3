"""Seeded, vectorised samplers the workload models are built from.

Every sampler is a frozen value with ``sample(rng, n) -> np.ndarray``; all
randomness comes from the ``numpy.random.Generator`` passed in, so a workload
drawn with the same seed and the same call order is bit-for-bit the same.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class LogNormal:
    """Lognormal given by its median and the standard deviation of its logs.

    Values are clipped to ``[low, high]``: real agents have step limits and
    tool timeouts, so the unbounded tail of the model must stop somewhere.
    """

    median: float
    sigma: float
    low: float = 0.0
    high: float = float("inf")

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        values = self.median * np.exp(self.sigma * rng.standard_normal(n))
        return np.clip(values, self.low, self.high)


@dataclass(frozen=True, slots=True)
class Quantiles:
    """Empirical distribution given by a quantile table (inverse CDF).

    ``probs`` rise from 0 to 1 and ``values[i]`` is the ``probs[i]`` quantile
    of the measured sample. Sampling draws u ~ U(0, 1) and interpolates
    linearly between table points, so every drawn value lies within the
    measured range and the table's quantiles are reproduced exactly.
    """

    probs: tuple[float, ...]
    values: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.probs) != len(self.values) or len(self.probs) < 2:
            raise ValueError("probs and values must have the same length (>= 2)")
        if self.probs[0] != 0.0 or self.probs[-1] != 1.0:
            raise ValueError("probs must run from 0 to 1")
        if any(b < a for a, b in zip(self.probs, self.probs[1:])):
            raise ValueError("probs must not decrease")
        if any(b < a for a, b in zip(self.values, self.values[1:])):
            raise ValueError("values must not decrease")

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.interp(rng.random(n), self.probs, self.values)

    def quantile(self, p: float) -> float:
        return float(np.interp(p, self.probs, self.values))


@dataclass(frozen=True, slots=True)
class Choice:
    """A categorical draw: ``names[i]`` with probability ``weights[i]`` (normalised)."""

    names: tuple[str, ...]
    weights: tuple[float, ...]

    def sample_index(self, rng: np.random.Generator, n: int) -> np.ndarray:
        p = np.asarray(self.weights, dtype=float)
        return rng.choice(len(self.names), size=n, p=p / p.sum())


Sampler = LogNormal | Quantiles


def whole(values: np.ndarray, low: int = 0) -> np.ndarray:
    """Round to integers no smaller than ``low`` (token counts, step counts)."""
    return np.maximum(np.rint(values), low).astype(np.int64)
