"""thunder's default policy in the simulator: scenarios with known answers."""

from __future__ import annotations

from sim_builders import engine, growing, program
from test_scenarios import run


# Two programs whose prompts fit together (2 x 400 of 1,024 tokens) but whose outputs
# (2 x 300) do not: decoding overfills the cache.
DECODE_HEAVY = [program("a", [400], output=300), program("b", [400], output=300)]


def test_decode_reservation_prevents_the_preemption_the_paper_policy_suffers():
    paper = run(DECODE_HEAVY, "thunder-paper", engine(64), parallel=2, options={"decay_base": 1.0})[2]
    default = run(DECODE_HEAVY, "thunder", engine(64), parallel=2)[2]
    assert paper["preemptions"] > 0
    assert default["preemptions"] == 0 and default["recompute_tokens"] == 0


def test_without_the_reservation_the_default_policy_preempts_too():
    summary = run(DECODE_HEAVY, "thunder", engine(64), parallel=2, options={"reserve_quantile": 0.0})[2]
    assert summary["preemptions"] > 0


# Each context alone fits (600 -> 856 tokens), both together never do (test_scenarios.EXCLUSIVE).
EXCLUSIVE = [growing("a", 600, 4, grow=64, tool_s=0.5), growing("b", 600, 4, grow=64, tool_s=0.5)]


def test_returning_program_is_checked_before_it_reaches_the_engine():
    # B2: with the paper's order a returning program's larger prompt is sent first and
    # the check can only react after; checked first, nothing is ever re-prefilled.
    _, tables, summary = run(EXCLUSIVE, "thunder", engine(64), parallel=2)
    assert summary["recompute_tokens"] == 0 and summary["preemptions"] == 0
    assert len(tables.steps) == 8


def test_every_program_finishes_under_the_default_policy_on_two_replicas():
    programs = [growing(f"p{i}", 200 + 50 * i, 5, grow=80, tool_s=0.3 * (i + 1)) for i in range(6)]
    _, tables, summary = run(programs, "thunder", engine(80), parallel=4, replicas=2)
    assert summary["programs_finished"] == 6 and len(tables.steps) == 30
