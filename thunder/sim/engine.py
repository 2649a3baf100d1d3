"""A simulated vLLM replica: continuous batching over a paged prefix cache.

The execution half of a replica: the API front end, the engine loop, one step or one
decode jump at a time, and handing finished requests back. What each step runs is
planned by ``thunder.sim.scheduler.StepScheduler`` (vLLM v1's scheduling: running
requests first with chunked prefill, preemption by recompute, then admission while
budget, ``max_num_seqs`` and blocks allow; "fits" means the blocks of the first chunk
are free, or, with ``EngineSpec.admit_full_prompt`` (vLLM 0.32's default), those of the
whole prompt).

Event efficiency, exact in what it reports (``jump_decode=False`` turns the
shortcuts off: the reference that tests/sim/test_scenarios.py holds them to,
record for record):
* decoding requests advance lazily (``DecodeSet``): a step costs O(prefilling
  requests), not O(batch); the scheduler plans most steps without walking decoders;
* when a step has no prefill and admission was tried, the next steps are
  identical but for one token of context each, until a request finishes,
  blocks run out, a pin expires or a request arrives: they are advanced in
  one jump (``thunder.sim.jumps``) with exact per-step durations, ending on the
  very float instant that adding them one by one reaches; an arrival interrupts
  the jump at the end of the step in flight. The cost ledger is charged per step.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right

import numpy as np
import simpy

from thunder.core.cost import CostLedger
from thunder.core.view import BackendView
from thunder.sim import kv_costs
from thunder.sim.jumps import BOUNDARY_S, SHORT_JUMP_STEPS, TimeoutAt, first_of, plan_long_jump, plan_short_jump
from thunder.sim.kv import PrefixCache, SeqKey
from thunder.sim.request import EngineCounters, Request, StepPlan
from thunder.sim.scheduler import StepScheduler
from thunder.sim.step_time import EngineSpec

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
        self.scheduler = StepScheduler(env, spec, self.cache, self.counters, jump_decode)
        # The scheduler's collections, under short names: the same objects, not copies.
        self.running = self.scheduler.running
        self.prefilling = self.scheduler.prefilling
        self.decoders = self.scheduler.decoders
        self.waiting = self.scheduler.waiting
        self._wakeup = env.event()
        self._accounted_s = 0.0
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
        self.scheduler.enqueue(request)
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
            plan = self.scheduler.schedule()
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
            self.decoders.advance(1)
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

    def _decode_jump(self, plan: StepPlan):
        decoders = self.decoders
        cache = self.cache
        max_steps = decoders.steps_until_first_finish()
        free = cache.empty_blocks + cache.free_cached_blocks
        start = self.env.now
        if max_steps <= SHORT_JUMP_STEPS and self._folded:
            extra, durations, ends = plan_short_jump(decoders, self._step_s, max_steps, free, start)
        else:
            extra, durations, ends = plan_long_jump(decoders, self.spec.step_time, max_steps, free, start)
        steps = len(ends)
        expiries = [until for _, until in cache.pinned.values() if until > start]
        if expiries:
            # A pin expiring frees blocks: the first step starting after it may admit more.
            steps = min(steps, bisect_left(ends, min(expiries)) + 1)
            durations, ends = durations[:steps], ends[:steps]
        self._wakeup = self.env.event()
        yield first_of(self.env, self._timeout_until(float(ends[steps - 1])), self._wakeup)
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
        decoders.advance(done)
        for request in decoders.pop_finished():
            if request.first_token_s is None:
                request.first_token_s = self.env.now
            self._finish(request)
