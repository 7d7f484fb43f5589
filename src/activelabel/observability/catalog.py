"""Every metric activelabel exports, in one table: name, type, labels, HELP and the seed's SLI.

This table is the one home of the metric names. ``metrics`` builds its
Prometheus objects from it, ``rules`` and ``dashboards`` write PromQL against
it, and a test checks that every name a rule or a panel reads is in it and that
a running ``serve`` really exports the ``service`` ones. HELP text starts with
the SLI of the seed (M1–M10) the metric measures or supports.

``exporter`` says who exports a family: ``service`` (``serve`` and the SDK
hooks, through ``ServiceMetrics``), ``stream`` (the Kafka worker), ``privacy``
(the leak counters, M9), ``rollout`` (canary / rollback).
"""

from __future__ import annotations

from dataclasses import dataclass

COUNTER = "counter"
GAUGE = "gauge"
HISTOGRAM = "histogram"
INFO = "info"


@dataclass(frozen=True)
class MetricSpec:
    """One metric family; ``name`` as written to ``prometheus_client`` (counters without ``_total``)."""

    name: str
    kind: str
    sli: str
    help: str
    labels: tuple[str, ...] = ()
    exporter: str = "service"

    @property
    def help_text(self) -> str:
        return f"{self.sli}: {self.help}"

    @property
    def series(self) -> tuple[str, ...]:
        """The sample names PromQL sees for this family."""
        if self.kind == COUNTER:
            return (self.name + "_total",)
        if self.kind == HISTOGRAM:
            return (self.name + "_bucket", self.name + "_sum", self.name + "_count")
        if self.kind == INFO:
            return (self.name + "_info",)
        return (self.name,)


_SPECS = (
    # M1: label latency per front door, and per rollout arm.
    MetricSpec("activelabel_service_label_latency_seconds", HISTOGRAM, "M1",
               "time from request decoded to labeled answer built, per front door and rollout arm (stable, canary, shadow).",
               ("door", "arm")),
    MetricSpec("activelabel_service_requests", COUNTER, "M1/M6",
               "requests accepted by a front door, by outcome (labeled | error) and error reason.",
               ("door", "outcome", "reason")),
    # M3: coverage.
    MetricSpec("activelabel_service_events_labeled", COUNTER, "M3",
               "events labeled, per front door.", ("door",)),
    MetricSpec("activelabel_labeler_events", COUNTER, "M3",
               "events labeled by the engine, all front doors, every policy served since start."),
    MetricSpec("activelabel_label_set", COUNTER, "M3",
               "events on which the label was set, every policy served since start.", ("label",)),
    MetricSpec("activelabel_label_coverage_ratio", GAUGE, "M3",
               "events with the label set / events labeled, by the policy serving now (resets on reload).", ("label",)),
    MetricSpec("activelabel_labeler_serving_events", GAUGE, "M3",
               "events labeled by the policy serving now (the denominator of the coverage ratio; resets on reload)."),
    # M4: cardinality.
    MetricSpec("activelabel_label_distinct_values", GAUGE, "M4",
               "distinct values of the label in the current window (cardinality).", ("label",)),
    MetricSpec("activelabel_label_max_cardinality", GAUGE, "M4",
               "the label's max_cardinality in the serving policy (beyond it values become the overflow value).", ("label",)),
    MetricSpec("activelabel_label_overflow", COUNTER, "M4",
               "values replaced by the overflow value because the label hit max_cardinality.", ("label",)),
    MetricSpec("activelabel_label_values", COUNTER, "M4",
               "decisions per value, for enum, bool and bucket labels not declared pii or secret (declared values only: top values).",
               ("label", "value")),
    # M5: conflicts.
    MetricSpec("activelabel_label_conflicts", COUNTER, "M5",
               "events where several rules set the label to different values.", ("label",)),
    MetricSpec("activelabel_rule_matches", COUNTER, "M5/M6",
               "events where the rule matched and decided its label (a match that lost resolution shows as a conflict).",
               ("rule",)),
    # M6: errors and dead letters.
    MetricSpec("activelabel_rule_errors", COUNTER, "M6",
               "rule evaluations that errored (counted, never raised).", ("rule",)),
    MetricSpec("activelabel_service_events_dead_lettered", COUNTER, "M6",
               "events refused inside an accepted request and reported back (dead-lettered), by door and reason.",
               ("door", "reason")),
    MetricSpec("activelabel_service_events_failed", COUNTER, "M6",
               "events whose labeling raised unexpectedly, per front door.", ("door",)),
    # M2: accuracy from ground truth.
    MetricSpec("activelabel_feedback_items", COUNTER, "M2",
               "ground-truth items received on /v1/feedback, by outcome (accepted | rejected).", ("outcome",)),
    MetricSpec("activelabel_label_feedback", COUNTER, "M2",
               "ground-truth items (API and imports) compared with the recorded label, by outcome (correct | incorrect).",
               ("label", "outcome")),
    MetricSpec("activelabel_label_confusion", COUNTER, "M2",
               "ground-truth items by true and recorded value, for enum and bool labels not declared pii or secret (confusion matrix).",
               ("label", "truth", "predicted")),
    MetricSpec("activelabel_label_accuracy_ratio", GAUGE, "M2",
               "share of ground-truth items in the sliding window that agreed with the recorded label.", ("label",)),
    MetricSpec("activelabel_label_accuracy_window_items", GAUGE, "M2",
               "ground-truth items in the accuracy window (how much evidence the ratio rests on).", ("label",)),
    MetricSpec("activelabel_store_record_errors", COUNTER, "M2",
               "labeled events whose decision could not be recorded (no ground truth can come back for them)."),
    # M7: drift.
    MetricSpec("activelabel_label_drift_psi", GAUGE, "M7",
               "population stability index of the label's values: recent window against the reference window.",
               ("label",)),
    MetricSpec("activelabel_label_drift_js_distance", GAUGE, "M7",
               "Jensen-Shannon distance of the label's values: recent window against the reference window.",
               ("label",)),
    # M8: feedback-loop latency.
    MetricSpec("activelabel_feedback_loop_latency_seconds", HISTOGRAM, "M8",
               "time from a decision being recorded to its ground truth arriving.", ("label",)),
    # M9: leaks (exported by the privacy code through PiiLeakMetrics).
    MetricSpec("activelabel_pii_leaks_declared", COUNTER, "M9",
               "values of a label declared pii or secret that reached a sink of lower clearance unprotected (must stay 0).",
               ("sink", "label"), exporter="privacy"),
    MetricSpec("activelabel_pii_undeclared", COUNTER, "M9",
               "values a PII detector found in a label or field not declared sensitive (a registry gap).",
               ("sink", "detector"), exporter="privacy"),
    MetricSpec("activelabel_pii_canary_recall", GAUGE, "M9",
               "canaries caught / canaries injected: how much the leak counts can be trusted.", exporter="privacy"),
    # M10: cost.
    MetricSpec("activelabel_service_label_cpu_seconds", COUNTER, "M10",
               "CPU seconds (thread time) spent labeling, per front door; divide by events labeled for cost per event.",
               ("door",)),
    # Operational context for every SLI: which policy serves, reloads, models, rollouts, stream lag.
    MetricSpec("activelabel_policy", INFO, "M1-M10",
               "the policy serving now (name, version); absent when no labeler is up."),
    MetricSpec("activelabel_policy_reloads", COUNTER, "M1-M10",
               "policy reload attempts by outcome (accepted | refused) and trigger.", ("outcome", "trigger")),
    MetricSpec("activelabel_policy_last_reload_accepted", GAUGE, "M1-M10",
               "1 when the latest reload attempt was accepted, 0 when it was refused (the old policy still serves)."),
    MetricSpec("activelabel_policy_last_reload_timestamp_seconds", GAUGE, "M1-M10",
               "Unix time of the latest reload attempt (start included)."),
    MetricSpec("activelabel_model_circuit_open", GAUGE, "M1/M3",
               "1 while the model's circuit breaker is open (its labels fall back to rules and defaults).", ("model",)),
    MetricSpec("activelabel_rollout_aborted", COUNTER, "M2/M6",
               "rollouts of a candidate policy aborted (rolled back) by their checks, by reason.", ("reason",),
               exporter="rollout"),
    MetricSpec("activelabel_rollout_state", GAUGE, "M2/M6",
               "1 for the state the rollout is in (progressing, paused, promoted, rolled_back, aborted), 0 for the others.",
               ("rollout", "state"), exporter="rollout"),
    MetricSpec("activelabel_rollout_step", GAUGE, "M2/M6",
               "percent of the traffic the rollout's candidate serves now (0 = shadow only).", ("rollout",),
               exporter="rollout"),
    MetricSpec("activelabel_rollout_events", COUNTER, "M2/M6",
               "events served during the rollout, by arm (serving, candidate).", ("rollout", "arm"), exporter="rollout"),
    MetricSpec("activelabel_rollout_compared", COUNTER, "M2/M6",
               "events labeled by both versions and compared label by label.", ("rollout",), exporter="rollout"),
    MetricSpec("activelabel_rollout_label_changes", COUNTER, "M2/M6",
               "compared events on which the candidate gives the label another value (counts only, never values).",
               ("rollout", "label"), exporter="rollout"),
    MetricSpec("activelabel_rollout_check_value", GAUGE, "M2/M6",
               "the value the rollout's check measured at its latest evaluation, with its verdict.",
               ("rollout", "check", "verdict"), exporter="rollout"),
    MetricSpec("activelabel_rollout_check_threshold", GAUGE, "M2/M6",
               "the threshold of a rollout check (bound: max or min), to plot beside its value.",
               ("rollout", "check", "bound"), exporter="rollout"),
    MetricSpec("activelabel_stream_consumer_lag", GAUGE, "M1",
               "messages behind the end of the partition for the stream worker's consumer group.",
               ("topic", "partition"), exporter="stream"),
)

CATALOG: dict[str, MetricSpec] = {s.name: s for s in _SPECS}


def spec(name: str) -> MetricSpec:
    """The catalog entry for ``name`` (``KeyError`` for a name nobody exports)."""
    return CATALOG[name]


def series(name: str) -> str:
    """The single PromQL sample name of a counter or gauge family (``_total`` added to counters)."""
    names = CATALOG[name].series
    if len(names) != 1:
        raise KeyError(f"{name} is a {CATALOG[name].kind}; pick one of {names}")
    return names[0]


def exported_series(exporter: str | None = None) -> frozenset[str]:
    """Every sample name in the catalog (of one exporter, or all)."""
    return frozenset(n for s in _SPECS if exporter in (None, s.exporter) for n in s.series)
