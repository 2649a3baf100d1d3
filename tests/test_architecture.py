"""The layout's rules (docs/architecture.md), checked on the source:

* ``core/`` imports nothing of thunder outside itself; ``policies/`` only ``core/``
  and itself; ``traces/`` and ``results/`` only ``core/`` and themselves;
* ``sim/`` and ``runtime/`` never import each other (``cli/`` wires the worlds);
* no import circles between modules (``TYPE_CHECKING`` imports count);
* the core and the policies import no clock, event loop, simulator or network library.
"""

from __future__ import annotations

import ast
from pathlib import Path

import thunder

PACKAGE = Path(thunder.__file__).parent
FORBIDDEN_IN_POLICY_CORE = {"simpy", "asyncio", "httpx", "aiohttp", "fastapi", "time"}
# room -> the rooms of thunder it may import (itself always)
ALLOWED = {
    "core": set(),
    "policies": {"core"},
    "traces": {"core"},
    "results": {"core"},
    "sim": {"core", "policies", "traces", "results"},
    "runtime": {"core", "policies", "traces", "results"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path) -> list[str]:
    """Every module named by an import statement (absolute, or relative made absolute)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append(module)
            # ``from thunder.sim import kv_costs`` imports a module, not a name
            found.extend(f"{module}.{alias.name}" for alias in node.names)
    return found


def internal_graph() -> dict[str, set[str]]:
    known = modules()
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        graph[name] = {m for m in imports(path) if m in known and m != name}
    return graph


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_each_room_imports_only_the_rooms_below_it():
    offenders = []
    for module, targets in internal_graph().items():
        here = room(module)
        if here not in ALLOWED:
            continue  # cli/ and the package's own __init__ may import anything
        for target in targets:
            there = room(target)
            if there not in (here, "") and there not in ALLOWED[here]:
                offenders.append(f"{module} -> {target}")
    assert offenders == []


def test_the_package_has_the_rooms_the_rules_name():
    assert set(ALLOWED) <= {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}


def test_no_import_circles():
    graph = internal_graph()
    # Package __init__ files re-export their modules: an edge into a package is an edge
    # to its __init__, which is not part of a circle through its own submodules.
    state: dict[str, int] = {}
    circles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if node.startswith(nxt + "."):
                continue  # a module importing its own package's __init__ (parent first, always)
            if state.get(nxt) == 1:
                circles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [])
    assert circles == []


def test_core_and_policies_import_no_clock_loop_simulator_or_network():
    checked = {name: path for name, path in modules().items() if room(name) in ("core", "policies")}
    assert any(room(n) == "policies" for n in checked) and any(room(n) == "core" for n in checked)
    offenders = {name: sorted({m.split(".")[0] for m in imports(path)} & FORBIDDEN_IN_POLICY_CORE)
                 for name, path in checked.items()}
    assert {name: bad for name, bad in offenders.items() if bad} == {}
