"""Property test: any sequence of requests, completions, failures, releases,
ticks and backend failures leaves LiveCluster's books consistent: no request
lost or counted twice, no negative load, statuses and bindings agree."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from thunder.core.program import Status
from thunder.policies.registry import make_policy
from thunder.runtime.cluster import LiveCluster
from thunder.runtime.state import BackendState, TicketState, Usage

PROGRAMS = ["a", "b", "c", "d", None]  # None: a one-turn request
ops = st.lists(st.one_of(
    st.tuples(st.just("ready"), st.sampled_from(PROGRAMS), st.integers(50, 900)),
    st.tuples(st.just("done"), st.integers(0, 30), st.integers(50, 900)),
    st.tuples(st.just("fail"), st.integers(0, 30), st.just(0)),
    st.tuples(st.just("release"), st.sampled_from(PROGRAMS[:-1]), st.just(0)),
    st.tuples(st.just("tick"), st.just(None), st.just(0)),
    st.tuples(st.just("health"), st.integers(0, 1), st.booleans()),
), max_size=60)


def check(live: LiveCluster, tickets: list) -> None:
    assert live.views.keys() == live.programs.keys()
    dispatched = [t for t in tickets if t.state is TicketState.DISPATCHED]
    assert sum(live._running_requests) == len(dispatched)
    assert all(r >= 0 for r in live._running_tokens)
    for pid, program in live.programs.items():
        mine = [t for t in tickets if t.owner is program]
        assert program.in_flight == sum(t.state is TicketState.DISPATCHED for t in mine)
        assert program.held == [t for t in mine if t.state is TicketState.HELD]
        view = live.views[pid]
        assert (view.backend is None) == (view.status is Status.PAUSED)
    for ticket in tickets:
        if ticket.state is TicketState.HELD:
            assert ticket.owner is live.programs.get(ticket.program_id)
    if not live.any_healthy():
        assert not any(t.state is TicketState.HELD for t in tickets)


@settings(max_examples=150, deadline=None)
@given(policy=st.sampled_from(["thunder-paper", "thunder", "vllm", "continuum"]), steps=ops)
def test_books_stay_consistent(policy, steps):
    clock = [0.0]
    options = {"decay_base": 1.0} if policy == "thunder-paper" else {}
    backends = [BackendState("b0", True, 1200, 16), BackendState("b1", True, 800, 16)]
    live = LiveCluster(make_policy(policy, **options), backends, clock=lambda: clock[0])
    tickets: list = []
    for kind, who, amount in steps:
        clock[0] += 0.25
        if kind == "ready" and live.any_healthy():
            tickets.append(live.request_ready(who, amount))
        elif kind in ("done", "fail") and tickets:
            ticket = tickets[who % len(tickets)]
            if kind == "done":
                live.request_done(ticket, Usage(amount, 10, amount // 2))
            else:
                live.request_failed(ticket, "aborted")
        elif kind == "release":
            live.release(who)
        elif kind == "tick":
            live.tick()
            live.reclaim_idle(5.0)
        elif kind == "health":
            live.update_backend(who, BackendState(f"b{who}", amount, 1200 if who == 0 else 800, 16))
        check(live, tickets)
