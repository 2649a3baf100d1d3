"""mini-swe-agent trajectories (``*.traj.json``) to trace v1.

One assistant message that carries the provider's ``usage`` is one step:
``prompt_tokens``, ``completion_tokens`` (output) and
``prompt_tokens_details.cached_tokens`` are the provider's own counts. Times
come from the ``extra.timestamp`` of the messages (client wall clock):

- tool time: the last tool result's timestamp minus the assistant message's;
- LLM latency: the assistant message's timestamp minus the previous step's
  last tool result. Step 0 has none: the only earlier time is the provider's
  ``created``, which has whole-second resolution.

A value that cannot be measured honestly (timestamp missing or going
backwards, a latency that spans an unrecorded failed call) is left absent and
reported as a warning; a run without a single usable call, and a second run
of the same instance, are skipped and reported.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from thunder.traces.converters.chain import mark_context_resets
from thunder.traces.converters.options import ConversionError, ConvertOptions, refuse_tool_time
from thunder.traces.converters.report import ConversionReport, ReportBuilder, keep_first
from thunder.traces.converters.shared_prefix import SharedPrefix, estimate_shared_prefix
from thunder.traces.converters.tokens import DEFAULT_CHARS_PER_TOKEN, CharCounter, fit_chars_per_token
from thunder.traces.format import TraceHeader, TraceProgram, TraceStep

FORMAT_NAME = "mini-swe-agent"
WORKFLOW = "mini-swe-agent"
PATTERN = "*.traj.json"
TIME_DECIMALS = 3  # timestamps are microsecond-precise; milliseconds keep the trace small


@dataclass(frozen=True, slots=True)
class _Exchange:
    """One assistant message, the tool results answering it, and what came before it."""

    index: int  # position of the assistant message in ``messages``
    call: dict[str, Any]
    results: tuple[dict[str, Any], ...]
    after_interrupt: bool  # a user message (e.g. a format error) came after the previous results


@dataclass(frozen=True, slots=True)
class _Run:
    source: str
    program_id: str
    steps: tuple[TraceStep, ...]
    model: str
    prefix_text: str  # text every run of this setup starts with
    first_cached_tokens: int | None
    fit_samples: tuple[tuple[int, int], ...]  # (characters sent, provider prompt_tokens) per step


def find_trajectories(path: Path) -> list[Path]:
    """The trajectory files under ``path`` (searched recursively), or ``path`` itself."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise ConversionError(f"{path}: no such file or folder")
    files = sorted(path.rglob(PATTERN))
    if not files:
        raise ConversionError(f"{path}: no {PATTERN} files found")
    return files


def convert(path: Path, options: ConvertOptions) -> tuple[TraceHeader, list[TraceProgram], ConversionReport]:
    """Convert a trajectory file or a folder of them."""
    refuse_tool_time(options, FORMAT_NAME)
    files = find_trajectories(path)
    builder = ReportBuilder()
    for kind in ("context_reset_prompt_shrank", "context_reset_grew_less_than_output"):
        builder.count(kind, 0)  # stated even when zero
    runs = _read_unique(files, path, builder)
    fitted = fit_chars_per_token(sample for run in runs for sample in run.fit_samples)
    counter = CharCounter(options.chars_per_token or fitted or DEFAULT_CHARS_PER_TOKEN)
    prefixes = _shared_prefixes(runs, counter)
    programs = [_program(run, prefixes[(run.model, run.prefix_text)]) for run in runs]
    header = TraceHeader(
        source=f"mini-swe-agent trajectories: {path.name} ({len(files)} files)",
        created_by="thunder trace convert --from mini-swe-agent",
        token_counting="provider",
        notes=_notes(prefixes, fitted, builder),
    )
    return header, programs, builder.build(programs)


def _source_name(file: Path, root: Path) -> str:
    return file.name if root.is_file() else file.relative_to(root).as_posix()


def _read_unique(files: list[Path], root: Path, builder: ReportBuilder) -> list[_Run]:
    """Read every file; keep the first run per instance, with its warnings only."""
    read: list[tuple[_Run, ReportBuilder]] = []
    for file in files:
        local = ReportBuilder()  # a duplicate's warnings must not count
        run = _read_run(file, _source_name(file, root), local)
        if run is None:
            builder.merge(local)
        else:
            read.append((run, local))
    kept = keep_first([(run.source, run.program_id, (run, local)) for run, local in read], builder)
    for _, local in kept:
        builder.merge(local)
    return [run for run, _ in kept]


def _read_run(file: Path, source: str, builder: ReportBuilder) -> _Run | None:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        builder.skip(source, f"unreadable: {exc}", "unreadable")
        return None
    messages = data.get("messages") if isinstance(data, dict) else None
    if not isinstance(messages, list):
        builder.skip(source, "no 'messages' list: not a mini-swe-agent trajectory", "unreadable")
        return None
    messages = [m for m in messages if isinstance(m, dict)]
    fmt = data.get("trajectory_format")
    if isinstance(fmt, str) and not fmt.startswith("mini-swe-agent"):
        builder.warn(source, f"unexpected trajectory_format {fmt!r}; read as mini-swe-agent", "unexpected_format")
    exchanges = _exchanges(messages)
    found, first_cached = _steps(exchanges, source, builder)
    if not found:
        builder.skip(source, "never started: no assistant message with provider token usage", "never_started")
        return None
    steps, resets = mark_context_resets(found)
    for index, cause in resets:
        builder.warn(source, f"step {index}: prompt does not extend the previous context ({cause}); "
                             "marked context_reset", "context_reset_" + cause)
    instance = data.get("instance_id")
    return _Run(
        source=source,
        program_id=instance if isinstance(instance, str) and instance else file.name.removesuffix(".traj.json"),
        steps=steps,
        model=_model(data, exchanges),
        prefix_text=_prefix_text(data, messages),
        first_cached_tokens=first_cached,
        fit_samples=_fit_samples(messages, exchanges),
    )


def _exchanges(messages: list[dict[str, Any]]) -> list[_Exchange]:
    """Group the messages into assistant calls and the tool results that answer them."""
    out: list[_Exchange] = []
    current: tuple[int, dict[str, Any], list[dict[str, Any]], bool] | None = None
    interrupted = False
    for index, message in enumerate(messages):
        role = message.get("role")
        if role == "assistant":
            if current is not None:
                out.append(_Exchange(current[0], current[1], tuple(current[2]), current[3]))
            current = (index, message, [], interrupted)
            interrupted = False
        elif role == "tool" and current is not None:
            current[2].append(message)
        elif role == "user" and current is not None:
            interrupted = True
    if current is not None:
        out.append(_Exchange(current[0], current[1], tuple(current[2]), current[3]))
    return out


def _steps(exchanges: list[_Exchange], source: str,
           builder: ReportBuilder) -> tuple[list[TraceStep], int | None]:
    """One step per exchange with usable usage; also the first step's cached tokens."""
    steps: list[TraceStep] = []
    previous: _Exchange | None = None
    gap = False  # an exchange without usage came since ``previous``
    for position, exchange in enumerate(exchanges):
        usage = _usage(exchange.call)
        if usage is None:
            builder.warn(source, f"message {exchange.index}: assistant message without usable token usage; "
                                 "not a step", "assistant_without_usage")
            gap = True
            continue
        prompt, output, cached = usage
        if cached is not None and cached > prompt:
            builder.warn(source, f"message {exchange.index}: cached_tokens {cached} > prompt_tokens {prompt}; "
                                 "cached_tokens left absent", "cached_above_prompt")
            cached = None
        latency = None if previous is None else _latency(previous, exchange, gap, source, builder)
        tool = _tool_name(exchange.call)
        is_last = position == len(exchanges) - 1
        steps.append(TraceStep(
            prompt_tokens=prompt,
            output_tokens=output,
            cached_tokens=cached,
            llm_latency_s=latency,
            tool=tool,
            tool_s=None if tool is None else _tool_time(exchange, is_last, source, builder),
        ))
        previous, gap = exchange, False
    first_cached = steps[0].cached_tokens if steps else None
    return steps, first_cached


def _usage(message: dict[str, Any]) -> tuple[int, int, int | None] | None:
    response = (message.get("extra") or {}).get("response") or {}
    usage = response.get("usage") if isinstance(response, dict) else None
    if not isinstance(usage, dict):
        return None
    prompt, output = _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens"))
    if prompt is None or output is None or prompt < 1:
        return None
    return prompt, output, _count((usage.get("prompt_tokens_details") or {}).get("cached_tokens"))


def _count(value: Any) -> int | None:
    """A token count, or None for anything that is not a non-negative integer."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _timestamp(message: dict[str, Any]) -> float | None:
    value = (message.get("extra") or {}).get("timestamp")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _latency(previous: _Exchange, exchange: _Exchange, gap: bool, source: str,
             builder: ReportBuilder) -> float | None:
    where = f"message {exchange.index}"
    if gap or exchange.after_interrupt:
        # The agent re-asked the model after a rejected reply; that failed
        # call is not in the trajectory but its time is in this interval.
        builder.warn(source, f"{where}: follows an interrupt (e.g. a format error) that hides a failed call; "
                             "llm_latency_s left absent", "latency_absent_after_interrupt")
        return None
    start = _timestamp(previous.results[-1]) if previous.results else None
    end = _timestamp(exchange.call)
    if start is None or end is None:
        builder.warn(source, f"{where}: no timestamp to measure the LLM latency from; left absent",
                     "latency_absent_missing_timestamp")
        return None
    if end < start:
        builder.warn(source, f"{where}: timestamp {end - start:.3f} s before the previous tool result; "
                             "llm_latency_s left absent", "latency_absent_backwards")
        return None
    return round(end - start, TIME_DECIMALS)


def _tool_name(message: dict[str, Any]) -> str | None:
    names: list[str] = []
    for call in message.get("tool_calls") or []:
        name = ((call or {}).get("function") or {}).get("name")
        if isinstance(name, str) and name and name not in names:
            names.append(name)
    return "+".join(names) if names else None


def _tool_time(exchange: _Exchange, is_last: bool, source: str, builder: ReportBuilder) -> float | None:
    where = f"message {exchange.index}"
    if not exchange.results:
        # The final call is usually the submit command: the run exits
        # without writing a tool message, so there is no end time.
        if is_last:
            builder.count("final_tool_call_without_result")
        else:
            builder.warn(source, f"{where}: tool call without a tool result; tool_s left absent",
                         "tool_call_without_result")
        return None
    start, end = _timestamp(exchange.call), _timestamp(exchange.results[-1])
    if start is None or end is None:
        builder.warn(source, f"{where}: missing timestamp; tool_s left absent", "tool_s_absent_missing_timestamp")
        return None
    if end < start:
        builder.warn(source, f"{where}: tool result timestamp {start - end:.3f} s before the call's; "
                             "tool_s left absent", "tool_s_absent_backwards")
        return None
    return round(end - start, TIME_DECIMALS)


def _model(data: dict[str, Any], exchanges: list[_Exchange]) -> str:
    for exchange in exchanges:
        model = ((exchange.call.get("extra") or {}).get("response") or {}).get("model")
        if isinstance(model, str) and model:
            return model
    configured = (((data.get("info") or {}).get("config") or {}).get("model") or {}).get("model_name")
    return configured if isinstance(configured, str) and configured else "unknown-model"


def _prefix_text(data: dict[str, Any], messages: list[dict[str, Any]]) -> str:
    """The system prompt plus the task template up to where the task is inserted."""
    system = next((m.get("content") for m in messages if m.get("role") == "system"), None)
    text = system if isinstance(system, str) else ""
    template = (((data.get("info") or {}).get("config") or {}).get("agent") or {}).get("instance_template")
    if isinstance(template, str) and "{{" in template:
        text += template[:template.index("{{")]
    return text


def _message_chars(message: dict[str, Any]) -> int:
    content = message.get("content")
    chars = len(content) if isinstance(content, str) else 0
    for call in message.get("tool_calls") or []:
        function = (call or {}).get("function") or {}
        chars += len(str(function.get("name") or "")) + len(str(function.get("arguments") or ""))
    return chars


def _fit_samples(messages: list[dict[str, Any]], exchanges: list[_Exchange]) -> tuple[tuple[int, int], ...]:
    """(characters of every message sent, provider prompt_tokens) for each call with usage."""
    before = [0]
    for message in messages:
        before.append(before[-1] + _message_chars(message))
    samples = []
    for exchange in exchanges:
        usage = _usage(exchange.call)
        if usage is not None:
            samples.append((before[exchange.index], usage[0]))
    return tuple(samples)


def _shared_prefixes(runs: list[_Run], counter: CharCounter) -> dict[tuple[str, str], SharedPrefix]:
    """One shared prefix per (model, prefix text) group of runs."""
    groups: dict[tuple[str, str], list[_Run]] = {}
    for run in runs:
        groups.setdefault((run.model, run.prefix_text), []).append(run)
    out: dict[tuple[str, str], SharedPrefix] = {}
    for (model, text), members in groups.items():
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]
        out[(model, text)] = estimate_shared_prefix(f"{WORKFLOW}/{model}/system-{digest}", text,
                                                    [r.first_cached_tokens for r in members], counter)
    return out


def _program(run: _Run, prefix: SharedPrefix) -> TraceProgram:
    # A prefix can never exceed the smallest prompt that contains it.
    tokens = min(prefix.tokens, min(step.prompt_tokens for step in run.steps))
    return TraceProgram(
        program_id=run.program_id,
        workflow=WORKFLOW,
        steps=run.steps,
        shared_prefix_tokens=tokens,
        shared_prefix_id=prefix.prefix_id if tokens > 0 else None,
    )


def _notes(prefixes: dict[tuple[str, str], SharedPrefix], fitted: float | None,
           builder: ReportBuilder) -> dict[str, Any]:
    return {
        "llm_latency_s": "assistant timestamp minus the previous step's last tool result timestamp "
                         "(client wall clock: includes queueing and retries); absent on step 0 "
                         "(the provider's 'created' has whole-second resolution) and after an "
                         "interrupt that hides a failed call",
        "tool_s": "last tool result timestamp minus the assistant timestamp; absent where a timestamp "
                  "is missing or goes backwards, and on a final tool call with no result message "
                  "(the submit command ends the run)",
        "context_reset": "set where the provider's prompt_tokens is below the previous prompt_tokens + "
                         "output_tokens; counts under counts.context_reset_*",
        "shared_prefix": {p.prefix_id: {"tokens": p.tokens, "method": p.method} for p in prefixes.values()},
        "fitted_chars_per_token": None if fitted is None else round(fitted, 3),
        "counts": builder.count_notes(),
    }
