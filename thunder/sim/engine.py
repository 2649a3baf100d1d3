"""A simulated vLLM replica: continuous batching over a paged prefix cache.

Each engine step (vLLM v1's scheduler):
1. Running requests first, in admission order: a decoding request takes one
   token, a prefilling one a chunk of what is left of the token budget
   (chunked prefill). If its blocks cannot be found, the last admitted running
   request (the lowest-priority one, under priorities) is preempted by
   recompute: its blocks are freed (full ones stay cached) and it returns to
   the front of the waiting queue.
2. Then, if nothing was preempted, waiting requests are admitted in order
   (FCFS, or by ``priority``) while budget, ``max_num_seqs`` and blocks allow;
   the first one that does not fit stops admission (head-of-line, as vLLM).
   "Fits" means the blocks of its first chunk are free, or, with
   ``EngineSpec.admit_full_prompt`` (vLLM 0.32's default), those of its whole prompt.

Event efficiency, exact in what it reports (``jump_decode=False`` turns the
shortcuts off: the reference that tests/sim/test_scenarios.py holds them to,
record for record):
* decoding requests advance lazily (``DecodeSet``): a step costs O(prefilling
  requests), not O(batch). A step where blocks run short (but see below) or
  the budget starves a decoder takes the explicit path, request by request.
* blocks running short on a first-come-first-served replica with no expired pin
  preempt without that path: the explicit walk's allocations and releases, in its
  order, over counts instead of requests.
* when a step has no prefill and admission was tried, the next steps are
  identical but for one token of context each, until a request finishes,
  blocks run out, a pin expires or a request arrives: they are advanced in
  one jump with exact per-step durations, and the jump ends on the very float
  instant that adding them one by one reaches (``TimeoutAt``); an arrival
  interrupts the jump at the end of the step in flight. Short jumps (most)
  are planned in plain Python, long ones with numpy. The cost ledger is
  charged per step.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, bisect_right
from typing import Any

import numpy as np
import simpy
from simpy.events import NORMAL

from thunder.core.view import BackendView
from thunder.core.cost import CostLedger
from thunder.sim import kv_costs
from thunder.sim.decoders import DecodeSet
from thunder.sim.step_time import EngineSpec
from thunder.sim.kv import PrefixCache, SeqKey
from thunder.sim.request import EngineCounters, Request, StepPlan

# Two instants closer than this are the same step boundary (float sums of step
# times taken along different paths differ in the last bits).
BOUNDARY_S = 1e-9
# Jumps planned to end within this many steps are planned in plain Python (most are).
SHORT_JUMP_STEPS = 64


class TimeoutAt(simpy.Timeout):
    """A timeout that fires at the instant ``at_s`` itself.

    ``env.timeout(at_s - now)`` fires at ``now + (at_s - now)``, which can miss ``at_s``
    by a rounding step, and then no delay lands on it. A decode jump must end where its
    steps, one by one, would have: on the sequential sum of their durations. So this
    is SimPy's ``Timeout`` with the same fields, queued at an absolute time.
    """

    def __init__(self, env: simpy.Environment, at_s: float) -> None:
        if at_s < env.now:
            raise ValueError(f"{at_s} is in the past (now {env.now})")
        self.env = env
        self.callbacks = []
        self._value = None
        self._delay = at_s - env.now
        self._ok = True
        heapq.heappush(env._queue, (at_s, NORMAL, next(env._eid), self))  # as Environment.schedule


class Replica:
    """One data-parallel engine; ``submit`` requests, ``on_done`` fires when each finishes."""

    def __init__(self, env: simpy.Environment, backend_id: int, spec: EngineSpec,
                 jump_decode: bool = True) -> None:
        self.env = env
        self.backend_id = backend_id
        self.spec = spec
        self.block_size = spec.block_size
        # False: the reference the shortcuts must match: one event per step, and every
        # preemption on the explicit path.
        self.jump_decode = jump_decode
        # Duck-typed step clocks (calibration's feature recorder) have only ``step_s``.
        fold = getattr(spec.step_time, "step_function", None)
        self._folded = fold is not None
        self._step_s = fold() if fold is not None else spec.step_time.step_s
        self.cache = PrefixCache(spec.num_blocks, spec.block_size)
        self.ledger = CostLedger()
        self.counters = EngineCounters()
        self.running: dict[Request, None] = {}  # admission order
        self.prefilling: dict[Request, None] = {}  # running and not yet decoding, admission order
        self.decoders = DecodeSet(spec.block_size)
        self.waiting: list[tuple[float, int, Request]] = []
        self._order = 0
        self._admissions = 0
        self._wakeup = env.event()
        self._accounted_s = 0.0
        self._budget_left = 0  # token budget the current plan leaves for admissions
        self._short_plan: StepPlan | None = None  # the lazy plan that found too few blocks
        self._fcfs = True  # every request so far had the default priority (victims: last admitted)
        self._frontend_free_s = 0.0  # when the front end (EngineSpec.frontend_s) is next free
        self.in_frontend = 0  # requests submitted that the engine has not seen yet
        self._delivered: list[Request] = []  # finished, past EngineSpec.finish_s, not yet handed back
        # What a policy sees of this replica changes only where ``changes`` is bumped (it
        # only grows): a submit, an arrival, a finish (before its callback), a step's plan.
        self.changes = 0
        self._view_at = -1
        self._view: BackendView | None = None
        self.process = env.process(self._run())

    # -- public ------------------------------------------------------------------

    def submit(self, request: Request) -> None:
        self.changes += 1
        now = request.submitted_s = self.env.now
        delay = self.spec.request_overhead_s
        service = self.spec.frontend_s + self.spec.frontend_per_prompt_token_s * request.prompt_tokens
        if service > 0:
            # One front-end server, first come first served; a fixed service time plus one
            # per prompt token (templating and tokenizing the whole prompt).
            self._frontend_free_s = max(now, self._frontend_free_s) + service
            delay += self._frontend_free_s - now
        if delay > 0:
            self.in_frontend += 1
            self.env.process(self._enqueue_after(request, delay))
        else:
            self._enqueue(request)

    def _enqueue_after(self, request: Request, delay_s: float):  # SimPy process
        # The API server's share of a request (EngineSpec.request_overhead_s, frontend_s):
        # the engine keeps stepping for others while this one is on its way.
        yield self.env.timeout(delay_s)
        self.in_frontend -= 1
        self._enqueue(request)

    def _enqueue(self, request: Request) -> None:
        self.changes += 1
        if request.priority != 0.0:
            self._fcfs = False
        request.engine_arrival_s = self.env.now
        self._order += 1
        request.order = self._order
        heapq.heappush(self.waiting, (request.priority, request.order, request))
        if not self._wakeup.triggered:
            self._wakeup.succeed()

    def pin(self, program_key: SeqKey, until_s: float) -> None:
        self.cache.pin(program_key, until_s)

    @property
    def running_tokens(self) -> int:
        """KV held by running requests, in whole blocks (O(1), no walk over requests)."""
        return self.cache.used_blocks * self.block_size

    def backend_view(self) -> BackendView:
        """What a policy sees of this replica now. The frozen value is rebuilt only after a
        change point (``_changed``): most policy calls find most replicas as they were."""
        if self._view_at != self.changes or self._view is None:
            self._view_at = self.changes
            self._view = BackendView(backend_id=self.backend_id, capacity_tokens=self.spec.capacity_tokens,
                                     running_tokens=self.running_tokens, running_requests=len(self.running),
                                     waiting_requests=len(self.waiting) + self.in_frontend)  # what a router sent
        return self._view

    # -- the engine loop ---------------------------------------------------------

    def _run(self):  # SimPy process
        while True:
            self._deliver_pending()
            if not self.running and not self.waiting:
                self.charge_idle()
                self._wakeup = self.env.event()
                yield self._wakeup
                continue
            self.charge_idle()
            plan = self._schedule()
            self.changes += 1
            if plan.is_empty(len(self.decoders)):
                yield from self._wait_for_room()
                continue
            # No prefill and admission was tried (no preemption) means nothing waiting
            # fits until a request finishes (decode only consumes blocks): jump.
            if self.jump_decode and plan.explicit is None and not plan.prefill and not plan.preempted:
                yield from self._decode_jump(plan)
            else:
                yield from self._single_step(plan)

    def _wait_for_room(self):
        """Nothing can run (the head request's blocks are pinned or held): wait for a
        submit or the next pin expiry, whichever is first."""
        self._wakeup = self.env.event()
        expiries = [until for _, until in self.cache.pinned.values() if until > self.env.now]
        if expiries:
            yield self._wakeup | self.env.timeout(min(expiries) - self.env.now)
        else:
            yield self._wakeup

    def charge_idle(self) -> None:
        """Charge the time since the last step to the ledger (the end of a run calls it too)."""
        now = self.env.now
        kv_costs.charge_idle(self.ledger, self.cache, now - self._accounted_s)
        self._accounted_s = max(self._accounted_s, now)

    # -- scheduling one step -----------------------------------------------------

    def _schedule(self) -> StepPlan:
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
        plan.decode_blocks = len(decoders.needing_block())
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
                self._preempt(victim)
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
        plan.decode_blocks = len(decoders.needing_block())
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
                self._preempt(victim)
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

    def _preempt(self, request: Request) -> None:
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

    # -- one step ----------------------------------------------------------------

    def _single_step(self, plan: StepPlan):
        prefill_tokens = decode_seqs = context = 0
        pairs = 0.0
        entries = plan.explicit if plan.explicit is not None else plan.prefill
        for request, tokens in entries:
            if request.computed >= request.target:
                decode_seqs += 1
                context += request.computed
            else:
                prefill_tokens += tokens
                pairs += tokens * (request.computed + tokens / 2)
        if plan.explicit is None:
            decode_seqs += len(self.decoders)
            context += self.decoders.context_tokens
        duration = self._step_s(prefill_tokens, pairs, decode_seqs, context, plan.joined)
        kv_costs.charge_step(self.ledger, self.cache, entries, self.prefilling, decode_seqs, duration)
        yield self.env.timeout(duration)
        self._accounted_s = self.env.now
        self.counters.steps += 1
        self.counters.busy_s += duration
        finished: list[Request] = []
        if plan.explicit is None:
            self.decoders.advance(1, plan.decode_blocks)
            finished.extend(self.decoders.pop_finished())
        for request, tokens in entries:
            if self._advance(request, tokens):
                finished.append(request)
        if plan.explicit is not None:
            for request in self.running:  # back to lazy tracking
                if request.computed >= request.target and request not in self.decoders.members \
                        and request not in finished:
                    self.prefilling.pop(request, None)
                    self.decoders.add(request)
        finished.sort(key=lambda r: r.seq)
        for request in finished:
            self._finish(request)

    def _advance(self, request: Request, tokens: int) -> bool:
        """Apply an explicit entry's step; True when the request is done."""
        request.computed += tokens
        if request.computed < request.target:
            return False  # more prefill chunks to go
        request.target = request.computed
        request.generated += 1
        if request.first_token_s is None:
            request.first_token_s = self.env.now
        if request.generated >= request.output_tokens:
            return True
        if request in self.prefilling:
            del self.prefilling[request]
            if request not in self.decoders.members:
                self.decoders.add(request)
        return False

    def _finish(self, request: Request) -> None:
        if request in self.decoders.members:
            self.decoders.remove(request)
        del self.running[request]
        self.prefilling.pop(request, None)
        self.cache.release(request.program_key, request.program_blocks_held, request.computed,
                           request.shared_key, request.shared_blocks if request.holds_shared else 0)
        request.program_blocks_held = 0
        request.holds_shared = False
        self.changes += 1  # its blocks and its place in the batch are free now
        if self.spec.finish_s > 0:
            self.env.process(self._deliver_after(request, self.spec.finish_s))
        else:
            self._deliver(request)

    def _deliver_after(self, request: Request, delay_s: float):  # SimPy process
        # The API server's last output processing (EngineSpec.finish_s); the engine goes on.
        # The response reaches its program at the next step boundary, from the engine loop: what
        # the program does next (a policy pinning its blocks) must not land inside a decode jump,
        # which sized itself to the free blocks.
        yield self.env.timeout(delay_s)
        self._delivered.append(request)
        if not self._wakeup.triggered:
            self._wakeup.succeed()

    def _deliver_pending(self) -> None:
        delivered, self._delivered = self._delivered, []
        for request in delivered:
            self._deliver(request)

    def _deliver(self, request: Request) -> None:
        request.done_s = self.env.now
        self.changes += 1
        if request.on_done is not None:
            request.on_done(request)

    # -- decode jumps ------------------------------------------------------------

    def _timeout_until(self, end_s: float) -> simpy.Timeout:
        return TimeoutAt(self.env, end_s)

    def _first_of(self, *events: simpy.Event) -> simpy.Event:
        """An event that succeeds when the first of ``events`` is processed: ``a | b`` without
        building a Condition and its value. The hops are a Condition's (the first event's
        callback schedules this one at that instant), so the order of events is unchanged."""
        gate = self.env.event()

        def open_gate(_: simpy.Event) -> None:
            if not gate.triggered:
                gate.succeed()
        for event in events:
            event.callbacks.append(open_gate)  # pending events have a list (it is None once processed)
        return gate

    def _plan_long_jump(self, max_steps: int, free: int, start: float) -> tuple[Any, Any, list[float]]:
        """Blocks taken by steps 1..i, step durations and step ends of the jump, vectorised."""
        decoders = self.decoders
        extra = decoders.new_blocks_per_step(max_steps)  # a fresh array
        extra[0] = 0  # allocated by the plan
        np.cumsum(extra, out=extra)  # blocks for steps 1..i
        steps = min(max_steps, int(np.searchsorted(extra, free, side="right")))
        durations = self.spec.step_time.decode_run_s(len(decoders), decoders.context_tokens, steps)
        # Sequential sums from ``start``, as successive single steps would add them up.
        ends = durations.copy()
        ends[0] += start
        np.cumsum(ends, out=ends)
        return extra[:steps], durations, ends.tolist()

    def _plan_short_jump(self, max_steps: int, free: int, start: float) -> tuple[Any, Any, list[float]]:
        """``_plan_long_jump`` one step at a time, for the common short jump (numpy's cost per
        call outweighs its speed per element there). Each duration is the single step's
        ``step_s``, which equals ``decode_run_s`` element by element."""
        decoders = self.decoders
        block_size = decoders.block_size
        clock = decoders.clock
        counts = [len(bucket) for bucket in decoders.buckets]
        extra = [0]
        taken = 0
        for i in range(1, max_steps):
            taken += counts[-(clock + i) % block_size]
            if taken > free:
                break
            extra.append(taken)
        seqs = len(decoders)
        context = decoders.context_tokens
        step_s = self._step_s
        durations: list[float] = []
        ends: list[float] = []
        end = start
        for i in range(len(extra)):
            duration = step_s(0, 0.0, seqs, context + seqs * i, 0)
            durations.append(duration)
            end = end + duration
            ends.append(end)
        return extra, durations, ends

    def _decode_jump(self, plan: StepPlan):
        decoders = self.decoders
        cache = self.cache
        max_steps = decoders.steps_until_first_finish()
        free = cache.empty_blocks + cache.free_cached_blocks
        start = self.env.now
        if max_steps <= SHORT_JUMP_STEPS and self._folded:
            extra, durations, ends = self._plan_short_jump(max_steps, free, start)
        else:
            extra, durations, ends = self._plan_long_jump(max_steps, free, start)
        steps = len(ends)
        expiries = [until for _, until in cache.pinned.values() if until > start]
        if expiries:
            # A pin expiring frees blocks: the first step starting after it may admit more.
            steps = min(steps, bisect_left(ends, min(expiries)) + 1)
            durations, ends = durations[:steps], ends[:steps]
        self._wakeup = self.env.event()
        yield self._first_of(self._timeout_until(float(ends[steps - 1])), self._wakeup)
        done = steps
        if self.env.now < ends[steps - 1] - BOUNDARY_S:
            # Interrupted by an arrival: a step ending now is complete (the arrival
            # joins the next one); otherwise finish the step in flight, then stop.
            done = bisect_right(ends, self.env.now + BOUNDARY_S, 0, steps)
            if done == 0 or ends[done - 1] < self.env.now - BOUNDARY_S:
                done += 1
                yield self._timeout_until(float(ends[done - 1]))
        if done == 0:
            return  # unreachable: a jump always completes its first step
        grown = int(extra[done - 1])
        kv_costs.charge_jump(self.ledger, self.cache, np.asarray(durations[:done], dtype=np.float64),
                             np.asarray(extra[:done], dtype=np.int64))
        self._accounted_s = self.env.now
        self.counters.steps += done
        self.counters.jumps += 1
        self.counters.busy_s += float(ends[done - 1]) - start
        allocated = cache.allocate(grown, self.env.now)
        assert allocated, "the jump was sized to the free blocks"
        decoders.advance(done, plan.decode_blocks + grown)
        for request in decoders.pop_finished():
            if request.first_token_s is None:
                request.first_token_s = self.env.now
            self._finish(request)
