"""Front doors and benchmarks use only the engine's public API: no private attribute of an engine object is read outside engine/."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENGINE = ROOT / "src" / "activelabel" / "engine"


def _engine_private_names() -> set[str]:
    """Every `_name` an engine class sets on its instances (``self._x = ...``, ``__slots__``)."""
    names: set[str] = set()
    for path in ENGINE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) \
                    and isinstance(node.value, ast.Name) and node.value.id == "self" and _private(node.attr):
                names.add(node.attr)
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__slots__" for t in node.targets):
                names.update(e.value for e in ast.walk(node.value)
                             if isinstance(e, ast.Constant) and isinstance(e.value, str) and _private(e.value))
    return names


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _reads_outside_engine(names: set[str]) -> list[str]:
    """``file:line: obj._name`` for each read of one of ``names`` on something other than self/cls."""
    found = []
    files = [p for p in (ROOT / "src" / "activelabel").rglob("*.py") if ENGINE not in p.parents]
    files += sorted((ROOT / "bench").rglob("*.py"))
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Attribute) or node.attr not in names:
                continue
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue  # the module's own object: its privates are its own business
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_the_engine_private_names_are_found():
    """The scan knows the engine's private state (the counters, the generated function, the plan)."""
    assert {"_fn", "_plan", "_compiled", "_events", "_why", "_event"} <= _engine_private_names()


def test_no_front_door_or_benchmark_reads_an_engine_private_attribute():
    """Nothing in src/activelabel outside engine/, nor in bench/, reads `x._name` for a private name of an engine object."""
    assert _reads_outside_engine(_engine_private_names()) == []
