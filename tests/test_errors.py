"""The one error hierarchy: every class lives in `activelabel.errors` and is drawn in its docstring."""

from __future__ import annotations

import importlib
import pkgutil
import re

import activelabel
from activelabel import errors


def _import_every_module() -> None:
    """Import the whole package, so a subclass defined anywhere in it is visible to `__subclasses__()`."""
    for info in pkgutil.walk_packages(activelabel.__path__, "activelabel."):
        if not info.name.endswith("__main__"):  # that one runs the CLI
            importlib.import_module(info.name)


def _drawn_tree() -> list[tuple[int, str]]:
    """(depth, class name) for each line of the tree drawn in the errors module's docstring."""
    rows = []
    for line in (errors.__doc__ or "").splitlines():
        m = re.match(r"^    ((?:│   |    )*)(?:├── |└── )?([A-Z]\w+)\b", line)
        if m and (m.group(2) == "ActiveLabelError" or "── " in line):
            depth = 0 if m.group(2) == "ActiveLabelError" else len(m.group(1)) // 4 + 1
            rows.append((depth, m.group(2)))
    return rows


def _real_tree(cls: type, depth: int = 0) -> list[tuple[int, str]]:
    """(depth, class name) of ``cls`` and its subclasses, depth first, in definition order."""
    rows = [(depth, cls.__name__)]
    for sub in cls.__subclasses__():
        rows += _real_tree(sub, depth + 1)
    return rows


def test_the_drawn_tree_is_the_real_hierarchy():
    """The docstring tree of errors.py names every subclass of ActiveLabelError, at its real place and in order."""
    _import_every_module()
    assert _drawn_tree() == _real_tree(errors.ActiveLabelError)


def test_every_error_class_is_defined_in_errors_py_and_exported():
    """No module defines its own ActiveLabelError subclass; each one is in `activelabel.errors.__all__`."""
    _import_every_module()

    def walk(cls: type) -> list[type]:
        return [cls] + [c for sub in cls.__subclasses__() for c in walk(sub)]

    for cls in walk(errors.ActiveLabelError):
        assert cls.__module__ == "activelabel.errors", f"{cls.__name__} is defined in {cls.__module__}"
        assert cls.__name__ in errors.__all__, cls.__name__


def test_old_import_paths_still_give_the_same_classes():
    """Classes that moved into errors.py are still importable where users and tests found them before."""
    from activelabel.engine.plan import RuleValueError
    from activelabel.enrich import EnricherError
    from activelabel.service import AuthConfigError, ServiceConfigError
    from activelabel.service.policy_runtime import NotReadyError
    from activelabel.stream import ValueTooLarge

    assert (EnricherError, RuleValueError, AuthConfigError, ServiceConfigError, NotReadyError, ValueTooLarge) == (
        errors.EnricherError, errors.RuleValueError, errors.AuthConfigError, errors.ServiceConfigError,
        errors.NotReadyError, errors.ValueTooLarge)
