"""What a conversion kept, skipped and doubted, and the collector that builds it.

A converter never drops a run silently: every run it cannot turn into a
program is ``skipped`` with a reason, and every value it had to leave out of a
program it did keep (a timestamp that goes backwards, a latency that includes
an unrecorded call) is a ``warning``. ``counts`` tallies the same events by
kind so the trace header can state them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Sequence, TypeVar

from thunder.traces.format import TraceProgram

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ConversionReport:
    """Outcome of one conversion.

    ``skipped`` and ``warnings`` hold ``(source, reason)`` pairs; ``source``
    names the input item (a file relative to the input folder, or a run id).
    """

    converted: int
    steps: int
    skipped: tuple[tuple[str, str], ...] = ()
    warnings: tuple[tuple[str, str], ...] = ()


class ReportBuilder:
    """Collects skips, warnings and counts while a converter walks its input."""

    def __init__(self) -> None:
        self._skipped: list[tuple[str, str]] = []
        self._warnings: list[tuple[str, str]] = []
        self.counts: Counter[str] = Counter()

    def skip(self, source: str, reason: str, kind: str) -> None:
        self._skipped.append((source, reason))
        self.counts["skipped_" + kind] += 1

    def warn(self, source: str, what: str, kind: str) -> None:
        self._warnings.append((source, what))
        self.counts[kind] += 1

    def count(self, kind: str, amount: int = 1) -> None:
        self.counts[kind] += amount

    def merge(self, other: ReportBuilder) -> None:
        """Take over another collector's entries (one run's, once it is known to be kept)."""
        self._skipped.extend(other._skipped)
        self._warnings.extend(other._warnings)
        self.counts.update(other.counts)

    def build(self, programs: Sequence[TraceProgram]) -> ConversionReport:
        return ConversionReport(
            converted=len(programs),
            steps=sum(len(p.steps) for p in programs),
            skipped=tuple(self._skipped),
            warnings=tuple(self._warnings),
        )

    def count_notes(self) -> dict[str, int]:
        """The counts as a sorted plain dict, for the trace header's notes."""
        return dict(sorted(self.counts.items()))


def keep_first(items: Sequence[tuple[str, str, T]], builder: ReportBuilder) -> list[T]:
    """Keep the first item per program id; report each later one as a duplicate.

    ``items`` are ``(source, program_id, item)``; input order decides which
    copy is kept, so callers sort their input first for a stable result.
    """
    kept: dict[str, str] = {}
    out: list[T] = []
    for source, program_id, item in items:
        if program_id in kept:
            builder.skip(source, f"duplicate run of {program_id!r} (kept {kept[program_id]})", "duplicate")
            continue
        kept[program_id] = source
        out.append(item)
    return out
