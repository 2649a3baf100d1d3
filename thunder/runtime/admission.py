"""Held requests as futures: the asyncio side of the policy's Hold and Restore.

``LiveCluster`` holds no asyncio objects; it calls back when a held request
may go (``on_dispatch``) or must fail (``on_reject``): the server hands it this
module's ``dispatched`` and ``rejected`` when it builds the cluster. This module
keeps one future per waiting request and bounds every wait by ``max_hold_s``,
so no client is held forever.
"""

from __future__ import annotations

import asyncio

from thunder.core.program import BackendId
from thunder.runtime.cluster import LiveCluster
from thunder.runtime.state import Ticket, TicketState


class HoldTimeout(Exception):
    """The policy did not restore the program within ``max_hold_s``."""


class Rejected(Exception):
    """The held request cannot go anywhere (released, no healthy backend)."""


class Admission:
    def __init__(self, max_hold_s: float) -> None:
        self.max_hold_s = max_hold_s
        self._futures: dict[int, asyncio.Future[BackendId]] = {}

    @property
    def waiting(self) -> int:
        return len(self._futures)

    def dispatched(self, ticket: Ticket) -> None:
        """The cluster sent the held request: its wait ends with the backend."""
        future = self._futures.get(ticket.request_id)
        if future is not None and not future.done():
            future.set_result(ticket.backend)  # type: ignore[arg-type]  # set on dispatch

    def rejected(self, ticket: Ticket, reason: str) -> None:
        """The held request cannot go anywhere: its wait ends with ``Rejected``."""
        future = self._futures.get(ticket.request_id)
        if future is not None and not future.done():
            future.set_exception(Rejected(reason))

    async def wait(self, ticket: Ticket) -> BackendId:
        """The backend the request goes to, once the policy lets it go."""
        if ticket.state is TicketState.DISPATCHED:
            assert ticket.backend is not None
            return ticket.backend
        if ticket.state is TicketState.FINISHED:
            raise Rejected("request was cancelled")
        future: asyncio.Future[BackendId] = asyncio.get_running_loop().create_future()
        self._futures[ticket.request_id] = future
        try:
            async with asyncio.timeout(self.max_hold_s):
                return await future
        except TimeoutError:
            if ticket.state is TicketState.DISPATCHED and ticket.backend is not None:
                return ticket.backend  # restored in the same instant the timer fired
            raise HoldTimeout(f"program {ticket.program_id!r} was held {self.max_hold_s:g} s by the "
                              f"policy ({ticket.hold_reason}) and not restored") from None
        finally:
            self._futures.pop(ticket.request_id, None)


def program_cap_refusal(cluster: LiveCluster, program_id: str | None, max_programs: int | None) -> str | None:
    """Why a request may not register a new program (the table is full), or None.
    A request of a known program always passes: the cap bounds what a client can
    make the proxy remember, not the work of programs already admitted."""
    if max_programs is None or len(cluster.programs) < max_programs:
        return None
    if program_id is not None and program_id in cluster.programs:
        return None
    return (f"the proxy tracks {len(cluster.programs)} programs, its limit (max_programs={max_programs}): "
            "release finished programs (POST /programs/{id}/release) or retry later")
