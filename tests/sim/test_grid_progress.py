"""The progress line of `thunder compare`, and the cell progress `run_grid` reports."""

from __future__ import annotations

import io
from pathlib import Path

from thunder.cli.progress import GridProgress, format_duration
from thunder.sim.experiment import CellSpec, run_grid

ROUTING = str(Path(__file__).resolve().parents[2] / "traces" / "routing.jsonl")


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_line_shows_cells_done_a_bar_per_running_cell_and_the_time_left():
    clock = FakeClock()
    stream = io.StringIO()
    progress = GridProgress(["vllm x24", "thunder x24", "vllm x48"], stream=stream, enabled=True, clock=clock)
    clock.now = 30.0
    progress.update(0, 1.0)
    progress.update(1, 0.5)
    line = progress.line()
    # Half of the work (1.5 of 3 cells) in 30 s: about 30 s to go.
    assert "1/3 cells" in line and "thunder x24 #####....." in line and "~0:30 left" in line
    assert "vllm x24 " not in line.split("|", 2)[1]  # a finished cell has no bar of its own
    assert stream.getvalue().startswith("\r")
    progress.clear()
    assert stream.getvalue().endswith("\r")


def test_the_line_is_off_when_stderr_is_not_a_terminal():
    stream = io.StringIO()  # isatty() is False
    progress = GridProgress(["a"], stream=stream)
    progress.update(0, 0.5)
    progress.clear()
    assert not progress.enabled and stream.getvalue() == ""


def test_durations_read_as_clock_times():
    assert format_duration(59.6) == "1:00" and format_duration(3725) == "1:02:05"


def test_run_grid_reports_each_cells_progress_in_order_and_to_the_end():
    cells = [CellSpec(trace=ROUTING, policy=p, parallel=8, preset="h100-llama8b") for p in ("vllm", "thunder")]
    seen: list[tuple[int, float]] = []
    for workers in (1, 2):
        seen.clear()
        results = run_grid(cells, workers=workers, on_progress=lambda i, f: seen.append((i, f)))
        assert [r["policy"] for r in results] == ["vllm", "thunder"]
        for index in (0, 1):
            fractions = [f for i, f in seen if i == index]
            assert fractions[-1] == 1.0 and fractions == sorted(fractions)
