"""Cumulative labeler counters that survive policy reloads.

The engine keeps cheap counters per ``Labeler`` (``labeler.stats()``); a reload
builds a new ``Labeler`` whose counters start at zero. Prometheus counters must
not go backwards, so the service folds the counters of retired labelers into a
baseline and reports baseline + live. ``distinct`` is a gauge of the *current*
policy's window and is never summed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class StatsTotals:
    """A normalised copy of ``LabelerStats`` (field names as in docs/internals.md, Contract 3)."""

    events: int = 0
    rule_matches: Counter[str] = field(default_factory=Counter)
    rule_errors: Counter[str] = field(default_factory=Counter)
    label_set: Counter[str] = field(default_factory=Counter)
    conflicts: Counter[str] = field(default_factory=Counter)
    overflow: Counter[str] = field(default_factory=Counter)
    distinct: dict[str, int] = field(default_factory=dict)

    def add(self, other: StatsTotals) -> StatsTotals:
        """Sum of two totals; ``distinct`` is taken from ``other`` (the newer one)."""
        return StatsTotals(
            events=self.events + other.events,
            rule_matches=self.rule_matches + other.rule_matches,
            rule_errors=self.rule_errors + other.rule_errors,
            label_set=self.label_set + other.label_set,
            conflicts=self.conflicts + other.conflicts,
            overflow=self.overflow + other.overflow,
            distinct=dict(other.distinct),
        )


def _read(stats: Any, name: str) -> Any:
    if isinstance(stats, Mapping):
        return stats.get(name)
    return getattr(stats, name, None)


def _per_key(value: Any) -> Counter[str]:
    # Counter(...) drops nothing but keeps zero entries, which we want: a label
    # that was never set still shows coverage 0 rather than vanishing.
    if not value:
        return Counter()
    if isinstance(value, Mapping):
        return Counter({str(k): int(v) for k, v in value.items()})
    return Counter()


def totals_from_stats(stats: Any) -> StatsTotals:
    """Normalise whatever ``labeler.stats()`` returns (dataclass, object or mapping)."""
    if stats is None:
        return StatsTotals()
    distinct_raw = _read(stats, "distinct") or {}
    distinct = {str(k): _count(v) for k, v in distinct_raw.items()} if isinstance(distinct_raw, Mapping) else {}
    return StatsTotals(
        events=int(_read(stats, "events") or 0),
        # The engine calls them rule_hits (times a rule matched and set its label).
        rule_matches=_per_key(_read(stats, "rule_matches") or _read(stats, "rule_hits")),
        rule_errors=_per_key(_read(stats, "rule_errors")),
        label_set=_per_key(_read(stats, "label_set")),
        conflicts=_per_key(_read(stats, "conflicts")),
        overflow=_per_key(_read(stats, "overflow")),
        distinct=distinct,
    )


def _count(value: Any) -> int:
    # The engine may report distinct values as a count or as the set itself;
    # only ever export the count (the values may be sensitive).
    if isinstance(value, int):
        return value
    try:
        return len(value)
    except TypeError:
        return int(value)
