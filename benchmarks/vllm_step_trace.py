"""`vllm serve` with every engine step timed: a launcher run by the vLLM venv's Python.

    THUNDER_STEP_TRACE=steps.jsonl .venv-vllm/bin/python benchmarks/vllm_step_trace.py serve MODEL ...

Wraps vLLM's ``EngineCore.step`` (the engine-core process: the patch is applied at import,
so it holds whether vLLM forks or spawns that process) and appends one JSON line per step
that ran the model:

    [wall_start, seconds, prefill_tokens, prefill_pairs, decode_seqs, decode_context, unfinished,
     joined, finished]

in the simulator's step-model terms (``thunder.sim.step_time.StepTimeModel.step_s``): a
request with one scheduled token on top of computed ones decodes, with its computed tokens
as context; any other scheduled chunk prefills ``n`` tokens after ``offset`` computed ones,
``n * (offset + n / 2)`` attention pairs. ``unfinished`` is the scheduler's count after the
step: when it is non-zero the next step is due at once, so the time until it is engine-side
overhead (input and output handling), not idleness. ``joined`` counts requests scheduled for
the first time (or resumed), ``finished`` those the step before this one finished: both
change the model runner's persistent batch. A diagnostic for
``benchmarks/engine_steps.py``; the product never imports vLLM.
"""

from __future__ import annotations

import json
import os
import sys
import time

TRACE_ENV = "THUNDER_STEP_TRACE"


def _install(path: str) -> None:
    from vllm.v1.core.sched.scheduler import Scheduler
    from vllm.v1.engine.core import EngineCore

    last_output: list[object] = [None]
    schedule = Scheduler.schedule
    step = EngineCore.step
    sink = open(path, "a", buffering=1)  # line-buffered: a killed server loses at most one line

    def remembering_schedule(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        output = schedule(self, *args, **kwargs)
        last_output[0] = output
        return output

    def timed_step(self):  # type: ignore[no-untyped-def]
        last_output[0] = None
        wall = time.time()
        started = time.perf_counter()
        result = step(self)
        seconds = time.perf_counter() - started
        output = last_output[0]
        if output is None or not output.total_num_scheduled_tokens:
            return result
        computed: dict[str, int] = {new.req_id: new.num_computed_tokens for new in output.scheduled_new_reqs}
        cached = output.scheduled_cached_reqs
        computed.update(zip(cached.req_ids, cached.num_computed_tokens))
        prefill = decode = context = 0
        pairs = 0.0
        for req_id, tokens in output.num_scheduled_tokens.items():
            offset = computed.get(req_id, 0)
            if tokens == 1 and offset > 0:
                decode += 1
                context += offset
            else:
                prefill += tokens
                pairs += tokens * (offset + tokens / 2)
        unfinished = self.scheduler.get_num_unfinished_requests()
        joined = len(output.scheduled_new_reqs) + len(cached.resumed_req_ids)
        row = [round(wall, 6), round(seconds, 6), prefill, pairs, decode, context, unfinished, joined,
               len(output.finished_req_ids)]
        sink.write(json.dumps(row) + "\n")
        return result

    Scheduler.schedule = remembering_schedule
    EngineCore.step = timed_step


if os.environ.get(TRACE_ENV):
    _install(os.environ[TRACE_ENV])

if __name__ == "__main__":
    from vllm.entrypoints.cli.main import main

    sys.argv[0] = "vllm"
    sys.exit(main())
