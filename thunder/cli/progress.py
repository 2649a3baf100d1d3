"""A one-line progress display for grids of simulation cells (``thunder compare``).

It redraws one stderr line in place: overall cells done, a bar per running cell and
an estimate of the time left (elapsed time scaled by the work still to do, the work
of a cell counted by its own progress). Off when stderr is not a terminal.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, Sequence, TextIO

BAR_WIDTH = 10
SHOWN_CELLS = 4  # running cells drawn with a bar; the rest are counted


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


def bar(fraction: float, width: int = BAR_WIDTH) -> str:
    filled = int(round(max(0.0, min(1.0, fraction)) * width))
    return "#" * filled + "." * (width - filled)


class GridProgress:
    """``update(i, fraction)`` as cell ``i`` advances; ``clear()`` before printing other lines."""

    def __init__(self, labels: Sequence[str], stream: TextIO | None = None, enabled: bool | None = None,
                 clock: Callable[[], float] = time.monotonic, min_interval_s: float = 0.2) -> None:
        self.labels = list(labels)
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.fractions = [0.0] * len(self.labels)
        self.clock = clock
        self.started = clock()
        self.min_interval_s = min_interval_s
        self._drawn_at = float("-inf")
        self._width = 0

    def update(self, index: int, fraction: float) -> None:
        self.fractions[index] = max(self.fractions[index], min(1.0, fraction))
        now = self.clock()
        if now - self._drawn_at >= self.min_interval_s or fraction >= 1.0:
            self.draw()

    def line(self) -> str:
        total = len(self.fractions)
        done = sum(1 for f in self.fractions if f >= 1.0)
        overall = sum(self.fractions) / total if total else 1.0
        elapsed = self.clock() - self.started
        running = [(self.labels[i], f) for i, f in enumerate(self.fractions) if 0.0 < f < 1.0]
        parts = [f"[{bar(overall, 20)}] {done}/{total} cells"]
        parts += [f"{label} {bar(f)} {f:4.0%}" for label, f in running[:SHOWN_CELLS]]
        if len(running) > SHOWN_CELLS:
            parts.append(f"+{len(running) - SHOWN_CELLS} running")
        left = f"~{format_duration(elapsed * (1 - overall) / overall)} left" if overall > 0 else "estimating"
        parts.append(f"{format_duration(elapsed)} elapsed, {left}")
        return " | ".join(parts)

    def draw(self) -> None:
        if not self.enabled:
            return
        text = self.line()
        self.stream.write("\r" + text.ljust(self._width))
        self.stream.flush()
        self._width = len(text)
        self._drawn_at = self.clock()

    def clear(self) -> None:
        if self.enabled and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0
