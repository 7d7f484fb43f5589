"""What every zoo labeler shares: the lookup key rule, the cardinality guard, resolution.

These are the small helpers an engineer writes once next to their labelers. They
restate the documented semantics (docs/policy.md), not the engine's code: keys
match as text, a guard admits the first N distinct values (per window), a
`max_confidence` label takes the highest confidence (ties: rule order), a `vote`
label the value with the highest summed confidence (ties: the value whose first
rule comes first).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

FIXED_NOW = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
NUM = (int, float)


def is_num(x: Any) -> bool:
    """A CEL number: int or double, never bool."""
    return x.__class__ is int or x.__class__ is float


def key(x: Any) -> str | None:
    """The text a lookup table is keyed by (integral numbers as decimals); None is a miss."""
    c = x.__class__
    if c is str:
        return x
    if c is bool:
        return "true" if x else "false"
    if c is int:
        return str(x)
    if c is float:
        if x != x or x in (float("inf"), float("-inf")):
            return None
        return str(int(x)) if x.is_integer() else repr(x)
    return None


class Guard:
    """First `limit` distinct values pass (per `window` seconds of `clock`); later new ones overflow."""

    def __init__(self, limit: int, overflow: str, window: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.overflow, self.window, self.clock = limit, overflow, window, clock
        self.seen: set = set()
        self.end = clock() + window if window else float("inf")

    def __call__(self, value: Any) -> Any:
        if self.window is not None:
            t = self.clock()
            if t >= self.end:
                self.seen.clear()
                self.end = t + self.window
        seen = self.seen
        if value in seen:
            return value
        if len(seen) < self.limit:
            seen.add(value)
            return value
        return self.overflow


def no_guard(value: Any) -> Any:
    return value


def max_confidence(cands: Iterable[tuple[Any, float]]) -> Any:
    """The value of the highest-confidence candidate; the first one on ties; None if none."""
    best, best_c = None, -1.0
    for v, c in cands:
        if c > best_c:
            best, best_c = v, c
    return best


def vote(cands: Iterable[tuple[Any, float]]) -> Any:
    """The value with the highest summed confidence; ties go to the value seen first."""
    sums: dict[Any, float] = {}
    for v, c in cands:
        sums[v] = sums.get(v, 0.0) + c
    best, best_s = None, -1.0
    for v, s in sums.items():  # insertion order = order of each value's first rule
        if s > best_s:
            best, best_s = v, s
    return best


def write_csv(path: Path, header: list[str], rows: Iterable[Iterable[Any]]) -> None:
    import csv

    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def read_csv(path: Path) -> dict[str, dict[str, str]]:
    """CSV keyed by its first column, every value a string (as the policy's lookup reads it)."""
    import csv

    with open(path, newline="") as f:
        r = csv.DictReader(f, skipinitialspace=True)
        first = (r.fieldnames or [""])[0]
        return {row[first]: dict(row) for row in r}
