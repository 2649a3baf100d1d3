"""tau-bench trajectories (a JSON list of runs with chat ``traj``) to trace v1.

Each assistant message is one step. The source has neither token counts nor
times, so text is counted at a chars-per-token ratio (``tokens.CharCounter``):
the prompt is every earlier message (system policy included), the output is
the message text plus its tool calls' names and JSON arguments. The tool
schemas sent with each call are not in the data and are not counted.

The acting phase after a step is whatever the program waits on before its
next call: a tool result, or the simulated user's reply to a message with no
tool call. The user is another model served elsewhere, so to the serving
system it is external time like a tool; it appears as tool ``"user"``. Tool
times stay absent unless a distribution is given; then one draw per acting
phase, seeded, in input order.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

from thunder.traces.converters.options import ConversionError, ConvertOptions, ToolTimeSpec
from thunder.traces.converters.report import ConversionReport, ReportBuilder, keep_first
from thunder.traces.converters.tokens import DEFAULT_CHARS_PER_TOKEN, CharCounter, text_of
from thunder.traces.format import TraceHeader, TraceProgram, TraceStep

FORMAT_NAME = "tau-bench"
WORKFLOW = "tau-bench"
USER_TOOL = "user"
TIME_DECIMALS = 3


def convert(path: Path, options: ConvertOptions) -> tuple[TraceHeader, list[TraceProgram], ConversionReport]:
    """Convert a tau-bench results file (e.g. ``historical_trajectories/*.json``)."""
    runs = _load(path)
    counter = CharCounter(options.chars_per_token or DEFAULT_CHARS_PER_TOKEN)
    rng = random.Random(options.seed)
    builder = ReportBuilder()
    candidates: list[tuple[str, str, TraceProgram]] = []
    for index, run in enumerate(runs):
        source = f"{path.name}[{index}]"
        program = _program(run, source, counter, options.tool_time, rng, builder)
        if program is not None:
            candidates.append((f"{source} ({program.program_id})", program.program_id, program))
    programs = keep_first(candidates, builder)
    header = TraceHeader(
        source=f"tau-bench trajectories: {path.name}",
        created_by="thunder trace convert --from tau-bench",
        token_counting="chars-per-token",
        chars_per_token=counter.chars_per_token,
        notes=_notes(options, builder),
    )
    return header, programs, builder.build(programs)


def _load(path: Path) -> list[Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConversionError(f"{path}: cannot read a tau-bench results file: {exc}") from exc
    if not isinstance(data, list):
        raise ConversionError(f"{path}: expected a JSON list of runs, got {type(data).__name__}")
    return data


def _program(run: Any, source: str, counter: CharCounter, tool_time: ToolTimeSpec | None,
             rng: random.Random, builder: ReportBuilder) -> TraceProgram | None:
    messages = run.get("traj") if isinstance(run, dict) else None
    if not isinstance(messages, list):
        builder.skip(source, "no 'traj' list: not a tau-bench run", "unreadable")
        return None
    messages = [m for m in messages if isinstance(m, dict)]
    program_id = f"task-{run.get('task_id')}/trial-{run.get('trial', 0)}"
    steps = _steps(messages, counter, tool_time, rng)
    if not steps:
        builder.skip(f"{source} ({program_id})", "never started: no assistant message", "never_started")
        return None
    system = messages[0].get("content") if messages[0].get("role") == "system" else None
    shared = counter.count(system) if isinstance(system, str) else 0
    digest = hashlib.sha256((system or "").encode("utf-8")).hexdigest()[:8]
    return TraceProgram(
        program_id=program_id,
        workflow=WORKFLOW,
        steps=steps,
        shared_prefix_tokens=shared,
        shared_prefix_id=f"{WORKFLOW}/system-{digest}" if shared else None,
    )


def _steps(messages: list[dict[str, Any]], counter: CharCounter, tool_time: ToolTimeSpec | None,
           rng: random.Random) -> tuple[TraceStep, ...]:
    steps: list[TraceStep] = []
    context = 0
    for index, message in enumerate(messages):
        tokens = counter.count(_message_text(message))
        if message.get("role") == "assistant":
            answered = index + 1 < len(messages)  # something came back before the next call
            tool = _tool_name(message) or (USER_TOOL if answered else None)
            tool_s = None
            if tool is not None and answered and tool_time is not None:
                tool_s = round(tool_time.draw(rng), TIME_DECIMALS)
            # A response always carries at least one token (the end of turn).
            steps.append(TraceStep(prompt_tokens=max(1, context), output_tokens=max(1, tokens),
                                   tool=tool, tool_s=tool_s))
            tokens = max(1, tokens)
        context += tokens
    return tuple(steps)


def _message_text(message: dict[str, Any]) -> str:
    text = text_of(message.get("content"))
    for call in message.get("tool_calls") or []:
        function = (call or {}).get("function") or {}
        arguments = function.get("arguments") or ""
        text += str(function.get("name") or "") + (arguments if isinstance(arguments, str) else json.dumps(arguments))
    return text


def _tool_name(message: dict[str, Any]) -> str | None:
    names = [((c or {}).get("function") or {}).get("name") for c in message.get("tool_calls") or []]
    unique = list(dict.fromkeys(n for n in names if isinstance(n, str) and n))
    return "+".join(unique) if unique else None


def _notes(options: ConvertOptions, builder: ReportBuilder) -> dict[str, Any]:
    return {
        "token_counting": "text counted at chars_per_token; tool schemas are not in the data and not counted",
        "llm_latency_s": "absent: the source records no timing",
        "tool_s": ("absent: the source records no timing" if options.tool_time is None else
                   f"synthetic: drawn from {options.tool_time.describe()} with seed {options.seed}, one draw per "
                   "acting phase in input order"),
        "user_turns": "the simulated user's reply to a message without a tool call is the acting phase "
                      "of that step, as tool 'user'",
        "counts": builder.count_notes(),
    }
