"""OpenHands V1 SDK evaluation output (JSON Lines, one run per line) to trace v1.

A run's ``history`` is a list of events. One LLM response is one step: the
``ActionEvent``s that share an ``llm_response_id`` (parallel tool calls), or
an agent ``MessageEvent`` (a reply with no tool call). ``ObservationEvent``s
answer actions by ``tool_call_id``. The source records no token usage, so
text is counted at a chars-per-token ratio (``tokens.CharCounter``):

- output: the tool calls' names and JSON arguments, plus any thought or
  reasoning text (or the message text for a reply);
- prompt: the task (the first user message, or the run's ``instruction``
  where the history omits it) plus every earlier output, observation and
  user message. The OpenHands system prompt and tool schemas are not in the
  data, so prompts leave them out (a constant per call).

Times come from the events' ISO timestamps: tool time from the first action
of a step to its last observation; LLM latency from the event before the
step to its first action (step 0 has one only where the first user message
is recorded). A reply followed by a user message acts as a tool ``"user"``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from thunder.traces.converters.options import ConversionError, ConvertOptions, refuse_tool_time
from thunder.traces.converters.report import ConversionReport, ReportBuilder, keep_first
from thunder.traces.converters.tokens import DEFAULT_CHARS_PER_TOKEN, CharCounter, text_of
from thunder.traces.format import TraceHeader, TraceProgram, TraceStep

FORMAT_NAME = "openhands"
WORKFLOW = "openhands"
USER_TOOL = "user"  # the acting phase while the program waits for a user reply
TIME_DECIMALS = 3
# Fields of an observation that reach the model as text.
_OBSERVATION_TEXT = ("output", "error", "message", "content", "rejection_reason")


@dataclass(slots=True)
class _Turn:
    """One LLM response while the history is walked (mutable scratch, never returned)."""

    response_id: str | None
    prompt_tokens: int
    output_tokens: int
    started: datetime | None
    latency_s: float | None
    tools: list[str] = field(default_factory=list)
    pending_calls: set[str] = field(default_factory=set)
    ended: datetime | None = None  # latest observation (or user reply) time


def convert(path: Path, options: ConvertOptions) -> tuple[TraceHeader, list[TraceProgram], ConversionReport]:
    """Convert an OpenHands ``output*.jsonl`` file."""
    refuse_tool_time(options, FORMAT_NAME)
    if not path.is_file():
        raise ConversionError(f"{path}: not a file (expected an OpenHands output .jsonl)")
    counter = CharCounter(options.chars_per_token or DEFAULT_CHARS_PER_TOKEN)
    builder = ReportBuilder()
    candidates: list[tuple[str, str, TraceProgram]] = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                program = _read_line(line, f"{path.name}:{number}", counter, builder)
                if program is not None:
                    candidates.append((f"{path.name}:{number}", program.program_id, program))
    programs = keep_first(candidates, builder)
    header = TraceHeader(
        source=f"OpenHands evaluation output: {path.name}",
        created_by="thunder trace convert --from openhands",
        token_counting="chars-per-token",
        chars_per_token=counter.chars_per_token,
        notes=_notes(builder),
    )
    return header, programs, builder.build(programs)


def _read_line(line: str, source: str, counter: CharCounter, builder: ReportBuilder) -> TraceProgram | None:
    try:
        run = json.loads(line)
    except json.JSONDecodeError as exc:
        builder.skip(source, f"invalid JSON: {exc.msg}", "unreadable")
        return None
    if not isinstance(run, dict) or not isinstance(run.get("history"), list):
        builder.skip(source, "no 'history' list: not an OpenHands run", "unreadable")
        return None
    program_id = str(run.get("instance_id") or source)
    source = f"{source} ({program_id})"
    events = [e for e in run["history"] if isinstance(e, dict)]
    instruction = run.get("instruction")
    task = instruction if isinstance(instruction, str) else ""
    turns = _walk(events, task, counter, source, builder)
    if not turns:
        builder.skip(source, "never started: no LLM response in the history", "never_started")
        return None
    if turns[0].prompt_tokens < 1:
        builder.skip(source, "no task text: the first prompt would be empty", "no_task_text")
        return None
    return TraceProgram(program_id=program_id, workflow=WORKFLOW,
                        steps=tuple(_step(t, source, builder) for t in turns))


def _walk(events: list[dict[str, Any]], task: str, counter: CharCounter, source: str,
          builder: ReportBuilder) -> list[_Turn]:
    """Replay the history, tracking the context size, and return one turn per LLM response."""
    opens_with_user = bool(events) and events[0].get("kind") == "MessageEvent" and events[0].get("source") == "user"
    context = 0 if opens_with_user else counter.count(task)  # the task message is not always recorded
    turns: list[_Turn] = []
    by_call: dict[str, _Turn] = {}
    last_time: datetime | None = None
    for event in events:
        kind, when = event.get("kind"), _time(event.get("timestamp"))
        if kind == "ActionEvent":
            turn = turns[-1] if turns else None
            response_id = event.get("llm_response_id")
            if turn is None or response_id is None or turn.response_id != response_id:
                turn = _start(response_id, context, when, last_time, source, builder)
                turns.append(turn)
            produced = counter.count(_action_text(event))
            turn.output_tokens += produced
            context += produced
            turn.tools.append(str(event.get("tool_name") or "unknown"))
            call_id = event.get("tool_call_id")
            if isinstance(call_id, str):
                turn.pending_calls.add(call_id)
                by_call[call_id] = turn
        elif kind == "MessageEvent" and event.get("source") == "agent":
            turn = _start(None, context, when, last_time, source, builder)
            turn.output_tokens = counter.count(text_of((event.get("llm_message") or {}).get("content")))
            context += turn.output_tokens
            turns.append(turn)
        elif kind == "MessageEvent":
            context += counter.count(text_of((event.get("llm_message") or {}).get("content")))
            if turns and not turns[-1].tools and turns[-1].ended is None:
                turns[-1].tools.append(USER_TOOL)  # the reply was answered: the program waited on a user
                turns[-1].ended = when
        elif isinstance(event.get("tool_call_id"), str):  # observations and agent errors answer a call
            context += counter.count(_observation_text(event))
            turn = by_call.get(event["tool_call_id"])
            if turn is not None:
                turn.pending_calls.discard(event["tool_call_id"])
                if when is not None and (turn.ended is None or when > turn.ended):
                    turn.ended = when  # parallel calls: the step acts until its last result
        else:
            builder.warn(source, f"event kind {kind!r} not understood; ignored", "unknown_event")
        last_time = when or last_time
    return turns


def _start(response_id: str | None, context: int, when: datetime | None, before: datetime | None,
           source: str, builder: ReportBuilder) -> _Turn:
    latency = None
    if when is not None and before is not None:
        if when >= before:
            latency = round((when - before).total_seconds(), TIME_DECIMALS)
        else:
            builder.warn(source, f"response at {when.isoformat()} is before the previous event; "
                                 "llm_latency_s left absent", "latency_absent_backwards")
    return _Turn(response_id=response_id, prompt_tokens=context, output_tokens=0, started=when,
                 latency_s=latency)


def _step(turn: _Turn, source: str, builder: ReportBuilder) -> TraceStep:
    names = list(dict.fromkeys(turn.tools))  # unique, in call order
    tool = "+".join(names) if names else None
    tool_s = None
    if tool is not None:
        if turn.pending_calls:
            builder.warn(source, f"{tool} call without an observation (the run ended); tool_s left absent",
                         "tool_call_without_result")
        elif turn.started is None or turn.ended is None or turn.ended < turn.started:
            builder.warn(source, f"{tool}: missing or backwards timestamp; tool_s left absent",
                         "tool_s_absent_bad_timestamp")
        else:
            tool_s = round((turn.ended - turn.started).total_seconds(), TIME_DECIMALS)
    # A response always carries at least one token (the end of turn).
    return TraceStep(prompt_tokens=turn.prompt_tokens, output_tokens=max(1, turn.output_tokens),
                     llm_latency_s=turn.latency_s, tool=tool, tool_s=tool_s)


def _action_text(event: dict[str, Any]) -> str:
    call = event.get("tool_call") or {}
    name = call.get("name") or event.get("tool_name") or ""
    arguments = call.get("arguments") or ""
    thinking = text_of(event.get("thought")) + text_of(event.get("reasoning_content"))
    return f"{thinking}{name}{arguments if isinstance(arguments, str) else json.dumps(arguments)}"


def _observation_text(event: dict[str, Any]) -> str:
    observation = event.get("observation")
    body: dict[str, Any] = observation if isinstance(observation, dict) else event
    return "".join(body[key] for key in _OBSERVATION_TEXT if isinstance(body.get(key), str))


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    # Compare like with like: zoned times become naive UTC.
    return moment.astimezone(timezone.utc).replace(tzinfo=None) if moment.tzinfo else moment


def _notes(builder: ReportBuilder) -> dict[str, Any]:
    return {
        "token_counting": "text counted at chars_per_token; prompts exclude the OpenHands system prompt "
                          "and tool schemas, which the output does not record",
        "llm_latency_s": "first action timestamp minus the previous event's; step 0 has one only where "
                         "the first user message is in the history",
        "tool_s": "last observation timestamp minus the step's first action timestamp; a reply answered "
                  "by a user message is tool 'user'; absent where the run ended before the observation",
        "counts": builder.count_notes(),
    }
