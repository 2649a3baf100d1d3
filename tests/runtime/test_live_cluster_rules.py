"""LiveCluster's rules on a fake clock, no sockets: phases, marks, failures,
released ids named again, backends going away."""

from __future__ import annotations

from thunder.core.program import Phase, Status
from thunder.core.view import Pause
from thunder.policies.registry import make_policy
from thunder.runtime.cluster import LiveCluster
from thunder.runtime.state import NO_BACKEND, BackendState, TicketState, Usage


def cluster(policy="thunder-paper", capacities=(1000,), **options):
    clock = [0.0]
    backends = [BackendState(f"b{i}", True, c, 16) for i, c in enumerate(capacities)]
    live = LiveCluster(make_policy(policy, **options), backends, clock=lambda: clock[0])
    rejected = []
    live.on_reject = lambda ticket, reason: rejected.append((ticket.program_id, reason))
    return live, clock, rejected


def test_phases_follow_requests_and_context_follows_usage():
    live, clock, _ = cluster()
    ticket = live.request_ready("p", 300)
    assert ticket.state is TicketState.DISPATCHED and live.views["p"].phase is Phase.REASONING
    clock[0] = 2.0
    live.request_done(ticket, Usage(310, 20, 0))
    view = live.views["p"]
    assert (view.phase, view.phase_since_s, view.context_tokens, view.steps_done) == (Phase.ACTING, 2.0, 330, 1)
    assert view.last_output_tokens == 20
    clock[0] = 5.0
    live.request_ready("p", 420, max_tokens=64)
    # B6: the new prompt counts: the last prompt (310, exact) plus what this request adds
    # by estimate (420 - 300: the answer and the tool's result), as the simulator counts it.
    assert live.views["p"].context_tokens == 430
    assert live.views["p"].max_output_tokens == 64
    assert live.records.steps[-1]["tool_s"] == 3.0


def test_the_new_prompt_never_counts_less_than_the_last_response_left():
    live, clock, _ = cluster()
    ticket = live.request_ready("p", 300)
    live.request_done(ticket, Usage(310, 20, 0))
    live.request_ready("p", 200)  # an estimate below the last one (a shorter body): usage is the floor
    assert live.views["p"].context_tokens == 330


def test_group_ids_reach_the_policy_and_the_programs_table():
    live, clock, _ = cluster(policy="thunder")
    ticket = live.request_ready("p", 100, group_id="prompt-7")
    assert live.views["p"].group_id == "prompt-7"
    live.request_done(ticket, Usage(100, 5), release=True)
    assert live.records.programs[-1]["group_id"] == "prompt-7"


def test_pausing_a_reasoning_program_marks_it_until_its_request_completes():
    live, clock, _ = cluster(policy="vllm")  # decides nothing itself: only our Pause applies
    ticket = live.request_ready("p", 300)
    live.apply(Pause("p"))
    assert live.views["p"].marked_for_pause and live.views["p"].status is Status.ACTIVE
    live.request_done(ticket, Usage(300, 10))
    view = live.views["p"]
    assert view.status is Status.PAUSED and view.backend is None and not view.marked_for_pause
    assert [d[1] for d in live.records.decisions] == ["mark", "pause"]


def test_a_failed_request_returns_the_program_to_acting_or_drops_a_new_one():
    live, clock, _ = cluster()
    first = live.request_ready("p", 300)
    live.request_failed(first, "aborted")
    assert "p" not in live.views  # never completed a step: nothing to keep
    done = live.request_ready("q", 300)
    live.request_done(done, Usage(300, 10))
    clock[0] = 1.0
    failed = live.request_ready("q", 300)
    live.request_failed(failed, "aborted")
    assert live.views["q"].phase is Phase.ACTING and live.programs["q"].in_flight == 0
    assert live._running_requests == [0]


def test_a_released_id_named_again_is_a_new_program():
    live, clock, _ = cluster(policy="vllm")
    old = live.request_ready("r", 100)
    assert live.release("r")
    new = live.request_ready("r", 100)
    live.request_done(old, Usage(100, 5))  # the old request completes after the release
    assert live.programs["r"].in_flight == 1 and live.views["r"].steps_done == 0
    live.request_done(new, Usage(100, 5))
    assert live.views["r"].steps_done == 1 and live._running_requests == [0]


def test_held_requests_fail_when_the_last_backend_goes_away():
    live, clock, rejected = cluster(decay_base=1.0)
    live.request_done(live.request_ready("a", 900), Usage(900, 10))
    held = live.request_ready("b", 900)
    assert held.state is TicketState.HELD
    live.update_backend(0, BackendState("b0", False, 1000, 16, reason="down"))
    assert rejected == [("b", NO_BACKEND)] and "b" not in live.views
    assert held.state is TicketState.FINISHED


def test_programs_on_a_dead_backend_move_to_a_live_one():
    live, clock, _ = cluster(capacities=(1000, 1000), decay_base=1.0)
    live.request_done(live.request_ready("a", 400), Usage(400, 10))
    home = live.views["a"].backend
    live.update_backend(home, BackendState(f"b{home}", False, 1000, 16, reason="down"))
    assert live.views["a"].status is Status.PAUSED
    clock[0] = 1.0
    ticket = live.request_ready("a", 0)
    assert ticket.state is TicketState.DISPATCHED and ticket.backend == 1 - home
    assert live.programs["a"].migrations == 1
