"""What one engine step runs: vLLM v1's scheduling, planned over the replica's state.

The planning half of a simulated replica (``thunder.sim.engine.Replica`` executes the
plans). Each step, running requests first, in admission order: a decoding request takes
one token, a prefilling one a chunk of what is left of the token budget (chunked
prefill); when blocks run out the last admitted running request (the lowest-priority
one, under priorities) is preempted by recompute. Then, if nothing was preempted,
waiting requests are admitted in order while budget, ``max_num_seqs`` and blocks allow.

Three ways to plan a step, each giving what the explicit walk would:
* ``_plan_lazy``: every decoder gets its token and all blocks are there (the common
  step, O(prefilling requests));
* ``_plan_lazy_preempting``: blocks run short on a first-come-first-served replica with
  no expired pin: the explicit walk's allocations and releases, over counts;
* ``_plan_explicit``: request by request, as vLLM does it.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, bisect_right

import simpy

from thunder.sim.decoders import DecodeSet
from thunder.sim.kv import PrefixCache
from thunder.sim.request import EngineCounters, Request, StepPlan
from thunder.sim.step_time import EngineSpec


class StepScheduler:
    """The waiting queue, the running batch and the plan of each step."""

    def __init__(self, env: simpy.Environment, spec: EngineSpec, cache: PrefixCache, counters: EngineCounters,
                 jump_decode: bool) -> None:
        self.env = env
        self.spec = spec
        self.block_size = spec.block_size
        self.cache = cache
        self.counters = counters
        self.jump_decode = jump_decode  # False: every preemption on the explicit path (the reference)
        self.running: dict[Request, None] = {}  # admission order
        self.prefilling: dict[Request, None] = {}  # running and not yet decoding, admission order
        self.decoders = DecodeSet(spec.block_size)
        self.waiting: list[tuple[float, int, Request]] = []
        self._order = 0
        self._admissions = 0
        self._budget_left = 0  # token budget the current plan leaves for admissions
        self._short_plan: StepPlan | None = None  # the lazy plan that found too few blocks
        self._fcfs = True  # every request so far had the default priority (victims: last admitted)

    def enqueue(self, request: Request) -> None:
        """A request reaches the engine: it waits, by priority then arrival, for admission."""
        if request.priority != 0.0:
            self._fcfs = False
        request.engine_arrival_s = self.env.now
        self._order += 1
        request.order = self._order
        heapq.heappush(self.waiting, (request.priority, request.order, request))


    def schedule(self) -> StepPlan:
        """Plan the next step (and admit what fits), as vLLM v1's scheduler does."""
        plan = self._plan_lazy()
        if plan is None and self._short_plan is not None and self.jump_decode and self._fcfs \
                and not self._expired_pins():
            plan = self._plan_lazy_preempting(self._short_plan)
        if plan is None:
            plan = self._plan_explicit()
        if not plan.preempted:
            self._admit(plan)
        return plan

    def _plan_lazy(self) -> StepPlan | None:
        """The common step: every decoder gets its token and all blocks are there.
        None when a request must stall or blocks run short (take the explicit path)."""
        budget = self.spec.max_num_batched_tokens
        decoders = self.decoders
        self._short_plan = None
        if len(decoders) > budget:
            return None
        plan = StepPlan()
        used = 0
        need = len(decoders.needing_block())
        for request in self.prefilling:
            room = budget - bisect_left(decoders.seqs, request.seq) - used
            left = request.target - request.computed
            tokens = min(left, room)
            if tokens <= 0 or (tokens < left and bisect_right(decoders.seqs, request.seq) < len(decoders)):
                return None  # the budget runs out before a later request: vLLM would stall it
            plan.prefill.append((request, tokens))
            need += request.blocks_for(request.computed + tokens, self.block_size) - request.program_blocks_held
            used += tokens
            if tokens < left:
                break  # budget exhausted; later prefills wait
        cache = self.cache
        if need > cache.empty_blocks + cache.free_cached_blocks:
            self._short_plan = plan  # blocks run short: someone must be preempted
            return None
        cache.allocate(need, self.env.now)
        for request, tokens in plan.prefill:
            request.program_blocks_held = request.blocks_for(request.computed + tokens, self.block_size)
        self._budget_left = budget - len(decoders) - used
        return plan

    def _expired_pins(self) -> bool:
        now = self.env.now
        return any(until <= now for _, until in self.cache.pinned.values())

    def _plan_lazy_preempting(self, plan: StepPlan) -> StepPlan:
        """``_plan_explicit``'s outcome when blocks run short, without making every decoder
        explicit: the same walk over the running requests in admission order, each taking
        the blocks of its token or chunk, the last admitted preempted while one does not
        fit; the cache sees the same allocations and releases in the same order.

        Only for first-come-first-served replicas (the victim is then the last running
        request, never one already walked) and when no pin has expired (an allocation
        that falls short would release expired pins in between)."""
        decoders, cache = self.decoders, self.cache
        block_size = self.block_size
        needing = decoders.needing_block()
        chunk_need = {request: max(0, request.blocks_for(request.computed + tokens, block_size)
                                   - request.program_blocks_held) for request, tokens in plan.prefill}
        order = list(self.running)
        free = cache.empty_blocks + cache.free_cached_blocks
        pending = 0  # blocks taken since the last preemption, allocated together
        tail = len(order) - 1
        now = self.env.now
        index = 0
        while index <= tail:
            request = order[index]
            index += 1
            need = 1 if request in needing else chunk_need.get(request, 0)
            if need <= free:
                free -= need
                pending += need
                continue
            cache.allocate(pending, now)  # the walk so far, before anything is released
            pending = 0
            while need > free:
                victim = order[tail]
                tail -= 1
                self.preempt(victim)
                plan.preempted = True
                free = cache.empty_blocks + cache.free_cached_blocks
                if victim is request:
                    break
            else:
                free -= need
                pending += need
        allocated = cache.allocate(pending, now)
        assert allocated, "the walk counted these blocks free"
        plan.prefill = [(request, tokens) for request, tokens in plan.prefill if request in self.running]
        for request, tokens in plan.prefill:
            request.program_blocks_held = request.blocks_for(request.computed + tokens, block_size)
        self.counters.lazy_preemption_steps += 1
        return plan

    def _plan_explicit(self) -> StepPlan:
        """Request by request, as vLLM does it, preempting when blocks run out."""
        self.counters.explicit_steps += 1
        self.decoders.clear()  # state made explicit for this step
        now = self.env.now
        budget = self.spec.max_num_batched_tokens
        plan = StepPlan(explicit=[])
        batch = plan.explicit
        assert batch is not None
        for request in list(self.running):
            if request not in self.running:
                continue  # preempted earlier in this step
            left = request.target - request.computed
            tokens = 1 if left <= 0 else min(left, budget)
            if tokens <= 0:
                continue
            need = request.blocks_for(request.computed + tokens, self.block_size) - request.program_blocks_held
            while need > 0 and not self.cache.allocate(need, now):
                victim = self._pick_victim()
                self.preempt(victim)
                plan.preempted = True
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
        self._budget_left = budget
        return plan

    def _pick_victim(self) -> Request:
        # vLLM v1: the last admitted under FCFS; the lowest priority (then latest) otherwise.
        return max(self.running, key=lambda r: (r.priority, r.seq))

    def preempt(self, request: Request) -> None:
        if request in self.decoders.members:
            self.decoders.remove(request)
        del self.running[request]
        self.prefilling.pop(request, None)
        self.cache.release(request.program_key, request.program_blocks_held, request.computed,
                           request.shared_key, request.shared_blocks if request.holds_shared else 0)
        request.recompute_frontier = max(request.recompute_frontier, request.computed)
        request.program_blocks_held = 0
        request.holds_shared = False
        request.computed = 0
        request.preemptions += 1
        self.counters.preemptions += 1
        heapq.heappush(self.waiting, (request.priority, request.order, request))

    def _admit(self, plan: StepPlan) -> None:
        now = self.env.now
        batch = plan.explicit if plan.explicit is not None else plan.prefill
        budget = self._budget_left
        while self.waiting and budget > 0 and len(self.running) < self.spec.max_num_seqs:
            request = self.waiting[0][2]
            target = request.prefill_target
            hit = self.cache.lookup(request.program_key, request.shared_key, request.shared_blocks, target)
            hit_tokens = (hit.shared_hit_blocks + hit.program_hit_blocks) * self.block_size
            tokens = min(target - hit_tokens, budget)
            need = (hit.shared_missing_blocks
                    + request.blocks_for(hit_tokens + tokens, self.block_size) - hit.program_hit_blocks)
            gate = need
            if self.spec.admit_full_prompt and tokens < target - hit_tokens:
                # The whole prompt must fit, but only this chunk is allocated now: later
                # chunks allocate as they run (vLLM reserves nothing).
                gate = hit.shared_missing_blocks + request.blocks_for(target, self.block_size) - hit.program_hit_blocks
            if not self.cache.can_allocate(gate, now, reserved=hit.free_blocks_reused, own_key=request.program_key):
                break
            heapq.heappop(self.waiting)
            self.cache.acquire(request.program_key, request.shared_key, request.shared_blocks, hit)
            allocated = self.cache.allocate(need, now)
            assert allocated, "can_allocate promised these blocks"
            request.holds_shared = request.shared_key is not None and request.shared_blocks > 0
            request.program_blocks_held = hit.program_hit_blocks + need - hit.shared_missing_blocks
            request.computed = hit_tokens
            request.target = target
            self._admissions += 1
            plan.joined += 1
            request.seq = self._admissions
            self._count_admission(request, hit_tokens, now)
            self.running[request] = None
            self.prefilling[request] = None
            batch.append((request, tokens))
            budget -= tokens

    def _count_admission(self, request: Request, hit_tokens: int, now: float) -> None:
        if request.hit_tokens is None:
            request.hit_tokens = hit_tokens
            request.admitted_s = now
            self.counters.prompt_tokens += request.prompt_tokens
            self.counters.hit_tokens += hit_tokens
            request.recompute_frontier = max(request.recompute_frontier, request.prior_tokens)
