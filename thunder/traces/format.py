"""Trace format v1: one agent run (an LLM program) per JSON line.

A trace file is JSON Lines. The first line may be a header object
(``{"type": "header", "format_version": 1, ...}``); every other line is one
program. Without a header, every program line must carry ``format_version``.
The full specification with examples is in ``traces/README.md``.

Loading streams line by line and validates as it goes. Any rule broken raises
``TraceError`` naming the file, the line, the field and the rule: a trace is
never silently repaired and a program is never silently dropped.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, TextIO

FORMAT_VERSION = 1
SUPPORTED_VERSIONS = frozenset({1})


def _is_supported(version: Any) -> bool:
    # exact int: `True in {1}` and `1.0 in {1}` are true in Python, and an
    # unhashable value (a list) would raise TypeError instead of a TraceError
    return type(version) is int and version in SUPPORTED_VERSIONS


class TraceError(ValueError):
    """A trace broke a rule. ``str()`` reads ``file:line: field: rule``."""

    def __init__(self, path: str, line: int | None, field_name: str, rule: str) -> None:
        self.path = path
        self.line = line
        self.field = field_name
        self.rule = rule
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {field_name}: {rule}")


@dataclass(frozen=True, slots=True)
class EnvSpec:
    """The tool environment a program needs before its first step."""

    setup_s: float | None = None
    disk_bytes: int | None = None
    ports: int | None = None


@dataclass(frozen=True, slots=True)
class TraceStep:
    """One LLM call and the tool call that follows it.

    ``prompt_tokens`` is the whole context sent with the call. Unless
    ``context_reset`` is true, it must be at least the previous step's
    ``prompt_tokens + output_tokens`` (the history only grows); the
    difference is the tool result and any new user text.
    ``tool``/``tool_s`` are absent on a final step that calls no tool;
    ``tool_s`` is also absent where the source recorded no timing.
    """

    prompt_tokens: int
    output_tokens: int
    cached_tokens: int | None = None
    llm_latency_s: float | None = None
    tool: str | None = None
    tool_s: float | None = None
    context_reset: bool = False
    max_tokens: int | None = None  # the call's output cap (the client's max_tokens), if recorded


@dataclass(frozen=True, slots=True)
class TraceProgram:
    """One agent run: the unit the scheduler calls a program."""

    program_id: str
    workflow: str
    steps: tuple[TraceStep, ...]
    arrival_s: float | None = None
    env: EnvSpec | None = None
    shared_prefix_tokens: int = 0
    shared_prefix_id: str | None = None
    group_id: str | None = None  # programs of one rollout group (e.g. GRPO samples of one prompt)

    @property
    def total_output_tokens(self) -> int:
        return sum(s.output_tokens for s in self.steps)


@dataclass(frozen=True, slots=True)
class TraceHeader:
    """File-level facts: where the trace came from and how tokens were counted."""

    format_version: int = FORMAT_VERSION
    source: str | None = None
    created_by: str | None = None
    token_counting: str | None = None  # "provider", "tokenizer:<name>", "chars-per-token"
    chars_per_token: float | None = None
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Trace:
    header: TraceHeader
    programs: tuple[TraceProgram, ...]


# ----------------------------------------------------------------------------
# validation


class _Checker:
    """Field checks bound to one file and line, so every error says where."""

    def __init__(self, path: str, line: int) -> None:
        self.path = path
        self.line = line

    def fail(self, field_name: str, rule: str) -> TraceError:
        return TraceError(self.path, self.line, field_name, rule)

    def get(self, obj: dict[str, Any], key: str, prefix: str, required: bool) -> Any:
        if key not in obj or obj[key] is None:
            if required:
                raise self.fail(prefix + key, "missing required field")
            return None
        return obj[key]

    def integer(self, obj: dict[str, Any], key: str, prefix: str = "", *,
                required: bool = True, minimum: int = 0) -> int | None:
        value = self.get(obj, key, prefix, required)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(prefix + key, f"must be an integer, got {type(value).__name__} {value!r}")
        if value < minimum:
            raise self.fail(prefix + key, f"must be >= {minimum}, got {value}")
        return value

    def number(self, obj: dict[str, Any], key: str, prefix: str = "", *,
               required: bool = False) -> float | None:
        value = self.get(obj, key, prefix, required)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(prefix + key, f"must be a number, got {type(value).__name__} {value!r}")
        if not math.isfinite(value) or value < 0:
            raise self.fail(prefix + key, f"must be a finite number >= 0, got {value}")
        return float(value)

    def string(self, obj: dict[str, Any], key: str, prefix: str = "", *,
               required: bool = True) -> str | None:
        value = self.get(obj, key, prefix, required)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise self.fail(prefix + key, f"must be a non-empty string, got {value!r}")
        return value


def _parse_env(check: _Checker, raw: Any) -> EnvSpec | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise check.fail("env", f"must be an object, got {type(raw).__name__}")
    return EnvSpec(
        setup_s=check.number(raw, "setup_s", "env."),
        disk_bytes=check.integer(raw, "disk_bytes", "env.", required=False),
        ports=check.integer(raw, "ports", "env.", required=False),
    )


def _parse_step(check: _Checker, raw: Any, index: int, shared_prefix_tokens: int,
                previous: TraceStep | None) -> TraceStep:
    prefix = f"steps[{index}]."
    if not isinstance(raw, dict):
        raise check.fail(f"steps[{index}]", f"must be an object, got {type(raw).__name__}")
    prompt = check.integer(raw, "prompt_tokens", prefix, minimum=1)
    output = check.integer(raw, "output_tokens", prefix)
    assert prompt is not None and output is not None
    cached = check.integer(raw, "cached_tokens", prefix, required=False)
    if cached is not None and cached > prompt:
        raise check.fail(prefix + "cached_tokens", f"must be <= prompt_tokens ({cached} > {prompt})")
    reset = raw.get("context_reset", False)
    if not isinstance(reset, bool):
        raise check.fail(prefix + "context_reset", f"must be true or false, got {reset!r}")
    if prompt < shared_prefix_tokens:
        raise check.fail(prefix + "prompt_tokens",
                         f"must be >= shared_prefix_tokens ({prompt} < {shared_prefix_tokens})")
    if previous is not None and not reset:
        floor = previous.prompt_tokens + previous.output_tokens
        if prompt < floor:
            raise check.fail(
                prefix + "prompt_tokens",
                f"must be >= previous prompt_tokens + output_tokens ({prompt} < "
                f"{previous.prompt_tokens}+{previous.output_tokens}) unless context_reset is true")
    max_tokens = check.integer(raw, "max_tokens", prefix, required=False)
    if max_tokens is not None and max_tokens < output:
        raise check.fail(prefix + "max_tokens", f"must be >= output_tokens ({max_tokens} < {output})")
    tool = raw.get("tool")
    if tool is not None and not isinstance(tool, str):
        raise check.fail(prefix + "tool", f"must be a string or null, got {tool!r}")
    return TraceStep(
        prompt_tokens=prompt,
        output_tokens=output,
        cached_tokens=cached,
        llm_latency_s=check.number(raw, "llm_latency_s", prefix),
        tool=tool,
        tool_s=check.number(raw, "tool_s", prefix),
        context_reset=reset,
        max_tokens=max_tokens,
    )


def parse_program(obj: dict[str, Any], path: str, line: int,
                  header_version: int | None) -> TraceProgram:
    """Validate one decoded program line; raise ``TraceError`` on any broken rule."""
    check = _Checker(path, line)
    version = obj.get("format_version", header_version)
    if version is None:
        raise check.fail("format_version", "missing: give a header line or format_version on every line")
    if not _is_supported(version):
        raise check.fail("format_version", f"unknown version {version!r} (supported: {sorted(SUPPORTED_VERSIONS)})")
    program_id = check.string(obj, "program_id")
    workflow = check.string(obj, "workflow")
    shared_tokens = check.integer(obj, "shared_prefix_tokens", required=False) or 0
    shared_id = check.string(obj, "shared_prefix_id", required=False)
    if shared_tokens > 0 and shared_id is None:
        raise check.fail("shared_prefix_id", "required when shared_prefix_tokens > 0")
    raw_steps = obj.get("steps")
    if raw_steps is None:
        raise check.fail("steps", "missing required field")
    if not isinstance(raw_steps, list):
        raise check.fail("steps", f"must be a list, got {type(raw_steps).__name__}")
    if not raw_steps:
        raise check.fail("steps", "must hold at least one step")
    steps: list[TraceStep] = []
    for index, raw_step in enumerate(raw_steps):
        steps.append(_parse_step(check, raw_step, index, shared_tokens,
                                 steps[-1] if steps else None))
    assert program_id is not None and workflow is not None
    return TraceProgram(
        program_id=program_id,
        workflow=workflow,
        steps=tuple(steps),
        arrival_s=check.number(obj, "arrival_s"),
        env=_parse_env(check, obj.get("env")),
        shared_prefix_tokens=shared_tokens,
        shared_prefix_id=shared_id,
        group_id=check.string(obj, "group_id", required=False),
    )


def _parse_header(obj: dict[str, Any], path: str, line: int) -> TraceHeader:
    check = _Checker(path, line)
    version = obj.get("format_version")
    if version is None:
        raise check.fail("format_version", "missing required field in header")
    if not _is_supported(version):
        raise check.fail("format_version", f"unknown version {version!r} (supported: {sorted(SUPPORTED_VERSIONS)})")
    ratio = check.number(obj, "chars_per_token")
    notes = obj.get("notes") or {}
    if not isinstance(notes, dict):
        raise check.fail("notes", "must be an object")
    return TraceHeader(
        format_version=version,
        source=obj.get("source"),
        created_by=obj.get("created_by"),
        token_counting=obj.get("token_counting"),
        chars_per_token=ratio,
        notes=notes,
    )


# ----------------------------------------------------------------------------
# reading


class TraceReader:
    """Streams a trace file: ``header`` is known after construction, programs on iteration."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._lines = self._numbered_lines()
        self.header = TraceHeader(format_version=0)
        self._pending: tuple[int, dict[str, Any]] | None = None
        self._has_header = False
        first = next(self._lines, None)
        if first is None:
            raise TraceError(self.path, None, "file", "empty trace: no header and no programs")
        number, obj = first
        if obj.get("type") == "header":
            self.header = _parse_header(obj, self.path, number)
            self._has_header = True
        else:
            self._pending = first

    def _numbered_lines(self) -> Iterator[tuple[int, dict[str, Any]]]:
        try:
            handle: TextIO = open(self.path, encoding="utf-8")
        except OSError as exc:
            raise TraceError(self.path, None, "file", f"cannot open: {exc.strerror}") from exc
        with handle:
            for number, text in enumerate(handle, start=1):
                if not text.strip():
                    continue
                try:
                    obj = json.loads(text)
                except json.JSONDecodeError as exc:
                    if not text.endswith("\n") and handle.read(1) == "":
                        raise TraceError(self.path, number, "line",
                                         f"truncated last line (invalid JSON: {exc.msg})") from exc
                    raise TraceError(self.path, number, "line", f"invalid JSON: {exc.msg} at column {exc.colno}") from exc
                if not isinstance(obj, dict):
                    raise TraceError(self.path, number, "line", f"must be a JSON object, got {type(obj).__name__}")
                yield number, obj

    def __iter__(self) -> Iterator[TraceProgram]:
        seen: dict[str, int] = {}
        version = self.header.format_version if self._has_header else None
        stream: Iterable[tuple[int, dict[str, Any]]] = self._lines
        if self._pending is not None:
            stream = _chain_one(self._pending, self._lines)
            self._pending = None
        count = 0
        for number, obj in stream:
            if obj.get("type") == "header":
                raise TraceError(self.path, number, "type", "a header is allowed only on the first line")
            program = parse_program(obj, self.path, number, version)
            if program.program_id in seen:
                raise TraceError(self.path, number, "program_id",
                                 f"duplicate program_id {program.program_id!r} (first on line {seen[program.program_id]})")
            seen[program.program_id] = number
            count += 1
            yield program
        if count == 0:
            raise TraceError(self.path, None, "file", "no programs in trace")


def _chain_one(first: tuple[int, dict[str, Any]],
               rest: Iterator[tuple[int, dict[str, Any]]]) -> Iterator[tuple[int, dict[str, Any]]]:
    yield first
    yield from rest


def iter_programs(path: str | Path) -> Iterator[TraceProgram]:
    """Yield validated programs one at a time (constant memory)."""
    yield from TraceReader(path)


def load_trace(path: str | Path) -> Trace:
    """Load and validate a whole trace."""
    reader = TraceReader(path)
    programs = tuple(reader)
    header = reader.header if reader.header.format_version else TraceHeader()
    return Trace(header=header, programs=programs)


__all__ = ["EnvSpec", "FORMAT_VERSION", "Trace", "TraceError", "TraceHeader", "TraceProgram", "TraceReader",
           "TraceStep", "iter_programs", "load_trace", "parse_program"]
