"""Running requests in decode, advanced lazily by one shared step clock.

Why: in a continuous batch every decoding request gains one token per step,
so touching each of them on every step costs O(batch) per step. Here a
decoder stores its state as of the clock value when it joined; its current
state is that plus the steps since. What a step needs is kept as aggregates:

* ``context_tokens`` (KV read by the step) = sum of offsets + n * clock;
* which decoders start a new KV block this step: a decoder with offset
  ``o = computed - clock`` needs one when ``(o + clock) % block_size == 0``,
  so decoders are bucketed by ``o % block_size``;
* who finishes next: a heap keyed by the clock value at which the last
  output token is produced.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, insort
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from thunder.sim.request import Request


class DecodeSet:
    def __init__(self, block_size: int) -> None:
        self.block_size = block_size
        self.clock = 0
        self.members: dict["Request", None] = {}
        self.buckets: list[dict["Request", None]] = [{} for _ in range(block_size)]
        self.offset_sum = 0
        self.seqs: list[int] = []  # admission order numbers, sorted
        self._finish_heap: list[tuple[int, int, int, "Request"]] = []
        self._tokens = 0  # tells a re-added request's heap entry from its stale ones

    def __len__(self) -> int:
        return len(self.members)

    def add(self, request: "Request") -> None:
        """Start tracking ``request`` lazily from its current explicit state."""
        request.base_clock = self.clock
        request.base_computed = request.computed
        request.base_generated = request.generated
        offset = request.computed - self.clock
        request.residue = offset % self.block_size
        self.members[request] = None
        self.buckets[request.residue][request] = None
        self.offset_sum += offset
        insort(self.seqs, request.seq)
        finish_clock = self.clock + request.output_tokens - request.generated
        self._tokens += 1
        request.decode_token = self._tokens
        heapq.heappush(self._finish_heap, (finish_clock, request.seq, self._tokens, request))

    def materialize(self, request: "Request") -> None:
        """Write the request's current state into its explicit fields."""
        steps = self.clock - request.base_clock
        request.computed = request.base_computed + steps
        request.generated = request.base_generated + steps
        request.program_blocks_held = max(0, -(-request.computed // self.block_size) - request.shared_blocks)

    def remove(self, request: "Request") -> None:
        """Stop tracking ``request`` (finished, preempted or stalled); its state is made explicit."""
        self.materialize(request)
        del self.members[request]
        del self.buckets[request.residue][request]
        self.offset_sum -= request.base_computed - request.base_clock
        del self.seqs[bisect_left(self.seqs, request.seq)]
        # The heap entry is dropped lazily (see ``pop_finished``).

    def clear(self) -> None:
        """Stop tracking every member at once (an explicit step); their states are made explicit."""
        for request in self.members:
            self.materialize(request)
        self.members = {}
        self.buckets = [{} for _ in range(self.block_size)]
        self.offset_sum = 0
        self.seqs = []
        self._finish_heap = []  # every entry is stale now

    @property
    def context_tokens(self) -> int:
        return self.offset_sum + len(self.members) * self.clock

    def needing_block(self, clock: int | None = None) -> dict["Request", None]:
        """Decoders whose token at ``clock`` (default: now) starts a new block."""
        at = self.clock if clock is None else clock
        return self.buckets[(-at) % self.block_size]

    def steps_until_first_finish(self) -> int:
        heap = self._finish_heap
        while heap and not self._live(heap[0]):
            heapq.heappop(heap)
        return heap[0][0] - self.clock if heap else 0

    def new_blocks_per_step(self, steps: int) -> np.ndarray:
        """Blocks needed by the steps at clock+0 .. clock+steps-1."""
        counts = np.fromiter((len(b) for b in self.buckets), dtype=np.int64, count=self.block_size)
        clocks = self.clock + np.arange(steps, dtype=np.int64)
        return counts[(-clocks) % self.block_size]

    def _live(self, entry: tuple[int, int, int, "Request"]) -> bool:
        request = entry[3]
        return request in self.members and request.decode_token == entry[2]

    def advance(self, steps: int) -> None:
        self.clock += steps

    def pop_finished(self) -> list["Request"]:
        """Members whose last token has been produced, in admission order."""
        heap = self._finish_heap
        done = []
        while heap and heap[0][0] <= self.clock:
            entry = heapq.heappop(heap)
            if self._live(entry):
                done.append(entry[3])
        done.sort(key=lambda r: r.seq)
        return done
