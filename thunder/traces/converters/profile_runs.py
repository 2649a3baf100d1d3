"""Read SWE-agent timing profiles: one folder per run, two JSON Lines files each.

The layout (SWE-agent's batch runner with stage timing, as the ThunderAgent
authors published it): ``<batch>/<instance_id>/prefix_cache_metrics.jsonl``
holds one line per LLM call (``step``, ``input_tokens``, ``output_tokens``,
``prefill_time`` = time to the first streamed chunk, ``decode_time`` = first
chunk to the end, ``llm_reasoning_time``), and ``stage_timings.jsonl`` one
line per stage boundary (``timestamp``, ``stage``, ``phase`` enter/exit,
``step``) for ``env_prepare`` (step 0), ``llm_reasoning``, ``tool_execution``
and ``observation_packaging``. ``<batch>/run_batch.config.yaml`` names the
number of parallel workers.

This module only reads and checks: values, not trace programs (that is
``swe_agent_profile``), so the GPU fidelity benchmark can read the same
measured times. A line that breaks a rule raises ``ProfileError`` naming the
file, the line and the field.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

METRICS_FILE = "prefix_cache_metrics.jsonl"
STAGES_FILE = "stage_timings.jsonl"
CONFIG_FILE = "run_batch.config.yaml"
STAGES = ("env_prepare", "llm_reasoning", "tool_execution", "observation_packaging")
REENTER = "reenter"  # an llm_reasoning interval the agent left to ask again (no metrics line)


class ProfileError(ValueError):
    """A profile file broke a rule; ``str()`` reads ``file:line: field: rule``."""

    def __init__(self, path: Path, line: int | None, field_name: str, rule: str) -> None:
        self.path, self.line, self.field = path, line, field_name
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {field_name}: {rule}")


@dataclass(frozen=True, slots=True)
class ProfileCall:
    """One LLM call as the client measured it (seconds, tokens)."""

    step: int
    input_tokens: int
    output_tokens: int
    ttft_s: float  # request sent to first streamed chunk
    decode_s: float  # first chunk to the last
    llm_s: float  # the whole call
    first_chunk_at_s: float | None = None  # epoch seconds of the first chunk (first_chunk_timestamp), if recorded

    @property
    def tpot_s(self) -> float | None:
        """Time per output token after the first; None for a one-token answer."""
        return self.decode_s / (self.output_tokens - 1) if self.output_tokens > 1 else None


@dataclass(frozen=True, slots=True)
class ProfileStep:
    """What happened around one call, from the stage timings (seconds)."""

    call: ProfileCall
    tool_s: float | None  # tool_execution + observation_packaging; None: not recorded
    # The agent's own time between stages: the LLM answer to the tool start, and the
    # observation to the next call (parsing, history, templating).
    agent_s: float
    hidden_calls_s: tuple[float, ...]  # earlier llm_reasoning intervals of this step left to ask again


@dataclass(frozen=True, slots=True)
class ProfileRun:
    """One SWE-agent run (one SWE-bench instance)."""

    instance_id: str
    folder: Path
    started_s: float  # first stage timestamp (epoch seconds)
    ended_s: float  # last stage timestamp
    env_prepare_s: float | None
    before_first_call_s: float  # env_prepare exit (or start) to the first llm_reasoning enter
    steps: tuple[ProfileStep, ...]
    notes: tuple[tuple[int, str, str], ...]  # (step, kind, what) the reader could not use as is


def _jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(path, None, "file", f"unreadable: {exc}") from exc
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ProfileError(path, number, "line", f"invalid JSON: {exc.msg} at column {exc.colno}") from exc
        if not isinstance(obj, dict):
            raise ProfileError(path, number, "line", f"must be a JSON object, got {type(obj).__name__}")
        rows.append((number, obj))
    if not rows:
        raise ProfileError(path, None, "file", "no lines")
    return rows


def _int(path: Path, line: int, obj: dict[str, Any], key: str, minimum: int) -> int:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProfileError(path, line, key, f"must be an integer, got {value!r}")
    if value < minimum:
        raise ProfileError(path, line, key, f"must be >= {minimum}, got {value}")
    return value


def _seconds(path: Path, line: int, obj: dict[str, Any], key: str) -> float:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ProfileError(path, line, key, f"must be a finite number >= 0, got {value!r}")
    return float(value)


def read_calls(path: Path) -> dict[int, ProfileCall]:
    """The metrics file's calls by step; a repeated step is an error."""
    calls: dict[int, ProfileCall] = {}
    for line, obj in _jsonl(path):
        step = _int(path, line, obj, "step", 1)
        if step in calls:
            raise ProfileError(path, line, "step", f"step {step} appears twice")
        calls[step] = ProfileCall(
            step=step, input_tokens=_int(path, line, obj, "input_tokens", 1),
            output_tokens=_int(path, line, obj, "output_tokens", 0),
            ttft_s=_seconds(path, line, obj, "prefill_time"), decode_s=_seconds(path, line, obj, "decode_time"),
            llm_s=_seconds(path, line, obj, "llm_reasoning_time"),
            first_chunk_at_s=_seconds(path, line, obj, "first_chunk_timestamp") if "first_chunk_timestamp" in obj
            else None)
    return calls


Interval = tuple[float, float, str | None]  # enter, exit, the exit's extra.reason


def read_stages(path: Path) -> tuple[dict[tuple[str, int], list[Interval]], float, float]:
    """Closed intervals per (stage, step) in file order, and the first and last timestamps."""
    intervals: dict[tuple[str, int], list[Interval]] = {}
    open_at: dict[tuple[str, int], tuple[int, float]] = {}
    first = last = None
    for line, obj in _jsonl(path):
        stamp = _seconds(path, line, obj, "timestamp")
        stage, phase = obj.get("stage"), obj.get("phase")
        if stage not in STAGES:
            raise ProfileError(path, line, "stage", f"must be one of {', '.join(STAGES)}, got {stage!r}")
        if phase not in ("enter", "exit"):
            raise ProfileError(path, line, "phase", f"must be 'enter' or 'exit', got {phase!r}")
        key = (stage, _int(path, line, obj, "step", 0))
        first = stamp if first is None else min(first, stamp)
        last = stamp if last is None else max(last, stamp)
        if phase == "enter":
            if key in open_at:
                raise ProfileError(path, line, "phase", f"{stage} step {key[1]} entered again before its exit "
                                                        f"(entered on line {open_at[key][0]})")
            open_at[key] = (line, stamp)
            continue
        if key not in open_at:
            raise ProfileError(path, line, "phase", f"exit of {stage} step {key[1]} without an enter")
        start = open_at.pop(key)[1]
        if stamp < start:
            raise ProfileError(path, line, "timestamp", f"exit {start - stamp:.3f} s before its enter")
        extra = obj.get("extra")
        reason = extra.get("reason") if isinstance(extra, dict) else None
        intervals.setdefault(key, []).append((start, stamp, reason if isinstance(reason, str) else None))
    for (stage, step), (line, _) in open_at.items():
        raise ProfileError(path, line, "phase", f"{stage} step {step} entered and never exited")
    assert first is not None and last is not None
    return intervals, first, last


def read_run(folder: Path) -> ProfileRun:
    """One run folder; raises ``ProfileError`` on a file that breaks a rule."""
    calls = read_calls(folder / METRICS_FILE)
    stages, first, last = read_stages(folder / STAGES_FILE)
    notes: list[tuple[int, str, str]] = []
    env = stages.get(("env_prepare", 0))
    env_prepare_s = env[-1][1] - env[-1][0] if env else None
    steps = []
    for number in sorted(calls):
        steps.append(_step(calls[number], stages, notes))
    first_llm = stages.get(("llm_reasoning", min(calls)))
    before = 0.0
    if first_llm:
        before = max(0.0, first_llm[0][0] - (env[-1][1] if env else first))
    for stage, step in sorted(stages):
        if stage == "llm_reasoning" and step not in calls:
            notes.append((step, "llm_reasoning_without_metrics",
                          "an llm_reasoning stage without a metrics line: not a step"))
    return ProfileRun(instance_id=folder.name, folder=folder, started_s=first, ended_s=last,
                      env_prepare_s=env_prepare_s, before_first_call_s=before, steps=tuple(steps),
                      notes=tuple(notes))


def _step(call: ProfileCall, stages: dict[tuple[str, int], list[Interval]],
          notes: list[tuple[int, str, str]]) -> ProfileStep:
    step = call.step
    llm = stages.get(("llm_reasoning", step), [])
    hidden = tuple(end - start for start, end, reason in llm[:-1])
    for seconds in hidden:
        notes.append((step, "hidden_call", f"an earlier call ended {REENTER!r} after {seconds:.3f} s "
                                           "with no metrics line (the agent asked again)"))
    tool = stages.get(("tool_execution", step))
    packaging = stages.get(("observation_packaging", step))
    tool_s = None
    if tool:
        tool_s = sum(end - start for start, end, _ in tool) + sum(end - start for start, end, _ in packaging or [])
        if not packaging:
            notes.append((step, "observation_packaging_missing", "no observation_packaging stage: tool_s is "
                                                                 "tool_execution alone"))
    else:
        notes.append((step, "tool_s_absent", "no tool_execution stage: tool_s left absent"))
    agent_s = 0.0
    if llm and tool:
        agent_s += max(0.0, tool[0][0] - llm[-1][1])
    last_stages = packaging or tool or llm
    after = last_stages[-1] if last_stages else None
    following = stages.get(("llm_reasoning", step + 1))
    if after is not None and following:
        agent_s += max(0.0, following[0][0] - after[1])
    return ProfileStep(call=call, tool_s=tool_s, agent_s=agent_s, hidden_calls_s=hidden)


def find_run_folders(path: Path) -> list[Path]:
    """Folders under ``path`` (or ``path`` itself) that hold a metrics file, sorted."""
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such folder")
    if (path / METRICS_FILE).exists():
        return [path]
    return sorted(p.parent for p in path.rglob(METRICS_FILE))


def num_workers(batch_folder: Path) -> int | None:
    """``num_workers`` from the batch's ``run_batch.config.yaml``, or None if absent.

    SWE-agent writes the config as one YAML single-quoted scalar holding JSON;
    that is all this reads (no YAML library): quotes are doubled inside it."""
    path = batch_folder / CONFIG_FILE
    if not path.exists():
        return None
    text = path.read_text(encoding="utf-8").strip()
    if text.startswith("'") and text.endswith("'"):
        text = text[1:-1].replace("''", "'")
    try:
        # YAML folds a quoted scalar's line breaks into spaces; JSON does not mind them.
        value = json.loads(" ".join(text.split("\n"))).get("num_workers")
    except (json.JSONDecodeError, AttributeError) as exc:
        raise ProfileError(path, None, "num_workers", f"cannot read the config as quoted JSON: {exc}") from exc
    return value if isinstance(value, int) and not isinstance(value, bool) else None
