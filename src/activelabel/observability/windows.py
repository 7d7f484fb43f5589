"""In-process sliding windows behind three SLIs: accuracy (M2), drift (M7), feedback-loop latency (M8).

``GroundTruthFollower`` reads new ground truth from the decision store (what
``POST /v1/feedback`` writes and what ``activelabel feedback import`` writes
into the same SQLite file), so API feedback and imports count alike and once.
``LabelDrift`` keeps the first ``window`` decisions of the serving policy as the
reference and the latest ``window`` as the current window, and computes PSI and
Jensen–Shannon distance with ``activelabel.quality.drift`` (as ``report`` does).
Only numbers leave these classes: never a label value.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from activelabel.quality.drift import drift_check

# Feedback arrives minutes to days after the decision.
FEEDBACK_LATENCY_BUCKETS = (1.0, 10.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 86400.0, 7 * 86400.0)


UNSET = "(unset)"
BOUNDED_TYPES = frozenset({"enum", "bool", "bucket"})


def value_text(value: Any) -> str:
    """A declared value as a metric label value (``true``/``false`` for bools, as in the policy YAML)."""
    if value is None:
        return UNSET
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def bounded_labels(policy: Any, protected: frozenset[str]) -> frozenset[str]:
    """Labels whose values may be metric label values: declared, bounded (enum, bool, bucket) and not pii/secret."""
    out = set()
    for name, spec in (getattr(policy, "labels", {}) or {}).items():
        kind = str(getattr(getattr(spec, "type", None), "value", getattr(spec, "type", "")))
        if kind in BOUNDED_TYPES and name not in protected:
            out.add(name)
    return frozenset(out)


def agrees(recorded: Any, label: str, truth: Any) -> bool:
    """Whether the recorded decision's value of ``label`` equals the true value."""
    labels = getattr(recorded, "labels", None)
    if labels is None or label not in labels:
        return False  # a label that should have been set and was not is a miss
    value = labels[label]
    # True == 1 in Python; a bool label must match a bool truth.
    return bool(value == truth and isinstance(value, bool) == isinstance(truth, bool))


@dataclass
class HistogramCounts:
    """Bucket counts of one histogram child, exported by a collector."""

    bounds: tuple[float, ...]
    buckets: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.buckets = [0] * len(self.bounds)

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.buckets[i] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, float]]:
        return [*((repr(float(b)), float(n)) for b, n in zip(self.bounds, self.buckets, strict=True)),
                ("+Inf", float(self.count))]


class GroundTruthFollower:
    """Follows the store's ground-truth table: agreement counts, windowed accuracy, feedback delay.

    ``window_s`` is the accuracy window in seconds of ground-truth time. Only
    ground truth written after the follower starts is counted, so a restart does
    not replay history into the feedback-delay histogram.
    """

    def __init__(self, store: Any, *, window_s: float = 3600.0, clock: Callable[[], float] = time.time,
                 confusable: Callable[[], frozenset[str]] = frozenset) -> None:
        self.store = store
        self.confusable = confusable
        self.window_s = window_s
        self.clock = clock
        self._lock = threading.Lock()
        self._cursor = store.ground_truth_cursor()
        self._judged: dict[str, deque[tuple[float, bool]]] = {}
        self.agreement: dict[str, list[int]] = {}  # label -> [correct, incorrect], since start
        self.delay: dict[str, HistogramCounts] = {}
        self.confusion: Counter[tuple[str, str, str]] = Counter()  # (label, truth, predicted)

    def sync(self) -> None:
        """Read the ground truth written since the last call (cheap when there is none)."""
        with self._lock:
            rows, self._cursor = self.store.ground_truth_since(self._cursor)
            confusable = self.confusable() if rows else frozenset()
            for truth in rows:
                recorded = self.store.decision(truth.record_id)
                correct = agrees(recorded, truth.label, truth.value)
                self._judged.setdefault(truth.label, deque()).append((truth.ts, correct))
                tally = self.agreement.setdefault(truth.label, [0, 0])
                tally[0 if correct else 1] += 1
                if truth.label in confusable:
                    predicted = recorded.labels.get(truth.label) if recorded is not None else None
                    self.confusion[(truth.label, value_text(truth.value), value_text(predicted))] += 1
                if recorded is not None:
                    hist = self.delay.setdefault(truth.label, HistogramCounts(FEEDBACK_LATENCY_BUCKETS))
                    hist.observe(max(0.0, truth.ts - recorded.ts))

    def confusion_counts(self) -> dict[tuple[str, str, str], int]:
        """(label, truth, predicted) -> items, for the bounded labels (a copy)."""
        with self._lock:
            return dict(self.confusion)

    def accuracy(self) -> dict[str, tuple[float, int]]:
        """Per label: (share correct, items) over the ground truth of the last ``window_s`` seconds."""
        horizon = self.clock() - self.window_s
        out: dict[str, tuple[float, int]] = {}
        with self._lock:
            for label, judged in self._judged.items():
                while judged and judged[0][0] < horizon:
                    judged.popleft()
                if judged:
                    out[label] = (sum(1 for _, ok in judged if ok) / len(judged), len(judged))
        return out


class LabelDrift:
    """Per-label drift of the serving policy's decisions: reference window vs the latest window.

    The reference is the first ``window`` sampled decisions after a policy
    starts serving; the current window slides over the latest ``window``. One
    decision in ``sample_every`` enters the windows (a sample describes a
    distribution as well, at a tenth of the cost on the request path). A reload
    starts both again (a new policy has a new distribution by design). Labels in
    ``excluded`` (pii, secret) are never kept.

    Values of ``bounded`` labels are also counted exactly, per decision, as a
    count per combination of values (one dict increment per decision), folded
    into per-label counts when read or when combinations pass ``MAX_COMBINATIONS``.
    """

    MAX_COMBINATIONS = 4096

    def __init__(self, window: int = 1000, sample_every: int = 10) -> None:
        if window < 1 or sample_every < 1:
            raise ValueError("the drift window holds at least one decision and samples at least one in sample_every")
        self.window = window
        self.sample_every = sample_every
        self._lock = threading.Lock()
        self._version: str | None = None
        self._labels: tuple[str, ...] = ()
        self._reference: list[tuple[Any, ...]] = []
        self._current: deque[tuple[Any, ...]] = deque(maxlen=window)
        self._seen = 0
        self._bounded: tuple[str, ...] = ()
        self._combinations: Counter[tuple[Any, ...]] = Counter()
        self._values: Counter[tuple[str, str]] = Counter()  # (label, value), bounded labels only, since start

    def observe(self, version: str, label_names: Iterable[str], excluded: frozenset[str],
                decisions: Iterable[Mapping[str, Any]], bounded: frozenset[str] = frozenset()) -> None:
        """Add the label dicts of decisions made by policy ``version``; values of ``bounded`` labels are counted too."""
        with self._lock:
            if version != self._version:
                self._fold()
                self._version = version
                self._labels = tuple(n for n in label_names if n not in excluded)
                self._bounded = tuple(n for n in self._labels if n in bounded)
                self._reference = []
                self._current.clear()
                self._seen = 0
            names, counted, combinations, every = self._labels, self._bounded, self._combinations, self.sample_every
            for labels in decisions:
                if counted:
                    combinations[tuple([labels.get(n) for n in counted])] += 1
                self._seen += 1
                if self._seen % every:
                    continue
                row = tuple([labels.get(n) for n in names])
                if len(self._reference) < self.window:
                    self._reference.append(row)
                else:
                    self._current.append(row)
            if len(combinations) > self.MAX_COMBINATIONS:
                self._fold()

    def _fold(self) -> None:
        for combination, n in self._combinations.items():
            for name, val in zip(self._bounded, combination, strict=True):
                if val is not None:
                    self._values[(name, value_text(val))] += n
        self._combinations.clear()

    def value_counts(self) -> dict[tuple[str, str], int]:
        """(label, value) -> decisions, for the bounded labels (a copy, safe to read while labeling goes on)."""
        with self._lock:
            self._fold()
            return dict(self._values)

    def scores(self) -> dict[str, tuple[float, float]]:
        """Per label: (PSI, JS distance); empty until the current window has data."""
        with self._lock:
            names, reference, current = self._labels, list(self._reference), list(self._current)
        if not current:
            return {}
        out: dict[str, tuple[float, float]] = {}
        for i, name in enumerate(names):
            check = drift_check(name, [r[i] for r in reference], [r[i] for r in current])
            if check["psi"] is not None:
                out[name] = (check["psi"], check["js_distance"])
        return out
