"""How many leading tokens a group of runs shares (system prompt, tool schemas, template).

A provider's cached-token count on a run's first call can only cover text
that an earlier run also sent, and for a fresh task that is the part every
run shares. So when at least two runs report the same positive value there,
that value is the shared prefix (a lower bound: providers cache whole
blocks, e.g. 64 tokens). Otherwise the known shared text is counted at a
chars-per-token ratio.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Iterable

from thunder.traces.converters.tokens import CharCounter

MIN_AGREEING_RUNS = 2  # one run's cache hit may include its own earlier attempt


@dataclass(frozen=True, slots=True)
class SharedPrefix:
    prefix_id: str
    tokens: int
    method: str  # how ``tokens`` was found, for the trace header


def estimate_shared_prefix(prefix_id: str, text: str, first_cached_tokens: Iterable[int | None],
                           counter: CharCounter) -> SharedPrefix:
    """Shared prefix of one group of runs: the providers' agreed first-call cache hit, else ``text`` counted."""
    values = list(first_cached_tokens)
    cached = Counter(v for v in values if v)
    value, agree = cached.most_common(1)[0] if cached else (0, 0)
    if agree >= MIN_AGREEING_RUNS:
        return SharedPrefix(prefix_id, value, f"provider cached_tokens on the first call, most common value "
                                              f"({agree} of {len(values)} runs)")
    return SharedPrefix(prefix_id, counter.count(text), f"{len(text)} characters of shared prompt text at "
                                                        f"{counter.chars_per_token:.3f} chars/token")
