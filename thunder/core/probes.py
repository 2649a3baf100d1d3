"""Calibration data and the least-squares fit of the linear step-time model.

What lives here: the probes a live engine is measured with (batches of
requests with fresh prompts and forced output lengths), what was measured
(per-request latencies), and the fit of the simulator's linear step time

    step_s = overhead_s + per_prefill_token_s * prefill_tokens
             + per_decode_seq_s * decode_seqs + per_context_token_s * context_tokens
             + per_prefill_pair_s * prefill_attention_pairs

plus a fixed ``request_overhead_s`` per request (HTTP, API server, engine
wake-up: time a request spends outside the engine's steps).

How: a request's latency is the sum of the steps it waited through, so it is
linear in the coefficients once we know, per request, the *sums* of the
features over those steps. ``thunder.sim.fit_profile`` gets those sums by
running each probe through the simulated engine itself, so the fitted model is
the one the simulator will charge. Here we only solve the non-negative least
squares and report fit quality. The rule that keeps it clean: pure data and
numpy; no clock, no network, no simulator (the measuring is in
``thunder.runtime.engines.measure``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

# Per-request feature sums, in this column order, then the per-request intercept.
STEP_FEATURES = ("overhead_s", "per_prefill_token_s", "per_decode_seq_s", "per_context_token_s",
                 "per_prefill_pair_s", "per_admitting_step_s")
COEFFICIENTS = STEP_FEATURES + ("request_overhead_s",)


@dataclass(frozen=True, slots=True)
class Probe:
    """``count`` requests sent at once, each a fresh prompt (no cache hit) of
    ``prompt_tokens`` token ids that generates exactly ``output_tokens``."""

    name: str
    count: int
    prompt_tokens: int
    output_tokens: int


@dataclass(frozen=True, slots=True)
class ProbeRun:
    """One run of a probe: per request (in send order), seconds from send to last byte."""

    probe: Probe
    latencies_s: tuple[float, ...]
    # The engine's own account of the same requests, mean per request: vLLM's queue +
    # inference time histograms (arrival at the engine core to the last token). None
    # where the server exports no such histograms.
    engine_s: float | None = None


@dataclass(frozen=True, slots=True)
class ServerFacts:
    """What the engine says about itself: version, model, KV geometry."""

    version: str
    model: str
    max_model_len: int
    block_size: int
    num_blocks: int
    cache_config: dict[str, str]  # labels of vllm:cache_config_info: the cache's serving flags

    @property
    def capacity_tokens(self) -> int:
        return self.num_blocks * self.block_size


@dataclass(frozen=True, slots=True)
class PrefixCacheCheck:
    """A prompt sent twice, then extended: what the engine reported as cached, and how
    long each took (one output token, so the latency is mostly prefill)."""

    prompt_tokens: int
    first_cached_tokens: int
    repeat_cached_tokens: int
    extended_prompt_tokens: int
    extended_cached_tokens: int
    first_latency_s: float
    repeat_latency_s: float
    extended_latency_s: float

    def expected(self, block_size: int) -> dict[str, int]:
        """What a block-granular prefix cache gives (the simulator's rule): whole
        blocks only, and never the last prompt token (it is always computed)."""
        return {"first_cached_tokens": 0,
                "repeat_cached_tokens": (self.prompt_tokens - 1) // block_size * block_size,
                "extended_cached_tokens": self.prompt_tokens // block_size * block_size}


@dataclass(frozen=True, slots=True)
class LoadProbe:
    """``clients`` closed-loop clients, each sending ``requests_each`` requests one after
    another: the client's latency against the engine's own account of the same
    requests (vLLM's queue + inference time histograms). The difference is the time a
    request spends outside the engine under load (HTTP, API server, waiting for the
    step in flight): on a small shared CPU it grows with concurrency."""

    clients: int
    requests_each: int
    prompt_tokens: int
    output_tokens: int
    mean_client_latency_s: float
    mean_engine_s: float | None  # None: the server exports no request-time histograms

    @property
    def overhead_s(self) -> float | None:
        if self.mean_engine_s is None:
            return None
        return max(0.0, self.mean_client_latency_s - self.mean_engine_s)


@dataclass(frozen=True, slots=True)
class Measurements:
    """Everything ``thunder calibrate`` measured on one live engine."""

    facts: ServerFacts
    runs: tuple[ProbeRun, ...]
    prefix: PrefixCacheCheck
    preemptions: float  # engine preemptions while probing (should be 0)
    duration_s: float
    load: LoadProbe | None = None
    seed: int = 0  # of the probes' prompt token ids
    cached_probe_tokens: int = 0  # prompt tokens the probes found cached: 0, or the features are off


@dataclass(frozen=True, slots=True)
class LinearFit:
    """Fitted coefficients (``COEFFICIENTS``) and how well they explain the data."""

    coefficients: dict[str, float]
    r2: float  # on the latencies fitted (excluded probes left out), unweighted
    median_abs_rel_error: float
    max_abs_rel_error: float
    rows: int
    excluded: tuple[str, ...] = ()  # outlying probes left out of the fit (see fit_linear)

    def to_dict(self) -> dict[str, Any]:
        return {"coefficients": self.coefficients, "r2": self.r2,
                "median_abs_rel_error": self.median_abs_rel_error,
                "max_abs_rel_error": self.max_abs_rel_error, "rows": self.rows,
                "excluded_probes": list(self.excluded)}


def default_probes(max_model_len: int, capacity_tokens: int, max_num_batched_tokens: int) -> tuple[Probe, ...]:
    """A small design that separates the four step terms and the request intercept.

    * single prompts of growing length, one output token: prefill per token, and
      chunking when a prompt exceeds the token budget;
    * batches of prompts at once: prefill spread over several steps;
    * batches decoding 64 tokens from short prompts (per-sequence cost) and from
      long ones of two lengths (per-context-token cost: two probes, so that one slowed
      by load cannot leave the term to a single measurement).
    Every probe fits the KV cache with room to spare: a preemption would make the
    engine's schedule differ from the one the features assume.
    """
    longest = min(max_model_len - 2, 2 * max_num_batched_tokens - 64)
    lengths = sorted({32, 256, 512, 1024, 1536, max_num_batched_tokens, 3072, longest})
    probes = [Probe(f"prefill-{n}", 1, n, 1) for n in lengths if 0 < n <= longest]
    probes += [Probe(f"prefill-batch-{c}x512", c, 512, 1) for c in (4, 8)]
    room = int(capacity_tokens * 0.8)  # headroom: decode adds blocks as it goes
    for count, prompt in ((1, 32), (4, 32), (16, 32), (32, 32), (4, 1000), (12, 1000), (4, 2000)):
        if count * (prompt + 64) <= room and prompt + 64 <= max_model_len:
            probes.append(Probe(f"decode-{count}x{prompt}", count, prompt, 64))
    return tuple(probes)


def nnls(a: np.ndarray, b: np.ndarray, max_iter: int = 100) -> np.ndarray:
    """Non-negative least squares, min ||a x - b|| with x >= 0 (Lawson-Hanson active set).

    A step-time coefficient below zero has no physical meaning (a step cannot get
    faster with more work); plain least squares gives one when a term is small
    against the noise."""
    n = a.shape[1]
    x = np.zeros(n)
    passive = np.zeros(n, dtype=bool)
    for _ in range(max_iter):
        gradient = a.T @ (b - a @ x)
        candidates = ~passive & (gradient > 1e-12 * max(1.0, float(np.abs(gradient).max())))
        if not candidates.any():
            break
        passive[int(np.argmax(np.where(candidates, gradient, -np.inf)))] = True
        while True:
            z = np.zeros(n)
            z[passive] = np.linalg.lstsq(a[:, passive], b, rcond=None)[0]
            if (z[passive] > 0).all():
                x = z
                break
            # Step back to the boundary and drop the variables that hit zero.
            shrinking = passive & (z <= 0)
            alpha = float(np.min(x[shrinking] / (x[shrinking] - z[shrinking])))
            x = x + alpha * (z - x)
            passive &= x > 1e-15
            x[~passive] = 0.0
    return x


def _solve(design: np.ndarray, latencies_s: np.ndarray, weight: np.ndarray) -> np.ndarray:
    weighted = design * weight[:, None]
    scale = np.linalg.norm(weighted, axis=0)
    scale[scale == 0] = 1.0  # unit-norm columns: the solver sees comparable numbers
    return nnls(weighted / scale, latencies_s * weight) / scale


def _probe_errors(design: np.ndarray, latencies_s: np.ndarray, solution: np.ndarray,
                  names: list[str]) -> dict[str, float]:
    """Per group: relative error of the model at the group's median latency (negative:
    the probe ran slower than the model says)."""
    rel = (design @ solution - latencies_s) / latencies_s
    return {g: float(np.median(rel[[n == g for n in names]])) for g in dict.fromkeys(names)}


def fit_linear(features: np.ndarray, latencies_s: np.ndarray, groups: Sequence[str] | None = None,
               max_excluded: int = 2, fixed_zero: Sequence[str] = ()) -> LinearFit:
    """Fit ``latency = features @ step coefficients + request_overhead_s``, non-negative.

    ``features``: one row per request, columns ``STEP_FEATURES`` (summed over the
    steps the request waited through); ``groups``: the probe of each row. Weights:
    1/latency (a 20 ms request counts as much as a 1 s one: relative error is what
    matters for a simulator's throughput) and 1/sqrt(rows of its probe) (every
    probe weighs the same, however many requests it sent).

    Outlying probes: on a shared machine a burst of load from elsewhere can slow
    every repeat of one probe several-fold, and a least-squares fit bends every
    coefficient towards it. Up to ``max_excluded`` probes are left out when,
    fitted without them, the rest agree clearly better (median probe error down
    by a fifth) and each left-out probe ran slower than they predict by more than
    25% and by four times that median: a high-breakdown check, not a trim of the
    worst rows, and one-sided, since load from elsewhere only ever slows a probe. R^2 is over
    the rows fitted; the relative errors over all rows, left-out ones included.

    ``fixed_zero`` names coefficients held at 0: terms the data cannot tell apart from
    another (``thunder.sim.fit_profile`` says which, by what it fits)."""
    if features.ndim != 2 or features.shape[1] != len(STEP_FEATURES):
        raise ValueError(f"features must have {len(STEP_FEATURES)} columns, got shape {features.shape}")
    if len(features) != len(latencies_s) or len(features) < len(COEFFICIENTS):
        raise ValueError(f"need at least {len(COEFFICIENTS)} rows and one latency per row")
    if (latencies_s <= 0).any():
        raise ValueError("latencies must be positive")
    unknown = set(fixed_zero) - set(COEFFICIENTS)
    if unknown:
        raise ValueError(f"fixed_zero names unknown coefficients: {sorted(unknown)}")
    design = np.column_stack([features, np.ones(len(features))]).astype(np.float64)
    design[:, [COEFFICIENTS.index(name) for name in fixed_zero]] = 0.0  # a zero column stays at 0
    names = list(groups) if groups is not None else [str(i) for i in range(len(latencies_s))]
    sizes = {name: names.count(name) for name in set(names)}
    weight = 1.0 / latencies_s / np.sqrt([sizes[name] for name in names])
    probes = list(dict.fromkeys(names))

    def attempt(drop: tuple[str, ...]) -> tuple[float, np.ndarray]:
        keep = np.array([n not in drop for n in names])
        solution = _solve(design, latencies_s, np.where(keep, weight, 0.0))
        errors = _probe_errors(design, latencies_s, solution, names)
        score = float(np.median([abs(e) for g, e in errors.items() if g not in drop]))
        # Only a probe that ran slower than the others predict can have been hit by load
        # from elsewhere; one that ran faster is evidence against the model, and leaving
        # it out would bend the coefficient it pins down (the long-context decode probe
        # is the one that fixes per_context_token_s).
        if any(-errors[g] <= max(0.25, 4 * score) for g in drop):
            return np.inf, solution  # a left-out probe the others explain: not an outlier
        return score, solution

    best_drop: tuple[str, ...] = ()
    best_score, solution = attempt(())
    if groups is not None and len(probes) - max_excluded > len(COEFFICIENTS):
        for k in range(1, max_excluded + 1):
            for drop in itertools.combinations(probes, k):
                score, candidate = attempt(drop)
                if score < 0.8 * best_score:
                    best_drop, best_score, solution = drop, score, candidate
    kept = np.array([n not in best_drop for n in names])
    residual = (latencies_s - design @ solution)[kept]
    y = latencies_s[kept]
    total = float(((y - y.mean()) ** 2).sum())
    rel_abs = np.abs(latencies_s - design @ solution) / latencies_s
    return LinearFit(coefficients=dict(zip(COEFFICIENTS, (float(v) for v in solution))),
                     r2=1.0 - float((residual ** 2).sum()) / total if total > 0 else 1.0,
                     median_abs_rel_error=float(np.median(rel_abs)), max_abs_rel_error=float(rel_abs.max()),
                     rows=len(latencies_s), excluded=best_drop)


def predict(fit_coefficients: dict[str, float], features: np.ndarray) -> np.ndarray:
    """Latencies the fitted model gives for rows of ``STEP_FEATURES`` sums."""
    step = np.array([fit_coefficients[name] for name in STEP_FEATURES])
    return features @ step + fit_coefficients["request_overhead_s"]


def _median_engine_s(runs: Sequence[ProbeRun]) -> float | None:
    values = [r.engine_s for r in runs if r.engine_s is not None]
    return float(np.median(values)) if values else None


def run_summary(runs: Sequence[ProbeRun]) -> list[dict[str, Any]]:
    """Per probe: the median over repeats of the batch's median and last latency."""
    by_name: dict[str, list[ProbeRun]] = {}
    for run in runs:
        by_name.setdefault(run.probe.name, []).append(run)
    rows = []
    for name, group in by_name.items():
        probe = group[0].probe
        rows.append({"probe": name, "count": probe.count, "prompt_tokens": probe.prompt_tokens,
                     "output_tokens": probe.output_tokens, "repeats": len(group),
                     "median_latency_s": float(np.median([np.median(r.latencies_s) for r in group])),
                     "last_latency_s": float(np.median([max(r.latencies_s) for r in group])),
                     "median_engine_s": _median_engine_s(group)})
    return rows
