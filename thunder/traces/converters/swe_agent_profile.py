"""SWE-agent timing profiles (``prefix_cache_metrics.jsonl`` + ``stage_timings.jsonl``) to trace v1.

One metrics line is one step: ``input_tokens`` as ``prompt_tokens``,
``output_tokens``, ``llm_reasoning_time`` as ``llm_latency_s`` (the client's
whole call: vLLM's own token counts, real GPU times). From the stage timings:
``tool_s`` = ``tool_execution`` + ``observation_packaging`` of the step, and
``env.setup_s`` = ``env_prepare``. The reading and its checks live in
``profile_runs``.

Reported, not dropped: a run whose files break a rule is skipped with the
located reason (``file:line: field: rule``); a call the agent abandoned and
asked again (an ``llm_reasoning`` interval ending ``reenter``, with no metrics
line) is a warning, its time in no step; the agent's own time between stages
(answer parsing, history, templating) is not tool time and is totalled in the
header's notes. Programs are in the order the batch started them.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from thunder.traces.converters.chain import mark_context_resets
from thunder.traces.converters.options import ConversionError, ConvertOptions, refuse_tool_time
from thunder.traces.converters.profile_runs import (METRICS_FILE, ProfileError, ProfileRun, find_run_folders,
                                             num_workers, read_run)
from thunder.traces.converters.report import ConversionReport, ReportBuilder, keep_first
from thunder.traces.format import EnvSpec, TraceHeader, TraceProgram, TraceStep

FORMAT_NAME = "swe-agent-profile"
WORKFLOW = "swe-agent"
TOOL = "swe-agent-action"  # the stage timings do not name the tool an action ran
TIME_DECIMALS = 3


def read_runs(path: Path, builder: ReportBuilder) -> list[ProfileRun]:
    """Every readable run under ``path``, first per instance, in start order; skips reported."""
    try:
        folders = find_run_folders(path)
    except FileNotFoundError as exc:
        raise ConversionError(str(exc)) from exc
    if not folders:
        raise ConversionError(f"{path}: no {METRICS_FILE} files found")
    read = []
    for folder in folders:
        source = folder.relative_to(path).as_posix() if folder != path else folder.name
        try:
            read.append((source, read_run(folder)))
        except ProfileError as exc:
            builder.skip(source, f"unreadable: {exc}", "unreadable")
    read.sort(key=lambda item: (item[1].started_s, item[0]))
    return keep_first([(source, run.instance_id, run) for source, run in read], builder)


def convert(path: Path, options: ConvertOptions) -> tuple[TraceHeader, list[TraceProgram], ConversionReport]:
    """Convert one batch folder (or a folder of batches, or one run folder)."""
    refuse_tool_time(options, FORMAT_NAME)
    builder = ReportBuilder()
    for kind in ("context_reset_prompt_shrank", "context_reset_grew_less_than_output", "hidden_call"):
        builder.count(kind, 0)  # stated even when zero
    runs = read_runs(path, builder)
    programs = [_program(run, path, builder) for run in runs]
    header = TraceHeader(
        source=f"SWE-agent timing profiles: {path.name} ({len(runs)} runs)",
        created_by="thunder trace convert --from swe-agent-profile",
        token_counting="provider",
        notes=_notes(runs, path, builder),
    )
    return header, programs, builder.build(programs)


def _program(run: ProfileRun, root: Path, builder: ReportBuilder) -> TraceProgram:
    source = run.folder.relative_to(root).as_posix() if run.folder != root else run.folder.name
    for step, kind, what in run.notes:
        builder.warn(source, f"step {step}: {what}", kind)
    steps = [TraceStep(prompt_tokens=s.call.input_tokens, output_tokens=s.call.output_tokens,
                       llm_latency_s=round(s.call.llm_s, TIME_DECIMALS), tool=TOOL,
                       tool_s=None if s.tool_s is None else round(s.tool_s, TIME_DECIMALS))
             for s in run.steps]
    marked, resets = mark_context_resets(steps)
    for index, cause in resets:
        builder.warn(source, f"step {run.steps[index].call.step}: prompt does not extend the previous context "
                             f"({cause}); marked context_reset", "context_reset_" + cause)
    env = None if run.env_prepare_s is None else EnvSpec(setup_s=round(run.env_prepare_s, TIME_DECIMALS))
    return TraceProgram(program_id=run.instance_id, workflow=WORKFLOW, steps=marked, env=env)


def _batch_key(batch: Path, root: Path) -> str:
    if batch == root:
        return "."
    return batch.relative_to(root).as_posix() if batch.is_relative_to(root) else batch.name


def _notes(runs: list[ProfileRun], root: Path, builder: ReportBuilder) -> dict[str, Any]:
    workers: Counter[str] = Counter()
    batches = sorted({run.folder.parent for run in runs})
    for batch in batches:
        try:
            count = num_workers(batch)
        except ProfileError as exc:
            builder.warn(batch.name, str(exc), "config_unreadable")
            count = None
        workers[_batch_key(batch, root)] = count if count is not None else 0
    agent_s = sum(s.agent_s for run in runs for s in run.steps)
    hidden_s = sum(t for run in runs for s in run.steps for t in s.hidden_calls_s)
    return {
        "llm_latency_s": "llm_reasoning_time of the metrics line: the client's whole call (request to the "
                         "last streamed chunk) against vLLM serving the model",
        "tool_s": "tool_execution + observation_packaging stages of the step",
        "env_setup_s": "the env_prepare stage (container start and repository reset)",
        "tool": f"{TOOL!r} on every step: the stage timings do not name the tool",
        "not_in_the_trace": {
            "agent_s_total": round(agent_s, 1),
            "agent_s": "the agent's own time between stages (LLM answer to tool start, observation to the "
                       "next call), summed over all steps; not tool time",
            "hidden_calls_s_total": round(hidden_s, 1),
            "hidden_calls": "llm_reasoning intervals that ended 'reenter' (the agent asked again) have no "
                            "metrics line, so no tokens: no step; their time is summed here",
            "cached_tokens": "not recorded (the metrics file holds no cache counts)",
            "shared_prefix": "not estimated: no cache counts, and the tool schemas are not in the data",
        },
        "order": "programs in the order the batch started them (first stage timestamp); no arrival_s: "
                 "the batch ran closed loop with num_workers parallel workers",
        "num_workers": dict(sorted(workers.items())),
        "counts": builder.count_notes(),
    }
