"""A simulated vLLM replica: continuous batching over a paged prefix cache.

Each engine step (vLLM v1's scheduler):
1. Running requests first, in admission order: a decoding request takes one
   token, a prefilling one a chunk of what is left of the token budget
   (chunked prefill). If its blocks cannot be found, the newest running
   request (or the lowest-priority one, under priorities) is preempted by
   recompute: its blocks are freed (full ones stay cached) and it returns to
   the front of the waiting queue.
2. Then, if nothing was preempted, waiting requests are admitted in order
   (FCFS, or by ``priority``) while budget, ``max_num_seqs`` and blocks allow;
   the first one that does not fit stops admission (head-of-line, as vLLM).

Event efficiency: when a step has no prefill, the next steps are identical
except that contexts grow by one token, until a request finishes, blocks run
out, or a new request arrives. Those steps are advanced in one jump with
exact per-step durations (numpy); an arrival interrupts the jump at the end
of the step in flight. The cost ledger is charged per step, exactly.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import simpy

from thunder.cost import CostLedger
from thunder.sim.hardware import EngineSpec
from thunder.sim.kv import PrefixCache, SeqKey


@dataclass(slots=True, eq=False)
class Request:
    """One LLM call inside the engine. Tokens unless named otherwise."""

    program_id: str
    step_index: int
    prompt_tokens: int
    output_tokens: int
    program_key: SeqKey
    shared_key: SeqKey | None
    shared_blocks: int
    prior_tokens: int  # tokens of this prompt the program computed before (re-prefill = recompute)
    priority: float = 0.0
    order: int = 0
    submitted_s: float = 0.0
    admitted_s: float | None = None
    first_token_s: float | None = None
    done_s: float | None = None
    computed: int = 0
    generated: int = 0
    program_blocks_held: int = 0
    holds_shared: bool = False
    hit_tokens: int | None = None  # cached tokens at first admission (what vLLM reports)
    recompute_tokens: int = 0
    prefilled_tokens: int = 0
    recompute_frontier: int = 0
    preemptions: int = 0
    target: int = 0  # tokens to have KV for before the next token is sampled
    is_running: bool = False
    on_done: Callable[["Request"], None] | None = None

    @property
    def prefill_target(self) -> int:
        """Prompt plus what was generated before a preemption (recomputed on resume)."""
        return self.prompt_tokens + max(self.generated - 1, 0)

    @property
    def prefill_left(self) -> int:
        return self.target - self.computed

    def blocks_for(self, tokens: int, block_size: int) -> int:
        """Program blocks needed to hold ``tokens`` (beyond the shared prefix blocks)."""
        return max(0, -(-tokens // block_size) - self.shared_blocks)


@dataclass(slots=True)
class EngineCounters:
    steps: int = 0
    jumps: int = 0
    preemptions: int = 0
    prompt_tokens: int = 0
    hit_tokens: int = 0
    busy_s: float = 0.0


# Two instants closer than this are the same step boundary (float sums of step times
# taken along different paths differ in the last bits).
BOUNDARY_S = 1e-9


class Replica:
    """One data-parallel engine; ``submit`` requests, ``on_done`` fires when each finishes."""

    def __init__(self, env: simpy.Environment, backend_id: int, spec: EngineSpec,
                 jump_decode: bool = True) -> None:
        self.env = env
        self.backend_id = backend_id
        self.spec = spec
        self.block_size = spec.block_size
        self.jump_decode = jump_decode  # False: one event per step (the reference the jumps must match)
        self.cache = PrefixCache(spec.num_blocks, spec.block_size)
        self.ledger = CostLedger()
        self.counters = EngineCounters()
        self.running: list[Request] = []
        self.waiting: list[tuple[float, int, Request]] = []
        self._order = 0
        self._wakeup = env.event()
        self._accounted_s = 0.0
        self._preempted_this_step = False
        self.process = env.process(self._run())

    # -- public ----------------------------------------------------------------

    def submit(self, request: Request) -> None:
        self._order += 1
        request.order = self._order
        request.submitted_s = self.env.now
        heapq.heappush(self.waiting, (request.priority, request.order, request))
        if not self._wakeup.triggered:
            self._wakeup.succeed()

    def pin(self, program_key: SeqKey, until_s: float) -> None:
        self.cache.pin(program_key, until_s)

    def forget(self, program_key: SeqKey) -> None:
        self.cache.drop(program_key)

    @property
    def running_tokens(self) -> int:
        """KV held by running requests, in whole blocks (O(1), no walk over requests)."""
        return self.cache.used_blocks * self.block_size

    # -- the engine loop -------------------------------------------------------

    def _run(self):  # SimPy process
        while True:
            if not self.running and not self.waiting:
                self._charge_idle(self.env.now)
                self._wakeup = self.env.event()
                yield self._wakeup
                continue
            self._charge_idle(self.env.now)
            batch = self._schedule()
            if not batch:
                yield from self._wait_for_room()
                continue
            # No prefill in the batch and admission was tried (no preemption this step)
            # means nothing waiting fits, and nothing will until a request finishes
            # (decode only consumes blocks): jump.
            if (self.jump_decode and not self._preempted_this_step
                    and all(r.computed >= r.target for r, _ in batch)):
                yield from self._decode_jump()
            else:
                yield from self._single_step(batch)

    def _wait_for_room(self):
        """Nothing can run (the head request's blocks are pinned or held): wait for a
        submit or the next pin expiry, whichever is first."""
        self._wakeup = self.env.event()
        expiries = [until for _, until in self.cache.pinned.values() if until > self.env.now]
        if expiries:
            yield self._wakeup | self.env.timeout(min(expiries) - self.env.now)
        else:
            yield self._wakeup

    def _charge_idle(self, now: float) -> None:
        duration = now - self._accounted_s
        if duration > 0:
            c = self.cache
            self.ledger.add_interval(duration, caching=(c.free_cached_blocks + c.pinned_blocks) * self.block_size,
                                     unused=(c.empty_blocks + c.used_blocks) * self.block_size)
        self._accounted_s = max(self._accounted_s, now)

    # -- scheduling one step ---------------------------------------------------

    def _schedule(self) -> list[tuple[Request, int]]:
        now = self.env.now
        budget = self.spec.max_num_batched_tokens
        batch: list[tuple[Request, int]] = []
        preempted = False
        for request in list(self.running):
            if not request.is_running:
                continue  # preempted earlier in this step
            left = request.target - request.computed
            if left <= 0:
                tokens = 1
                # Decoding: a new block only when the next token starts one (relative to
                # what is held, so a step scheduled twice never allocates twice).
                need = (-(-(request.computed + 1) // self.block_size) - request.shared_blocks
                        - request.program_blocks_held)
            else:
                tokens = min(left, budget)
                if tokens <= 0:
                    continue
                need = request.blocks_for(request.computed + tokens, self.block_size) - request.program_blocks_held
            while need and not self.cache.allocate(need, now):
                victim = self._pick_victim()
                self._preempt(victim)
                preempted = True
                if victim is request:
                    break
                for position, (scheduled, scheduled_tokens) in enumerate(batch):
                    if scheduled is victim:  # under priorities the victim may already be batched
                        del batch[position]
                        budget += scheduled_tokens
                        break
            else:
                request.program_blocks_held += max(need, 0)
                batch.append((request, tokens))
                budget -= tokens
        if not preempted:
            self._admit(batch, budget, now)
        self._preempted_this_step = preempted
        return batch

    def _pick_victim(self) -> Request:
        # vLLM v1: the last admitted under FCFS; the lowest priority under priorities.
        return max(self.running, key=lambda r: (r.priority, r.order))

    def _preempt(self, request: Request) -> None:
        self.running.remove(request)
        request.is_running = False
        self.cache.release(request.program_key, request.program_blocks_held, request.computed,
                           request.shared_key, request.shared_blocks if request.holds_shared else 0)
        request.recompute_frontier = max(request.recompute_frontier, request.computed)
        request.program_blocks_held = 0
        request.holds_shared = False
        request.computed = 0
        request.preemptions += 1
        self.counters.preemptions += 1
        heapq.heappush(self.waiting, (request.priority, request.order, request))

    def _admit(self, batch: list[tuple[Request, int]], budget: int, now: float) -> None:
        while self.waiting and budget > 0 and len(self.running) < self.spec.max_num_seqs:
            request = self.waiting[0][2]
            target = request.prefill_target
            hit = self.cache.lookup(request.program_key, request.shared_key, request.shared_blocks, target)
            hit_tokens = (hit.shared_hit_blocks + hit.program_hit_blocks) * self.block_size
            tokens = min(target - hit_tokens, budget)
            need = (hit.shared_missing_blocks
                    + request.blocks_for(hit_tokens + tokens, self.block_size) - hit.program_hit_blocks)
            if not self.cache.can_allocate(need, now, reserved=hit.free_blocks_reused):
                break
            heapq.heappop(self.waiting)
            self.cache.acquire(request.program_key, request.shared_key, request.shared_blocks, hit)
            allocated = self.cache.allocate(need, now)
            assert allocated, "can_allocate promised these blocks"
            request.holds_shared = request.shared_key is not None and request.shared_blocks > 0
            request.program_blocks_held = hit.program_hit_blocks + need - hit.shared_missing_blocks
            request.computed = hit_tokens
            request.target = target
            self._count_admission(request, hit_tokens, now)
            self.running.append(request)
            request.is_running = True
            batch.append((request, tokens))
            budget -= tokens

    def _count_admission(self, request: Request, hit_tokens: int, now: float) -> None:
        if request.hit_tokens is None:
            request.hit_tokens = hit_tokens
            request.admitted_s = now
            self.counters.prompt_tokens += request.prompt_tokens
            self.counters.hit_tokens += hit_tokens
            request.recompute_frontier = max(request.recompute_frontier, request.prior_tokens)

    # -- running steps -----------------------------------------------------------

    def _single_step(self, batch: list[tuple[Request, int]]):
        prefill_tokens = decode_seqs = context = 0
        pairs = 0.0
        for request, tokens in batch:
            if request.computed >= request.target:
                decode_seqs += 1
                context += request.computed
            else:
                prefill_tokens += tokens
                pairs += tokens * (request.computed + tokens / 2)
        duration = self.spec.step_time.step_s(prefill_tokens, pairs, decode_seqs, context)
        self._charge_step(batch, duration)
        yield self.env.timeout(duration)
        self._accounted_s = self.env.now
        self.counters.steps += 1
        self.counters.busy_s += duration
        for request, tokens in batch:
            self._advance(request, tokens)

    def _charge_step(self, batch: list[tuple[Request, int]], duration: float) -> None:
        bs = self.block_size
        decode = prefill = recompute = 0.0
        shared_seen: set = set()
        for request, tokens in batch:
            held = request.program_blocks_held * bs
            if request.holds_shared and request.shared_key not in shared_seen:
                shared_seen.add(request.shared_key)  # held once, charged to its first user
                held += request.shared_blocks * bs
            if request.computed >= request.target:
                decode += held
                continue
            start = request.computed
            redo = max(0, min(start + tokens, request.recompute_frontier) - start)
            recompute += held * redo / tokens
            prefill += held * (tokens - redo) / tokens
            request.recompute_tokens += redo
            request.prefilled_tokens += tokens - redo
        c = self.cache
        idle_running = c.used_blocks * bs - decode - prefill - recompute  # blocks of requests not in this batch
        self.ledger.add_interval(duration, decode=decode, prefill=prefill, recompute=recompute,
                                 caching=(c.free_cached_blocks + c.pinned_blocks) * bs + max(idle_running, 0.0),
                                 unused=c.empty_blocks * bs)

    def _advance(self, request: Request, tokens: int) -> None:
        request.computed += tokens
        if request.computed < request.target:
            return  # more prefill chunks to go
        request.target = request.computed
        request.generated += 1
        if request.first_token_s is None:
            request.first_token_s = self.env.now
        if request.generated >= request.output_tokens:
            self._finish(request)

    def _finish(self, request: Request) -> None:
        self.running.remove(request)
        request.is_running = False
        self.cache.release(request.program_key, request.program_blocks_held, request.computed,
                           request.shared_key, request.shared_blocks if request.holds_shared else 0)
        request.program_blocks_held = 0
        request.holds_shared = False
        request.done_s = self.env.now
        if request.on_done is not None:
            request.on_done(request)

    # -- decode jumps ----------------------------------------------------------

    def _decode_jump(self):
        running = list(self.running)
        bs = self.block_size
        computed = np.fromiter((r.computed for r in running), dtype=np.int64, count=len(running))
        held = np.fromiter((r.program_blocks_held + r.shared_blocks for r in running), dtype=np.int64,
                           count=len(running))  # per request, shared blocks included (as in blocks_at)
        max_steps = min(r.output_tokens - r.generated for r in running)
        # New blocks each step: request j needs ceil((computed_j + i + 1) / bs) blocks at step i.
        steps = self._steps_that_fit(computed, held, max_steps)
        if steps == 0:
            # Not even one step fits: let the regular scheduler preempt.
            yield from self._single_step([(r, 1) for r in running])
            return
        offsets = np.arange(1, steps + 1, dtype=np.int64)
        blocks_at = (-(-(computed[None, :] + offsets[:, None]) // bs)).sum(axis=1)  # per step
        new_blocks = blocks_at - held.sum()
        durations = self.spec.step_time.decode_run_s(len(running), int(computed.sum()), steps)
        start = self.env.now
        # Sequential sums, as successive single steps would add them up.
        ends = np.cumsum(np.concatenate(([start], durations)))[1:]
        expiries = [until for _, until in self.cache.pinned.values() if until > start]
        if expiries:
            # A pin expiring frees blocks: the first step starting after it may admit more.
            steps = min(steps, int(np.searchsorted(ends, min(expiries), side="left")) + 1)
            durations, ends = durations[:steps], ends[:steps]
            blocks_at, new_blocks = blocks_at[:steps], new_blocks[:steps]
        self._wakeup = self.env.event()
        yield self.env.timeout(float(ends[-1]) - start) | self._wakeup
        done_steps = steps
        if self.env.now < ends[-1] - BOUNDARY_S:
            # Interrupted by an arrival: a step ending now is complete (the arrival
            # joins the next one); otherwise finish the step in flight, then stop.
            done_steps = int(np.searchsorted(ends, self.env.now + BOUNDARY_S, side="right"))
            if done_steps == 0 or ends[done_steps - 1] < self.env.now - BOUNDARY_S:
                done_steps += 1
                yield self.env.timeout(float(ends[done_steps - 1]) - self.env.now)
        if done_steps == 0:
            return  # interrupted at its very start: reschedule with the newcomer
        self._charge_jump(running, durations[:done_steps], new_blocks[:done_steps], blocks_at[:done_steps])
        self._accounted_s = self.env.now
        self.counters.steps += done_steps
        self.counters.jumps += 1
        self.counters.busy_s += float(ends[done_steps - 1]) - start
        grown = int(new_blocks[done_steps - 1])
        allocated = self.cache.allocate(grown, self.env.now)
        assert allocated, "the jump was sized to the free blocks"
        for request in running:
            request.program_blocks_held = -(-(request.computed + done_steps) // bs) - request.shared_blocks
            request.computed += done_steps
            request.target = request.computed
            request.generated += done_steps
        for request in running:
            if request.generated >= request.output_tokens:
                self._finish(request)

    def _steps_that_fit(self, computed: np.ndarray, held: np.ndarray, max_steps: int) -> int:
        c = self.cache
        free = c.empty_blocks + c.free_cached_blocks
        total_held = int(held.sum())
        bs = self.block_size

        def need(k: int) -> int:
            return int((-(-(computed + k) // bs)).sum()) - total_held

        if need(max_steps) <= free:
            return max_steps
        low, high = 0, max_steps  # need(low) fits, need(high) does not
        while high - low > 1:
            mid = (low + high) // 2
            if need(mid) <= free:
                low = mid
            else:
                high = mid
        return low

    def _charge_jump(self, running: list[Request], durations: np.ndarray, new_blocks: np.ndarray,
                     blocks_at: np.ndarray) -> None:
        c = self.cache
        bs = self.block_size
        shared_once = sum(r.shared_blocks for r in running if r.holds_shared)
        # Shared blocks are held once however many requests use them; blocks_at counts them per request.
        distinct_shared = sum({r.shared_key: r.shared_blocks for r in running if r.holds_shared}.values())
        decode_blocks = blocks_at - shared_once + distinct_shared
        empty0 = c.empty_blocks
        from_empty = np.minimum(new_blocks, empty0)
        from_cache = np.maximum(new_blocks - empty0, 0)
        self.ledger.add("decode", float(np.dot(decode_blocks * bs, durations)))
        caching = (c.free_cached_blocks + c.pinned_blocks - from_cache) * bs
        self.ledger.add("caching", float(np.dot(caching, durations)))
        self.ledger.add("unused", float(np.dot((empty0 - from_empty) * bs, durations)))
