"""Live debugging: a bounded ring of recent decisions and a fan-out to ``activelabel tap`` readers.

A front door hands every decision it made to ``DecisionTap.offer`` (or, in bulk,
``offer_many``). When nobody taps, that is one ``deque.append`` of a tuple of
references per decision: the explanation is computed, and sensitive values
protected, only when someone reads (a tap reader or the ``/ui`` page).

A tap reader (``subscribe``) gets its own bounded queue; a reader slower than
the traffic loses the oldest decisions and is told how many (``dropped``), the
labeling never waits for a reader.

What a reader sees of a decision (``render_entry``): time, door, policy
version, the labels and the decision path (per label: value, source, the rules
that matched and those that lost), all protected for the reader's clearance
with ``governance.sensitivity.protect_labels`` / ``protect_explain``. The event
itself is never shown: its fields are not in the registry, so nothing says
which of them are personal data.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from time import time
from typing import Any

from activelabel.governance.sensitivity import Clearance, protect_explain, protect_labels

#: Decisions kept for the status page's "recent decisions" (and a tap's first lines).
RECENT_CAPACITY = 50
#: Decisions a tap reader may fall behind by before the oldest are dropped.
SUBSCRIBER_CAPACITY = 1000


@dataclass(frozen=True)
class TapFilter:
    """Which decisions a reader wants: a label with a value (``label=value``, as text), a rule that matched."""

    label: tuple[str, str] | None = None
    rule: str | None = None

    @classmethod
    def parse(cls, label: str | None = None, rule: str | None = None) -> TapFilter:
        """From the ``label=L=V`` and ``rule=ID`` query parameters; ``ValueError`` says what is wrong."""
        pair: tuple[str, str] | None = None
        if label:
            name, sep, value = label.partition("=")
            if not sep or not name:
                raise ValueError(f"label filter {label!r} must read NAME=VALUE, e.g. priority=critical")
            pair = (name, value)
        return cls(pair, rule or None)

    def matches(self, labels: Mapping[str, Any], explain: Mapping[str, Any] | None) -> bool:
        if self.label is not None:
            name, want = self.label
            if name not in labels or _text(labels[name]) != want:
                return False
        if self.rule is not None:
            source = f"rule:{self.rule}"
            per_label = (explain or {}).get("labels") or {}
            if not any(source in (entry.get("matched") or ()) for entry in per_label.values()):
                return False
        return True


def _text(value: Any) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    return str(value)


TapEntry = tuple[float, str, Any, Any]
"""One decision as made: (Unix time, door, policy snapshot, decision). References only, a plain
tuple because it is built on the request path; the explanation is computed when read."""


class TapSubscriber:
    """One reader's queue; ``take`` returns what arrived and how many were dropped since the last take."""

    def __init__(self, tap_filter: TapFilter, capacity: int = SUBSCRIBER_CAPACITY) -> None:
        self.filter = tap_filter
        self._queue: deque[TapEntry] = deque(maxlen=capacity)
        self._dropped = 0
        self._ready = threading.Event()

    def push(self, entry: TapEntry) -> None:
        queue = self._queue
        if len(queue) == queue.maxlen:
            self._dropped += 1
        queue.append(entry)
        self._ready.set()

    def take(self) -> tuple[list[TapEntry], int]:
        self._ready.clear()
        entries: list[TapEntry] = []
        queue = self._queue
        while queue:
            entries.append(queue.popleft())
        dropped, self._dropped = self._dropped, 0
        return entries, dropped

    def wait(self, timeout_s: float) -> bool:
        """Block (a thread) until something arrives or ``timeout_s`` passes."""
        return self._ready.wait(timeout_s)


class DecisionTap:
    """Recent decisions of one process, and the readers tapping them. Thread-safe."""

    def __init__(self, recent: int = RECENT_CAPACITY) -> None:
        self._recent: deque[TapEntry] = deque(maxlen=recent)
        self._subscribers: tuple[TapSubscriber, ...] = ()
        self._lock = threading.Lock()

    @property
    def tapped(self) -> bool:
        """Someone is reading: doors that build decisions only on demand build them now."""
        return bool(self._subscribers)

    def offer(self, door: str, snapshot: Any, decision: Any) -> None:
        """A door made ``decision`` with ``snapshot``'s policy (the hot path: keep it an append)."""
        entry = (time(), door, snapshot, decision)
        self._recent.append(entry)
        if self._subscribers:
            for subscriber in self._subscribers:
                subscriber.push(entry)

    def offer_many(self, door: str, snapshot: Any, decisions: Iterable[Any]) -> None:
        """A batch: only the last ``recent`` are kept unless someone taps (who gets every one)."""
        now = time()
        subscribers = self._subscribers
        if not subscribers:
            maxlen = self._recent.maxlen or 0
            items = decisions if isinstance(decisions, list) else list(decisions)
            self._recent.extend((now, door, snapshot, d) for d in items[-maxlen:])
            return
        for decision in decisions:
            entry = (now, door, snapshot, decision)
            self._recent.append(entry)
            for subscriber in subscribers:
                subscriber.push(entry)

    def recent(self) -> list[TapEntry]:
        """The latest decisions, oldest first."""
        return list(self._recent)

    def subscribe(self, tap_filter: TapFilter, *, backlog: bool = True) -> TapSubscriber:
        """A new reader; with ``backlog`` it starts with the recent decisions."""
        subscriber = TapSubscriber(tap_filter)
        if backlog:
            for entry in self.recent():
                subscriber.push(entry)
        with self._lock:
            self._subscribers = (*self._subscribers, subscriber)
        return subscriber

    def unsubscribe(self, subscriber: TapSubscriber) -> None:
        with self._lock:
            self._subscribers = tuple(s for s in self._subscribers if s is not subscriber)


def render_entry(entry: TapEntry, clearance: Clearance, tap_filter: TapFilter | None = None) -> dict[str, Any] | None:
    """The JSON a reader of ``clearance`` may see of ``entry``; ``None`` when ``tap_filter`` does not match.

    Filters see the labels as the reader does: a protected value can only be matched by its protected form.
    """
    made_at, door, snapshot, decision = entry
    registry, protector = snapshot.registry, snapshot.protector
    labels = protect_labels(decision.labels, registry, clearance, protector)
    explain = decision.explain()
    if tap_filter is not None and not tap_filter.matches(labels, explain):
        return None
    shown = protect_explain(explain, registry, clearance, protector)
    path = {}
    for name, item in (shown.get("labels") or {}).items():
        if not item.get("set") and not item.get("errors"):
            continue  # an unset label with no error says nothing about this decision
        step: dict[str, Any] = {"value": item.get("value"), "source": item.get("source")}
        if item.get("confidence") is not None:
            step["confidence"] = item["confidence"]
        for key in ("matched", "lost", "errors"):
            if item.get(key):
                step[key] = item[key]
        lost = [c for c in item.get("candidates") or () if c.get("source") in set(item.get("lost") or ())]
        if lost:
            step["lost_values"] = {c["source"]: c.get("value") for c in lost}
        path[name] = step
    return {
        "time": datetime.fromtimestamp(made_at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "door": door,
        "policy": snapshot.name,
        "policy_version": snapshot.version,
        "labels": labels,
        "path": path,
    }


def format_line(entry: Mapping[str, Any]) -> str:
    """One readable line of a rendered entry (``activelabel tap`` on a terminal)."""
    if "notice" in entry:
        return f"-- {entry['notice']}"
    labels = " ".join(f"{k}={_text(v)}" for k, v in (entry.get("labels") or {}).items()) or "(no labels)"
    steps = []
    for name, step in (entry.get("path") or {}).items():
        text = f"{name}<-{step.get('source') or 'none'}"
        if step.get("lost"):
            text += " (lost: " + ", ".join(step["lost"]) + ")"
        if step.get("errors"):
            text += " (errors: " + ", ".join(str(e) for e in step["errors"]) + ")"
        steps.append(text)
    return f"{entry.get('time', '')} {entry.get('door', '')} {labels}  |  {'; '.join(steps)}"
