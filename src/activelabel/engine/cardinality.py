"""The cardinality guard (failure mode F3: cardinality explosion).

The first ``limit`` distinct values of a label pass; every later new value
becomes the overflow value. With a ``window`` the set of admitted values is
forgotten every ``window`` seconds, so a slowly changing population is not
locked out forever.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import Any


class CardinalityGuard:
    """Admits at most ``limit`` distinct values per window; counts the overflow."""

    __slots__ = ("_clock", "_seen", "_window_end", "limit", "overflow_value", "overflowed", "window")

    def __init__(
        self,
        limit: int,
        overflow_value: str = "__other__",
        window: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.overflow_value = overflow_value
        self.window = window
        self._clock = clock
        self._seen: set[Hashable] = set()
        self._window_end = clock() + window if window else float("inf")
        self.overflowed = 0

    def admit(self, value: Any) -> Any:
        """``value`` itself if admitted, else the overflow value."""
        if self.window is not None:
            now = self._clock()
            if now >= self._window_end:
                self._seen.clear()
                self._window_end = now + self.window
        seen = self._seen
        if value in seen:
            return value
        if len(seen) < self.limit:
            seen.add(value)
            return value
        self.overflowed += 1
        return self.overflow_value

    def admit_many(self, values: list[Any]) -> list[int]:
        """``admit`` of each value in order (the batch path); the positions that overflowed.

        Without a window the set only grows until it is full, so the values admitted are
        the first new ones in order of first appearance, and every other new value
        overflows: one pass, not one call per value.
        """
        if self.window is not None:  # the clock is read per value, as per event
            out = []
            for i, v in enumerate(values):
                before = self.overflowed
                self.admit(v)
                if self.overflowed != before:
                    out.append(i)
            return out
        seen = self._seen
        room = self.limit - len(seen)
        if room > 0:
            for v in dict.fromkeys(values):
                if v not in seen:
                    seen.add(v)
                    room -= 1
                    if room == 0:
                        break
        if seen.issuperset(values):
            return []
        over = [i for i, v in enumerate(values) if v not in seen]
        self.overflowed += len(over)
        return over

    def admit_everything(self) -> None:
        """From now on admit every value and count nothing: for a labeling worker whose parent guards.

        A parallel run (engine/parallel.py) decides the guard in the parent, in input
        order, on the values the workers send back; the workers must pass every value
        through unchanged. The generated code holds this guard's ``admit``, so the guard
        is changed in place: a window no more, and a set that holds every value.
        """
        self.window = None
        self._window_end = float("inf")
        self._seen = _EVERY_VALUE

    @property
    def distinct(self) -> int:
        """Distinct values admitted in the current window."""
        return len(self._seen)


class _EveryValue(set):  # type: ignore[type-arg]
    """A set that contains every value and keeps none (``CardinalityGuard.admit_everything``)."""

    def __contains__(self, value: object) -> bool:
        return True

    def issuperset(self, other: object) -> bool:
        return True

    def add(self, value: object) -> None:
        return None


_EVERY_VALUE = _EveryValue()


class DistinctTracker:
    """Counts distinct values of an unguarded label, up to ``limit``; never changes a value."""

    __slots__ = ("_seen", "limit", "overflowed")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._seen: set[Hashable] = set()
        self.overflowed = 0  # always 0: present so stats treat guards and trackers alike

    @property
    def seen(self) -> set[Hashable]:
        """The values counted so far (generated code adds to it inline while it holds fewer than ``limit``)."""
        return self._seen

    def admit(self, value: Any) -> Any:
        seen = self._seen
        if len(seen) < self.limit:
            seen.add(value)
        return value

    def admit_many(self, values: list[Any]) -> list[int]:
        """``admit`` of each value in order (the first distinct values, until the limit); nothing overflows."""
        seen = self._seen
        if len(seen) < self.limit:
            for v in dict.fromkeys(values):
                if len(seen) >= self.limit:
                    break
                seen.add(v)
        return []

    @property
    def full(self) -> bool:
        """No value can change the tracker any more."""
        return len(self._seen) >= self.limit

    @property
    def distinct(self) -> int:
        return len(self._seen)
