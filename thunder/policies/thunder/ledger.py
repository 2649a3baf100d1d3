"""One backend's counted demand during one step of the default policy.

``DefaultThunderPolicy`` builds a ``Ledger`` per healthy backend at the start of each
control step, counts every active program into it, and then tries pauses and restores
against it, so each decision sees the room the earlier ones left.
"""

from __future__ import annotations

from thunder.core.program import BackendId, Program


class Ledger:
    """Counted demand of one backend in one step. ``check`` leaves out programs
    marked for pause (they count as freed); ``resident`` keeps them (their request
    still runs, so their memory is not free for restores yet)."""

    __slots__ = ("backend_id", "capacity_tokens", "headroom_tokens", "check_tokens", "resident_tokens", "members",
                 "_prefixes", "closed")

    def __init__(self, backend_id: BackendId, capacity_tokens: int, headroom_tokens: float = 0.0) -> None:
        self.backend_id = backend_id
        self.capacity_tokens = capacity_tokens
        self.headroom_tokens = headroom_tokens
        self.check_tokens = 0.0
        self.resident_tokens = 0.0
        self.members: list[Program] = []
        self._prefixes: dict[str, int] = {}
        self.closed = False  # reserved for an aged program this step: nothing else is restored here

    def prefix_cost(self, program: Program, shared_once: bool) -> tuple[str | None, int]:
        """(prefix key counted once, or None; tokens that counting it here would add)."""
        prefix = program.shared_prefix_id
        if not shared_once or prefix is None or program.shared_prefix_tokens <= 0:
            return None, 0
        return prefix, 0 if self._prefixes.get(prefix) else program.shared_prefix_tokens

    def hold_prefix(self, prefix: str | None, tokens: int) -> None:
        if prefix is None:
            return
        self._prefixes[prefix] = self._prefixes.get(prefix, 0) + 1
        self.check_tokens += tokens
        self.resident_tokens += tokens

    @property
    def room(self) -> float:
        """Tokens a restore may still take here (capacity less what is resident and the headroom)."""
        return self.capacity_tokens - self.headroom_tokens - self.resident_tokens

    def over(self) -> float:
        """Tokens the check is over capacity by (<= 0: within)."""
        return self.check_tokens - self.capacity_tokens
