"""Run a grid of simulation cells on a Ray cluster: one task per cell.

Ray is optional (``pip install 'thunder[ray]'``) and imported only when this
executor is asked for. ``address``: None starts a local Ray instance for the
run and stops it after; ``"auto"`` joins the cluster this machine belongs to;
``"ray://HOST:10001"`` connects through Ray Client. Workers need thunder
installed (the same version as here).

A cell names its trace, and perhaps an engine profile, by path, and workers
on other machines may not see this machine's files. So each distinct file is
read here once, put in Ray's object store, and written by the worker that
runs a cell to its temp folder (named by content hash, so each worker writes
it once). Summaries come back with the original paths.

Results are returned in the cells' order, whatever order they finish in;
``on_result`` sees each summary as it arrives.
"""

from __future__ import annotations

import dataclasses
import hashlib
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

from thunder.sim.experiment import CellSpec, run_cell


def _local_copy(content: bytes, suffix: str) -> str:
    digest = hashlib.sha256(content).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / f"thunder-ray-{digest}{suffix}"
    if not path.exists():
        partial = path.with_suffix(path.suffix + f".{digest}.part")
        partial.write_bytes(content)
        partial.replace(path)  # atomic: two tasks on one worker never read half a file
    return str(path)


def run_shipped_cell(cell: CellSpec, trace: bytes, profile: bytes | None) -> dict[str, Any]:
    """Run one cell with its files shipped as bytes (the body of each Ray task)."""
    local = dataclasses.replace(cell, trace=_local_copy(trace, Path(cell.trace).suffix or ".jsonl"))
    if profile is not None:
        local = dataclasses.replace(local, preset=_local_copy(profile, ".json"))
    summary = run_cell(local)[0]
    summary["trace"], summary["preset"] = cell.trace, cell.preset
    return summary


def _profile_path(cell: CellSpec) -> str | None:
    """The preset, if it names a profile file rather than a built-in preset."""
    return cell.preset if Path(cell.preset).is_file() else None


def run_grid_ray(cells: Sequence[CellSpec], address: str | None = None,
                 on_result: Callable[[dict[str, Any]], None] | None = None,
                 num_cpus: int | None = None) -> list[dict[str, Any]]:
    """Run ``cells`` as Ray tasks (one CPU each); summaries in the cells' order."""
    try:
        import ray
    except ImportError as exc:
        raise RuntimeError("--executor ray needs Ray: pip install 'thunder[ray]'") from exc
    started_here = not ray.is_initialized()
    if started_here:
        options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if address is None and num_cpus is not None:
            options["num_cpus"] = num_cpus
        ray.init(address=address, **options)
    try:
        paths = {c.trace for c in cells} | {p for c in cells if (p := _profile_path(c))}
        shipped: dict[str, Any] = {path: ray.put(Path(path).read_bytes()) for path in sorted(paths)}
        task = ray.remote(num_cpus=1)(run_shipped_cell)
        refs = []
        for cell in cells:
            profile = _profile_path(cell)
            refs.append(task.remote(cell, shipped[cell.trace], shipped[profile] if profile else None))
        position = {ref: index for index, ref in enumerate(refs)}
        results: list[dict[str, Any] | None] = [None] * len(refs)
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                summary = ray.get(ref)
                results[position[ref]] = summary
                if on_result is not None:
                    on_result(summary)
        return [r for r in results if r is not None]
    finally:
        if started_here:
            ray.shutdown()
