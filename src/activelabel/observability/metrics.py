"""Prometheus metrics of the labeling doors: the seed's SLIs M1–M10 (names and HELP in ``catalog``).

One ``ServiceMetrics`` per registry holds the families; each front door is a
``DoorMetrics`` bound to its name (and rollout arm), so a new door adopts every
door SLI in one call::

    metrics = ServiceMetrics(registry)          # registry injected; a fresh one per test
    door = metrics.door("stream")               # M1 latency, M6 dead letters, M10 CPU for this door
    metrics.follow_runtime(runtime)             # M3-M6 from the engine's counters, read at scrape time
    timer = LabelTimer()
    ... label ...
    door.observe_labeled(timer.seconds(), events=n, dead_lettered={"bad_json": 1}, cpu_seconds=timer.cpu_seconds())

Scrape-time reading keeps the per-event hot path free of metric calls: the
engine counts in plain lists, the collector here turns them into families.

Metric labels are label *names*, rule ids, door names and fixed reason codes.
Never a label *value*: values may be ``pii`` or ``secret``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from time import perf_counter, thread_time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from activelabel.errors import ActiveLabelError
from activelabel.observability.catalog import CATALOG, COUNTER, GAUGE, HISTOGRAM, MetricSpec
from activelabel.observability.labeler_stats import totals_from_stats
from activelabel.observability.tap import DecisionTap
from activelabel.observability.windows import GroundTruthFollower, LabelDrift, bounded_labels

log = logging.getLogger("activelabel.metrics")

FRONT_DOORS = ("label", "ext_authz", "otlp_traces", "otlp_logs", "admission", "middleware", "span_processor")
STABLE_ARM = "stable"
DEFAULT_DLQ_REASON = "unlabelable_event"

# Edge labeling is expected to take tens of microseconds; the seed's target is p95 < 10 ms.
LATENCY_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
)


def _make(spec: MetricSpec, registry: CollectorRegistry, **kwargs: Any) -> Any:
    kind = {COUNTER: Counter, GAUGE: Gauge, HISTOGRAM: Histogram}[spec.kind]
    return kind(spec.name, spec.help_text, list(spec.labels), registry=registry, **kwargs)


def _family(name: str) -> Any:
    spec = CATALOG[name]
    kind = {COUNTER: CounterMetricFamily, GAUGE: GaugeMetricFamily}[spec.kind]
    return kind(name, spec.help_text, labels=list(spec.labels))


class LabelTimer:
    """Wall and CPU (thread) seconds since creation: M1 latency and M10 cost of one labeling."""

    __slots__ = ("cpu_start", "start")

    def __init__(self) -> None:
        self.start = perf_counter()
        self.cpu_start = thread_time()

    def seconds(self) -> float:
        return perf_counter() - self.start

    def cpu_seconds(self) -> float:
        return thread_time() - self.cpu_start


class PiiLeakMetrics:
    """The three M9 numbers (see research/governance.md §3.3); the privacy code counts through this.

    Use ``ServiceMetrics.pii`` inside ``serve`` (one family per registry), or
    ``PiiLeakMetrics(registry)`` where no ``ServiceMetrics`` exists.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.declared = _make(CATALOG["activelabel_pii_leaks_declared"], registry)
        self.undeclared = _make(CATALOG["activelabel_pii_undeclared"], registry)
        # Made on the first measurement: an unlabeled gauge would read 0 (recall 0) before any canary ran.
        self.canary_recall: Any = None

    def count_declared_leak(self, sink: str, label: str, n: int = 1) -> None:
        """A value of a label declared pii/secret reached ``sink`` unprotected (``label`` is the label *name*)."""
        self.declared.labels(sink, label).inc(n)

    def count_undeclared(self, sink: str, detector: str, n: int = 1) -> None:
        """A detector (``luhn_card``, ``email``, ...) fired on a value not declared sensitive."""
        self.undeclared.labels(sink, detector).inc(n)

    def set_canary_recall(self, caught: int, injected: int) -> None:
        """Canaries found at egress / canaries injected (nothing is set before a canary was injected)."""
        if injected <= 0:
            return
        if self.canary_recall is None:
            self.canary_recall = _make(CATALOG["activelabel_pii_canary_recall"], self.registry)
        self.canary_recall.set(caught / injected)


class DoorMetrics:
    """The door SLIs of one front door and arm; children are bound once (``labels()`` costs per call)."""

    def __init__(self, metrics: ServiceMetrics, door: str, arm: str = STABLE_ARM) -> None:
        self.door = door
        self.arm = arm
        self._metrics = metrics
        self._latency = metrics.label_latency.labels(door, arm)
        self._labeled_requests = metrics.requests.labels(door, "labeled", "")
        self._events = metrics.events_labeled.labels(door)
        self._cpu = metrics.label_cpu.labels(door)
        self._failed = metrics.events_failed.labels(door)
        self._dead: dict[str, Any] = {}

    def observe_labeled(
        self,
        seconds: float,
        events: int,
        dead_lettered: int | Mapping[str, int] = 0,
        cpu_seconds: float | None = None,
    ) -> None:
        """One request (or batch) answered with labels; ``dead_lettered`` by reason code (an int is ``unlabelable_event``)."""
        self._latency.observe(seconds)
        self._labeled_requests.inc()
        if events:
            self._events.inc(events)
        if cpu_seconds is not None and cpu_seconds > 0:
            self._cpu.inc(cpu_seconds)
        if dead_lettered:
            reasons = dead_lettered if isinstance(dead_lettered, Mapping) else {DEFAULT_DLQ_REASON: dead_lettered}
            for reason, n in reasons.items():
                if n:
                    self.count_dead_letters(reason, n)

    def count_dead_letters(self, reason: str, n: int = 1) -> None:
        """Events sent to the dead-letter output with a fixed reason code (M6)."""
        child = self._dead.get(reason)
        if child is None:
            child = self._dead[reason] = self._metrics.events_dead_lettered.labels(self.door, reason)
        child.inc(n)

    def observe_error(self, reason: str, failed_events: int = 0) -> None:
        """One request answered with an error (``reason`` is a fixed code, never user data)."""
        self._metrics.requests.labels(self.door, "error", reason).inc()
        if failed_events:
            self._failed.inc(failed_events)


class ServiceMetrics:
    """All SLI families on one injectable registry; one instance per process or app."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        def make(name: str, **kw: Any) -> Any:
            return _make(CATALOG[name], self.registry, **kw)

        self.label_latency = make("activelabel_service_label_latency_seconds", buckets=LATENCY_BUCKETS)
        self.requests = make("activelabel_service_requests")
        self.events_labeled = make("activelabel_service_events_labeled")
        self.events_dead_lettered = make("activelabel_service_events_dead_lettered")
        self.events_failed = make("activelabel_service_events_failed")
        self.label_cpu = make("activelabel_service_label_cpu_seconds")
        self.feedback_items = make("activelabel_feedback_items")
        self.record_errors = make("activelabel_store_record_errors")
        self.reloads = make("activelabel_policy_reloads")
        self.last_reload_accepted = make("activelabel_policy_last_reload_accepted")
        self.last_reload_time = make("activelabel_policy_last_reload_timestamp_seconds")
        self.rollout_aborted = make("activelabel_rollout_aborted")
        self.stream_consumer_lag = make("activelabel_stream_consumer_lag")
        self.pii = PiiLeakMetrics(self.registry)
        self.drift = LabelDrift()
        # Recent decisions for `tap` and `/ui` (an append per decision; explained only when read).
        self.tap = DecisionTap()
        self.started_at = time.time()
        self.ground_truth: GroundTruthFollower | None = None
        self._runtime: Any = None
        self._bounded_cache: tuple[Any, frozenset[str]] = (None, frozenset())
        self._doors: dict[tuple[str, str], DoorMetrics] = {}
        for door in FRONT_DOORS:
            self.door(door)
        self.registry.register(_SLICollector(self))

    def door(self, door: str, arm: str = STABLE_ARM) -> DoorMetrics:
        """The metrics of one front door (made once, then reused)."""
        bound = self._doors.get((door, arm))
        if bound is None:
            bound = self._doors[(door, arm)] = DoorMetrics(self, door, arm)
        return bound

    def follow_runtime(self, runtime: Any) -> None:
        """Export the engine's counters (M3-M6) of ``runtime`` (a ``PolicyRuntime``), read at scrape time."""
        self._runtime = runtime

    def follow_store(self, store: Any, *, window_s: float = 3600.0) -> GroundTruthFollower:
        """Follow the decision store's ground truth for M2 (windowed accuracy, confusion) and M8 (feedback delay)."""
        self.ground_truth = GroundTruthFollower(store, window_s=window_s, confusable=self._serving_bounded_labels)
        return self.ground_truth

    def _serving_bounded_labels(self) -> frozenset[str]:
        runtime = self._runtime
        if runtime is None or not runtime.ready:
            return frozenset()
        return self._bounded_of(runtime.current)

    def _bounded_of(self, snapshot: Any) -> frozenset[str]:
        # Computed once per policy snapshot: which labels' values may be metric label values.
        cached = self._bounded_cache
        if cached[0] is not snapshot:
            cached = self._bounded_cache = (snapshot, bounded_labels(snapshot.labeler.policy, snapshot.protected_labels))
        return cached[1]

    def sync_ground_truth(self) -> None:
        """Take in ground truth written since the last call (also done at every scrape)."""
        if self.ground_truth is not None:
            self.ground_truth.sync()

    def observe_decisions(self, snapshot: Any, labels: Iterable[Mapping[str, Any]]) -> None:
        """Feed the drift windows (M7) with the label dicts of decisions made by ``snapshot``'s policy."""
        self.drift.observe(snapshot.version, snapshot.label_names, snapshot.protected_labels, labels,
                           self._bounded_of(snapshot))

    # Door-name shorthands, kept for the SDK hooks and routes that pass the door each time.
    def observe_labeled(
        self, door: str, seconds: float, events: int, dead_lettered: int | Mapping[str, int] = 0,
        cpu_seconds: float | None = None, arm: str = STABLE_ARM,
    ) -> None:
        """M1 and the door counters for one request; ``arm`` during a rollout (``mixed`` for a batch of both)."""
        self.door(door, arm).observe_labeled(seconds, events, dead_lettered, cpu_seconds)

    def observe_error(self, door: str, reason: str, failed_events: int = 0) -> None:
        self.door(door).observe_error(reason, failed_events)

    def observe_reload(self, accepted: bool, trigger: str) -> None:
        self.reloads.labels("accepted" if accepted else "refused", trigger).inc()
        self.last_reload_accepted.set(1 if accepted else 0)
        self.last_reload_time.set(time.time())


class _SLICollector(Collector):
    """Families read at scrape time: engine counters (M3-M6), ground truth (M2, M8), drift (M7)."""

    def __init__(self, metrics: ServiceMetrics) -> None:
        self._metrics = metrics

    def describe(self) -> list[Metric]:
        # Returning nothing keeps registration from calling collect() before a policy exists.
        return []

    def collect(self) -> Iterable[Metric]:
        runtime = self._metrics._runtime
        if runtime is not None:
            yield from _engine_families(runtime)
        follower = self._metrics.ground_truth
        if follower is not None:
            try:
                follower.sync()
            except ActiveLabelError as exc:
                # A scrape must not fail because the store is busy or closed: export what is known.
                log.warning("ground truth not read from the store for this scrape: %s", exc)
            yield from _ground_truth_families(follower)
        yield from _drift_families(self._metrics.drift)


def _engine_families(runtime: Any) -> Iterable[Metric]:
    totals = runtime.totals()
    snapshot = runtime.current if runtime.ready else None
    serving = totals_from_stats(snapshot.labeler.stats()) if snapshot is not None else None
    serving_names = set(snapshot.label_names) if snapshot is not None else set()
    # Counters keep labels of earlier policies (they must not go backwards);
    # ratios and gauges describe the serving policy only.
    label_names = sorted(serving_names | set(totals.label_set) | set(totals.distinct))
    events = CounterMetricFamily("activelabel_labeler_events", CATALOG["activelabel_labeler_events"].help_text,
                                 value=totals.events)
    serving_events = GaugeMetricFamily("activelabel_labeler_serving_events",
                                       CATALOG["activelabel_labeler_serving_events"].help_text,
                                       value=serving.events if serving else 0)
    label_set, coverage = _family("activelabel_label_set"), _family("activelabel_label_coverage_ratio")
    distinct, limit = _family("activelabel_label_distinct_values"), _family("activelabel_label_max_cardinality")
    overflow, conflicts = _family("activelabel_label_overflow"), _family("activelabel_label_conflicts")
    specs = dict(getattr(snapshot.labeler.policy, "labels", {}) or {}) if snapshot is not None else {}
    for name in label_names:
        label_set.add_metric([name], totals.label_set.get(name, 0))
        if serving is not None and name in serving_names:
            n_set = serving.label_set.get(name, 0)
            coverage.add_metric([name], n_set / serving.events if serving.events else 0.0)
            if name in serving.distinct:
                # Only labels the engine counts values for (guarded or free-form);
                # a 0 for an enum would read as "no values seen".
                distinct.add_metric([name], serving.distinct[name])
            max_card = getattr(specs.get(name), "max_cardinality", None)
            if max_card:
                limit.add_metric([name], max_card)
        overflow.add_metric([name], totals.overflow.get(name, 0))
        conflicts.add_metric([name], totals.conflicts.get(name, 0))
    yield from (events, serving_events, label_set, coverage, distinct, limit, overflow, conflicts)

    matches, errors = _family("activelabel_rule_matches"), _family("activelabel_rule_errors")
    for rule in sorted(set(totals.rule_matches) | set(totals.rule_errors)):
        matches.add_metric([rule], totals.rule_matches.get(rule, 0))
        errors.add_metric([rule], totals.rule_errors.get(rule, 0))
    yield from (matches, errors)

    if snapshot is not None:
        circuit = _family("activelabel_model_circuit_open")
        stats = snapshot.labeler.stats()
        for model, state in sorted((getattr(stats, "models", None) or {}).items()):
            breaker = state.get("breaker") or {}
            circuit.add_metric([model], 1.0 if breaker.get("state") == "open" else 0.0)
        yield circuit
        info = InfoMetricFamily("activelabel_policy", CATALOG["activelabel_policy"].help_text, labels=[])
        info.add_metric([], {"name": snapshot.name, "version": snapshot.version})
        yield info


def _ground_truth_families(follower: GroundTruthFollower) -> Iterable[Metric]:
    agreement = _family("activelabel_label_feedback")
    for label, (correct, incorrect) in sorted(follower.agreement.items()):
        agreement.add_metric([label, "correct"], correct)
        agreement.add_metric([label, "incorrect"], incorrect)
    accuracy, items = _family("activelabel_label_accuracy_ratio"), _family("activelabel_label_accuracy_window_items")
    for label, (ratio, n) in sorted(follower.accuracy().items()):
        accuracy.add_metric([label], ratio)
        items.add_metric([label], n)
    spec = CATALOG["activelabel_feedback_loop_latency_seconds"]
    delay = HistogramMetricFamily(spec.name, spec.help_text, labels=list(spec.labels))
    for label, hist in sorted(follower.delay.items()):
        delay.add_metric([label], hist.cumulative(), sum_value=hist.total)
    confusion = _family("activelabel_label_confusion")
    for key, n in sorted(follower.confusion_counts().items()):
        confusion.add_metric(list(key), n)
    yield from (agreement, accuracy, items, delay, confusion)


def _drift_families(drift: LabelDrift) -> Iterable[Metric]:
    values = _family("activelabel_label_values")
    for key, n in sorted(drift.value_counts().items()):
        values.add_metric(list(key), n)
    yield values
    psi, js = _family("activelabel_label_drift_psi"), _family("activelabel_label_drift_js_distance")
    for label, (p, j) in sorted(drift.scores().items()):
        psi.add_metric([label], p)
        js.add_metric([label], j)
    yield from (psi, js)
