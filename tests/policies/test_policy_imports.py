"""STYLE.md's dependency rule: the core and the policies import no clock,
event loop, simulator or network library. Only thunder/cli/ wires worlds together."""

from __future__ import annotations

import ast
from pathlib import Path

import thunder

FORBIDDEN = {"simpy", "asyncio", "httpx", "aiohttp", "fastapi", "time"}
PACKAGE = Path(thunder.__file__).parent


def core_modules() -> list[Path]:
    top = [p for p in PACKAGE.glob("*.py") if p.name != "cli.py"]
    return sorted(top + list((PACKAGE / "policies").glob("*.py")))


def imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_core_and_policies_import_no_clock_loop_simulator_or_network():
    modules = core_modules()
    assert any(p.parent.name == "policies" for p in modules)
    offenders = {p.relative_to(PACKAGE).as_posix(): sorted(imported_roots(p) & FORBIDDEN)
                 for p in modules}
    assert {name: bad for name, bad in offenders.items() if bad} == {}
