"""Shared converter pieces: context-reset marking, text token counting, tool-time specs."""

from __future__ import annotations

import random

import pytest

from thunder.traces import TraceStep
from thunder.traces.converters.chain import GREW_LESS_THAN_OUTPUT, PROMPT_SHRANK, mark_context_resets
from thunder.traces.converters.options import parse_tool_time
from thunder.traces.converters.tokens import CharCounter, fit_chars_per_token, text_of


def test_marks_only_steps_that_break_the_growth_rule() -> None:
    steps = [TraceStep(100, 10), TraceStep(110, 5), TraceStep(90, 5), TraceStep(93, 5), TraceStep(101, 1)]
    marked, causes = mark_context_resets(steps)
    assert [s.context_reset for s in marked] == [False, False, True, True, False]
    assert causes == ((2, PROMPT_SHRANK), (3, GREW_LESS_THAN_OUTPUT))
    assert [s.prompt_tokens for s in marked] == [100, 110, 90, 93, 101]  # numbers are never changed


def test_char_counter_rounds_each_piece_up() -> None:
    counter = CharCounter(4.0)
    assert [counter.count(t) for t in ("", "a", "abcd", "abcde")] == [0, 1, 1, 2]


def test_fit_and_text_helpers() -> None:
    assert fit_chars_per_token([(350, 100), (700, 200)]) == pytest.approx(3.5)
    assert fit_chars_per_token([]) is None
    assert text_of([{"type": "text", "text": "ab"}, "c", None]) == "abc"


def test_tool_time_draws() -> None:
    rng = random.Random(0)
    assert parse_tool_time("const:0.25").draw(rng) == 0.25
    draws = [parse_tool_time("exp:2").draw(rng) for _ in range(4000)]
    assert sum(draws) / len(draws) == pytest.approx(2.0, rel=0.1)
    lognormal = sorted(parse_tool_time("lognormal:0.5,0.8").draw(rng) for _ in range(4001))
    assert lognormal[2000] == pytest.approx(0.5, rel=0.1)  # the median
    assert parse_tool_time("lognormal:0.5,0.8").describe() == "lognormal:0.5,0.8"
