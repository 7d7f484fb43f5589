"""The CEL package's boundary: other packages use its public names, never its private modules."""

from __future__ import annotations

import ast
from pathlib import Path

import activelabel
from activelabel import cel

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "activelabel"


def _private_cel_imports(path: Path) -> list[str]:
    """Each import in ``path`` that names a private module of activelabel.cel, as ``line: module``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            targets = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in targets:
            parts = name.split(".")
            if parts[:2] == ["activelabel", "cel"] and len(parts) > 2 and parts[2].startswith("_"):
                found.append(f"{node.lineno}: {name}")
    return found


def test_no_module_outside_cel_imports_a_private_cel_module():
    """No module of the package (outside cel/) nor of bench/ imports `activelabel.cel._ast`, `_regex`, `_functions`..."""
    files = [p for p in PACKAGE.rglob("*.py") if "cel" not in p.relative_to(PACKAGE).parts[:1]]
    files += list((ROOT / "bench").rglob("*.py"))
    assert len(files) > 50  # the walk really saw the package
    offenders = {str(p.relative_to(ROOT)): hits for p in files if (hits := _private_cel_imports(p))}
    assert offenders == {}


def test_the_check_sees_a_private_import_when_there_is_one(tmp_path):
    """The import scan reports `from activelabel.cel import _ast` and `import activelabel.cel._regex`."""
    probe = tmp_path / "probe.py"
    probe.write_text("from activelabel.cel import _ast as x\nimport activelabel.cel._regex\nfrom activelabel.cel import ast\n")
    assert _private_cel_imports(probe) == ["1: activelabel.cel._ast", "2: activelabel.cel._regex"]


def test_cel_public_surface_has_what_other_packages_use():
    """The engine and policy packages find the syntax tree, RE2 matcher and function names on `activelabel.cel`."""
    assert cel.ast.select_path(cel.parse("event.a.b").root)[1] == ("event", "a", "b")
    assert cel.regex_matcher("^/api/")("/api/v1") is True
    assert {"size", "startsWith", "matches"} <= cel.function_names()
    assert activelabel.cel is cel and all(hasattr(cel, name) for name in cel.__all__)
