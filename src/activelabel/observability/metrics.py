"""Prometheus metrics of the labeling service: the seed's SLIs M1–M6.

Two kinds of metric live here:

* ``LabelerStatsCollector`` reads the engine's cumulative counters at scrape
  time (events, coverage, cardinality, overflow, conflicts, rule matches and
  errors, policy version), so the per-event hot path makes no metric calls.
* ``ServiceMetrics`` holds what only the front doors know: label latency per
  door (M1), requests labeled or answered with an error, events dead-lettered
  or failed (M6), policy reloads, and agreement of ground truth received on
  ``/v1/feedback`` with the recorded labels (M2).

Metric labels are label *names*, rule ids, front-door names and fixed reason
codes. Never a label *value*: values may be ``pii`` or ``secret``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from activelabel.observability.labeler_stats import StatsTotals

FRONT_DOORS = ("label", "ext_authz", "otlp_traces", "otlp_logs", "admission", "middleware", "span_processor")

# Edge labeling is expected to take tens of microseconds; the seed's target is p95 < 10 ms.
LATENCY_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
)

PolicyIdentity = tuple[str, str]  # (name, version)


class LabelerStatsCollector(Collector):
    """Exports the engine's counters, read when Prometheus scrapes."""

    def __init__(
        self,
        read_totals: Callable[[], StatsTotals],
        read_policy: Callable[[], PolicyIdentity | None],
        read_label_names: Callable[[], Iterable[str]] = tuple,
    ) -> None:
        self._read_totals = read_totals
        self._read_policy = read_policy
        self._read_label_names = read_label_names

    def describe(self) -> list[Metric]:
        # Returning nothing keeps registration from calling collect() before a policy exists.
        return []

    def collect(self) -> Iterable[Metric]:
        totals = self._read_totals()
        serving = set(self._read_label_names())
        # Counters keep labels of earlier policies (they must not go backwards);
        # ratios and gauges describe the serving policy only.
        label_names = sorted(serving | set(totals.label_set) | set(totals.distinct))

        yield CounterMetricFamily(
            "activelabel_labeler_events", "Events labeled by the engine (all front doors).", value=totals.events
        )
        label_set = CounterMetricFamily("activelabel_label_set", "Events on which the label was set.", labels=["label"])
        coverage = GaugeMetricFamily(
            "activelabel_label_coverage_ratio", "Events with the label set / events seen (M3).", labels=["label"]
        )
        distinct = GaugeMetricFamily(
            "activelabel_label_distinct_values",
            "Distinct values of the label in the current window (cardinality, M4).",
            labels=["label"],
        )
        overflow = CounterMetricFamily(
            "activelabel_label_overflow",
            "Values replaced by the overflow value because the label hit max_cardinality (M4).",
            labels=["label"],
        )
        conflicts = CounterMetricFamily(
            "activelabel_label_conflicts",
            "Events where several rules set the label to different values (M5).",
            labels=["label"],
        )
        for name in label_names:
            n_set = totals.label_set.get(name, 0)
            label_set.add_metric([name], n_set)
            if name in serving:
                coverage.add_metric([name], n_set / totals.events if totals.events else 0.0)
            if name in totals.distinct and name in serving:
                # Only labels the engine counts values for (guarded or free-form);
                # a 0 for an enum would read as "no values seen".
                distinct.add_metric([name], totals.distinct[name])
            overflow.add_metric([name], totals.overflow.get(name, 0))
            conflicts.add_metric([name], totals.conflicts.get(name, 0))
        yield from (label_set, coverage, distinct, overflow, conflicts)

        matches = CounterMetricFamily(
            "activelabel_rule_matches",
            "Events where the rule matched and decided its label (a match that lost resolution shows as a conflict).",
            labels=["rule"],
        )
        errors = CounterMetricFamily(
            "activelabel_rule_errors", "Rule evaluations that errored (counted, not raised; M6).", labels=["rule"]
        )
        for rule in sorted(set(totals.rule_matches) | set(totals.rule_errors)):
            matches.add_metric([rule], totals.rule_matches.get(rule, 0))
            errors.add_metric([rule], totals.rule_errors.get(rule, 0))
        yield from (matches, errors)

        identity = self._read_policy()
        if identity is not None:
            info = InfoMetricFamily("activelabel_policy", "The policy currently serving.", labels=[])
            info.add_metric([], {"name": identity[0], "version": identity[1]})
            yield info


class ServiceMetrics:
    """Front-door metrics; one instance per app, on an injectable registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.label_latency = Histogram(
            "activelabel_service_label_latency_seconds",
            "Time from request decoded to labeled response built, per front door (M1).",
            ["door"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.requests = Counter(
            "activelabel_service_requests",
            "Requests accepted by a front door, by outcome (labeled | error) and error reason.",
            ["door", "outcome", "reason"],
            registry=self.registry,
        )
        self.events_labeled = Counter(
            "activelabel_service_events_labeled", "Events labeled, per front door.", ["door"], registry=self.registry
        )
        self.events_dead_lettered = Counter(
            "activelabel_service_events_dead_lettered",
            "Events refused inside an accepted request (not an object, …) and reported back with a reason (M6).",
            ["door"],
            registry=self.registry,
        )
        self.events_failed = Counter(
            "activelabel_service_events_failed",
            "Events whose labeling raised unexpectedly (M6).",
            ["door"],
            registry=self.registry,
        )
        self.feedback_items = Counter(
            "activelabel_feedback_items",
            "Ground-truth items received on /v1/feedback, by outcome (accepted | rejected).",
            ["outcome"],
            registry=self.registry,
        )
        self.feedback_agreement = Counter(
            "activelabel_label_feedback",
            "Ground-truth items compared with the recorded decision, by label and outcome (correct | incorrect).",
            ["label", "outcome"],
            registry=self.registry,
        )
        self.accuracy = Gauge(
            "activelabel_label_accuracy_ratio",
            "Share of ground-truth items that agreed with the recorded label since start (M2).",
            ["label"],
            registry=self.registry,
        )
        self.record_errors = Counter(
            "activelabel_store_record_errors",
            "Labeled events whose decision could not be recorded in the decision store.",
            registry=self.registry,
        )
        self.reloads = Counter(
            "activelabel_policy_reloads",
            "Policy reload attempts by outcome (accepted | refused) and trigger.",
            ["outcome", "trigger"],
            registry=self.registry,
        )
        self._agreement: dict[str, list[int]] = {}  # label -> [correct, incorrect]
        # Bound children per door, made once: labels() costs a lock and a dict
        # lookup per call, which is a noticeable share of a ~50 µs request.
        self._door: dict[str, tuple[Any, Any, Any, Any]] = {}
        for door in FRONT_DOORS:
            self._bind(door)

    def _bind(self, door: str) -> tuple[Any, Any, Any, Any]:
        bound = (
            self.label_latency.labels(door),
            self.requests.labels(door, "labeled", ""),
            self.events_labeled.labels(door),
            self.events_dead_lettered.labels(door),
        )
        self.events_failed.labels(door)
        self._door[door] = bound
        return bound

    def attach(self, collector: Collector) -> None:
        """Register a scrape-time collector (the labeler stats) on this registry."""
        self.registry.register(collector)

    def observe_labeled(self, door: str, seconds: float, events: int, dead_lettered: int = 0) -> None:
        """One request answered with labels."""
        latency, requests, labeled, dead = self._door.get(door) or self._bind(door)
        latency.observe(seconds)
        requests.inc()
        if events:
            labeled.inc(events)
        if dead_lettered:
            dead.inc(dead_lettered)

    def observe_error(self, door: str, reason: str, failed_events: int = 0) -> None:
        """One request answered with an error (``reason`` is a fixed code, never user data)."""
        self.requests.labels(door, "error", reason).inc()
        if failed_events:
            self.events_failed.labels(door).inc(failed_events)

    def observe_agreement(self, label: str, correct: int, incorrect: int) -> None:
        """Ground truth compared with what was labeled (M2: accuracy over sampled ground truth)."""
        self.feedback_agreement.labels(label, "correct").inc(correct)
        self.feedback_agreement.labels(label, "incorrect").inc(incorrect)
        tally = self._agreement.setdefault(label, [0, 0])
        tally[0] += correct
        tally[1] += incorrect
        if tally[0] + tally[1]:
            self.accuracy.labels(label).set(tally[0] / (tally[0] + tally[1]))

    def observe_reload(self, accepted: bool, trigger: str) -> None:
        self.reloads.labels("accepted" if accepted else "refused", trigger).inc()
