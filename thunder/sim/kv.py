"""Paged KV cache with automatic prefix caching, kept in compressed form.

What is modelled (vLLM v1's KV manager): ``num_blocks`` blocks of
``block_size`` tokens; only full blocks are cached; a freed request's blocks
stay cached and join the back of a free queue, tail block first, so eviction
(front of the queue first) removes least recently used sequences, tail before
head; a cache lookup walks a sequence from its head and stops at the first
missing block.

Why compressed: because one sequence's blocks are freed together and evicted
tail first, the cached part of a sequence is always a prefix of it. So a
sequence needs one number (cached blocks), not one object per block, and the
free queue holds one entry per sequence. That keeps a 60k-token context at
O(1) instead of thousands of block objects.

Sequences: each program's own tokens (key ``("p", program_id, epoch)``; the
epoch changes on a context reset) and each shared system prompt (key
``("s", shared_prefix_id)``), whose full blocks are held once however many
running requests use them.

Simplifications (stated): a shared prefix counts as computed once allocated
(two requests that start it at the same moment share its blocks); pinned
sequences that expire rejoin the *front* of the free queue (they have been
idle longest).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

SeqKey = tuple


@dataclass(slots=True)
class CacheLookup:
    """What a request would hit, without touching anything."""

    shared_hit_blocks: int
    program_hit_blocks: int
    free_blocks_reused: int  # hit blocks now in the free queue (they stop being evictable)
    program_cached_blocks: int  # all cached blocks of the program's sequence
    shared_missing_blocks: int  # shared-prefix blocks the request must allocate afresh


class PrefixCache:
    """Block accounting for one replica. Counts are blocks unless named ``_tokens``."""

    def __init__(self, num_blocks: int, block_size: int) -> None:
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.used_blocks = 0  # held by running requests
        self.free_queue: OrderedDict[SeqKey, int] = OrderedDict()  # evictable, oldest first
        self.free_cached_blocks = 0
        self.pinned: dict[SeqKey, tuple[int, float]] = {}  # key -> (blocks, until_s)
        self.pinned_blocks = 0
        self.shared_refs: dict[SeqKey, int] = {}  # running requests holding a shared prefix
        self.evicted_blocks = 0

    @property
    def empty_blocks(self) -> int:
        return self.num_blocks - self.used_blocks - self.free_cached_blocks - self.pinned_blocks

    def cached_blocks(self, key: SeqKey) -> int:
        if key in self.free_queue:
            return self.free_queue[key]
        if key in self.pinned:
            return self.pinned[key][0]
        return 0

    # -- lookups -------------------------------------------------------------

    def lookup(self, program_key: SeqKey, shared_key: SeqKey | None, shared_blocks: int,
               prompt_tokens: int) -> CacheLookup:
        """Blocks a new request would hit; at most ``prompt_tokens - 1`` tokens, as vLLM
        always computes the last prompt token."""
        cap = (prompt_tokens - 1) // self.block_size
        shared_hit = reused = missing = 0
        if shared_key is not None and shared_blocks:
            if self.shared_refs.get(shared_key, 0) > 0:
                resident = shared_blocks  # resident and in use by another request
            else:
                resident = self.free_queue.get(shared_key, 0)
                reused += resident
            missing = shared_blocks - resident
            shared_hit = min(resident, cap)
        program_cached = self.cached_blocks(program_key)
        program_hit = 0
        if shared_hit >= shared_blocks:
            program_hit = max(0, min(program_cached, cap - shared_hit))
        if program_key in self.free_queue:
            reused += program_hit
        return CacheLookup(shared_hit, program_hit, reused, program_cached, missing)

    def can_allocate(self, blocks: int, now_s: float, reserved: int = 0,
                     own_key: SeqKey | None = None) -> bool:
        """Could ``blocks`` new blocks be found, ``reserved`` free-queue blocks being taken?
        ``own_key``'s expired pin does not count: the request itself takes those blocks."""
        available = self.empty_blocks + self.free_cached_blocks - reserved
        if blocks <= available:
            return True
        return blocks <= available + self._expired_pin_blocks(now_s, exclude=own_key)

    # -- state changes ------------------------------------------------------

    def acquire(self, program_key: SeqKey, shared_key: SeqKey | None, shared_blocks: int,
                hit: CacheLookup) -> None:
        """Move a request's cached blocks into use (they stop being evictable).

        Cached program blocks beyond the hit are dropped: the request recomputes
        those tokens into fresh blocks, so the stale copies would never be hit.
        """
        if shared_key is not None and shared_blocks:
            if self.shared_refs.get(shared_key, 0) == 0:
                resident = self.free_queue.pop(shared_key, 0)
                self.free_cached_blocks -= resident
                self.used_blocks += resident
            self.shared_refs[shared_key] = self.shared_refs.get(shared_key, 0) + 1
        # The whole cached copy leaves the free queue; blocks past the hit return to empty.
        if program_key in self.free_queue:
            self.free_cached_blocks -= self.free_queue.pop(program_key)
        elif program_key in self.pinned:
            self.pinned_blocks -= self.pinned.pop(program_key)[0]
        self.used_blocks += hit.program_hit_blocks

    def allocate(self, blocks: int, now_s: float) -> bool:
        """Take ``blocks`` empty blocks, evicting LRU cached blocks if needed."""
        if blocks <= 0:
            return True
        if blocks > self.empty_blocks + self.free_cached_blocks:
            self._release_expired_pins(now_s)
            if blocks > self.empty_blocks + self.free_cached_blocks:
                return False
        shortfall = blocks - self.empty_blocks
        if shortfall > 0:
            self._evict(shortfall)
        self.used_blocks += blocks
        return True

    def release(self, program_key: SeqKey, program_blocks_held: int, computed_tokens: int,
                shared_key: SeqKey | None, shared_blocks: int) -> None:
        """A request finished or was preempted: its full blocks become cached, tail first."""
        full_program = max(0, computed_tokens // self.block_size - shared_blocks)
        full_program = min(full_program, program_blocks_held)
        self.used_blocks -= program_blocks_held
        if full_program:
            self.free_queue[program_key] = full_program
            self.free_cached_blocks += full_program
        if shared_key is not None and shared_blocks:
            refs = self.shared_refs[shared_key] - 1
            if refs == 0:
                del self.shared_refs[shared_key]
                self.used_blocks -= shared_blocks
                # Queued after the program's blocks: a shared head outlives its tails.
                self.free_queue[shared_key] = shared_blocks
                self.free_cached_blocks += shared_blocks
            else:
                self.shared_refs[shared_key] = refs

    def pin(self, program_key: SeqKey, until_s: float) -> bool:
        """Make a cached sequence unevictable until ``until_s`` (Continuum's TTL)."""
        blocks = self.free_queue.pop(program_key, None)
        if blocks is None:
            if program_key in self.pinned:
                self.pinned[program_key] = (self.pinned[program_key][0], until_s)
                return True
            return False
        self.free_cached_blocks -= blocks
        self.pinned[program_key] = (blocks, until_s)
        self.pinned_blocks += blocks
        return True

    def unpin(self, program_key: SeqKey) -> None:
        entry = self.pinned.pop(program_key, None)
        if entry is None:
            return
        self.pinned_blocks -= entry[0]
        self.free_queue[program_key] = entry[0]
        self.free_queue.move_to_end(program_key, last=False)
        self.free_cached_blocks += entry[0]

    def drop(self, program_key: SeqKey) -> None:
        """Forget a finished program's blocks (they are never hit again)."""
        self.unpin(program_key)
        blocks = self.free_queue.pop(program_key, 0)
        self.free_cached_blocks -= blocks

    # -- internals ----------------------------------------------------------

    def _evict(self, blocks: int) -> None:
        queue = self.free_queue
        while blocks > 0:
            key = next(iter(queue))
            cached = queue[key]
            take = min(cached, blocks)
            if take == cached:
                del queue[key]
            else:
                queue[key] = cached - take  # the tail goes first; the head stays cached
            blocks -= take
            self.free_cached_blocks -= take
            self.evicted_blocks += take

    def _expired_pin_blocks(self, now_s: float, exclude: SeqKey | None = None) -> int:
        return sum(b for key, (b, until) in self.pinned.items() if until <= now_s and key != exclude)

    def _release_expired_pins(self, now_s: float) -> None:
        for key in [k for k, (_, until) in self.pinned.items() if until <= now_s]:
            self.unpin(key)

    def check(self) -> None:
        """Invariants (used by tests): counts add up and none is negative."""
        assert self.used_blocks >= 0, self.used_blocks
        assert self.free_cached_blocks == sum(self.free_queue.values())
        assert self.pinned_blocks == sum(b for b, _ in self.pinned.values())
        assert self.empty_blocks >= 0, (self.used_blocks, self.free_cached_blocks, self.pinned_blocks)
