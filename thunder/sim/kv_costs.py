"""Charging a replica's KV cache to the cost ledger's five terms, interval by interval.

Every token slot of the cache is in exactly one term at every instant, so the terms
of a run sum to capacity x time (``thunder.core.cost``). The engine calls one of these per
idle gap, per single step and per decode jump; they read the cache and the requests
and change nothing but the ledger and the requests' prefill/recompute counters.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from thunder.core.cost import CostLedger
from thunder.sim.kv import PrefixCache
from thunder.sim.request import Request


def charge_idle(ledger: CostLedger, cache: PrefixCache, duration_s: float) -> None:
    """No step running: what is cached is caching, the rest unused."""
    if duration_s > 0:
        bs = cache.block_size
        ledger.add_interval(duration_s, caching=(cache.free_cached_blocks + cache.pinned_blocks) * bs,
                            unused=(cache.empty_blocks + cache.used_blocks) * bs)


def charge_step(ledger: CostLedger, cache: PrefixCache, entries: list[tuple[Request, int]],
                prefilling: Iterable[Request], decode_seqs: int, duration_s: float) -> None:
    """One step. Blocks of prefilling requests go to prefill/recompute (by the share of
    the chunk recomputed), running requests left out of the step to caching, the rest
    of what running requests hold (decoders, shared prefixes) to decode."""
    bs = cache.block_size
    prefill = recompute = 0.0
    in_step = set()
    for request, tokens in entries:
        in_step.add(request)
        if request.computed >= request.target:
            continue
        held = request.program_blocks_held * bs
        start = request.computed
        redo = max(0, min(start + tokens, request.recompute_frontier) - start)
        recompute += held * redo / tokens
        prefill += held * (tokens - redo) / tokens
        request.recompute_tokens += redo
        request.prefilled_tokens += tokens - redo
    idle = sum(r.program_blocks_held for r in prefilling if r not in in_step) * bs
    rest = max(0.0, cache.used_blocks * bs - prefill - recompute - idle)
    ledger.add_interval(duration_s, decode=rest if decode_seqs else 0.0,
                        prefill=prefill + (0.0 if decode_seqs else rest), recompute=recompute,
                        caching=(cache.free_cached_blocks + cache.pinned_blocks) * bs + idle,
                        unused=cache.empty_blocks * bs)


def charge_jump(ledger: CostLedger, cache: PrefixCache, durations_s: np.ndarray, extra_blocks: np.ndarray) -> None:
    """A run of decode-only steps, before the cache is updated: step i holds
    ``extra_blocks[i]`` more blocks, taken from empty blocks first, then from the
    cached-free ones (eviction)."""
    bs = cache.block_size
    empty0 = cache.empty_blocks
    from_empty = np.minimum(extra_blocks, empty0)
    from_cache = np.maximum(extra_blocks - empty0, 0)
    ledger.add("decode", float(np.dot((cache.used_blocks + extra_blocks) * bs, durations_s)))
    ledger.add("caching", float(np.dot((cache.free_cached_blocks + cache.pinned_blocks - from_cache) * bs,
                                       durations_s)))
    ledger.add("unused", float(np.dot((empty0 - from_empty) * bs, durations_s)))
