"""What changed between two policy versions, item by item (for review and rollout logs).

Compares canonical forms, so formatting, comments and include layout never show
up; a changed enricher table shows as a changed ``sha256``. Order matters for
labels (evaluation order) and rules (``first_match``), so reordering is reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._spec import Policy

_SECTIONS = (("labels", "name"), ("enrichers", "name"), ("rules", "id"), ("models", "name"), ("tests", "name"))


@dataclass(frozen=True)
class Change:
    """One changed item: ``kind`` is added, removed, changed or moved."""

    section: str
    name: str
    kind: str
    fields: tuple[tuple[str, Any, Any], ...] = ()  # (field, old, new) for "changed"; ("position", i, j) for "moved"

    def format(self) -> str:
        head = {"added": "+", "removed": "-", "changed": "~", "moved": ">"}[self.kind]
        text = f"{head} {self.section[:-1] if self.section != 'metadata' else 'metadata'} {self.name}: {self.kind}"
        for field_name, old, new in self.fields:
            text += f"\n    {field_name}: {old!r} -> {new!r}"
        return text


@dataclass(frozen=True)
class PolicyDiff:
    """The changes from ``old_version`` to ``new_version``; falsy when the policies are equivalent."""

    old_version: str
    new_version: str
    changes: tuple[Change, ...]

    def __bool__(self) -> bool:
        return bool(self.changes)

    def format(self) -> str:
        """A readable summary, one change per entry."""
        if not self.changes:
            return f"no changes ({self.new_version})"
        lines = [f"{self.old_version} -> {self.new_version}: {len(self.changes)} change(s)"]
        lines += [c.format() for c in self.changes]
        return "\n".join(lines)


def diff_policies(old: Policy, new: Policy) -> PolicyDiff:
    """The item-by-item changes from ``old`` to ``new``.

    >>> diff_policies(load_policy("v6.yaml"), load_policy("v7.yaml")).format()  # doctest: +SKIP
    """
    a, b = old.canonical(), new.canonical()
    changes: list[Change] = []
    if a["metadata"] != b["metadata"] or a["apiVersion"] != b["apiVersion"]:
        changes.append(Change("metadata", "", "changed", _field_changes(a["metadata"], b["metadata"])))
    for section, key in _SECTIONS:
        olds = {item[key]: item for item in a[section]}
        news = {item[key]: item for item in b[section]}
        for name, item in news.items():
            if name not in olds:
                changes.append(Change(section, name, "added"))
            elif item != olds[name]:
                changes.append(Change(section, name, "changed", _field_changes(olds[name], item)))
        changes += [Change(section, name, "removed") for name in olds if name not in news]
        if section in ("labels", "rules"):
            changes += _moves(section, [n for n in olds if n in news], [n for n in news if n in olds])
    return PolicyDiff(old.version, new.version, tuple(changes))


def _field_changes(old: dict[str, Any], new: dict[str, Any]) -> tuple[tuple[str, Any, Any], ...]:
    keys = list(dict.fromkeys([*old, *new]))
    return tuple((k, old.get(k), new.get(k)) for k in keys if old.get(k) != new.get(k))


def _moves(section: str, old_order: list[str], new_order: list[str]) -> list[Change]:
    """Items whose position among the items both versions share changed."""
    if old_order == new_order:
        return []
    old_pos = {n: i for i, n in enumerate(old_order)}
    return [
        Change(section, name, "moved", (("position", old_pos[name], i),))
        for i, name in enumerate(new_order)
        if old_pos[name] != i
    ]
