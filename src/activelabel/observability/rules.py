"""Prometheus recording and alerting rules, written from the metric catalog and an SLO spec.

``build_rules(spec)`` gives the rules file as data (``render_yaml`` writes it):

* group ``activelabel-sli``: one or more recording rules per SLI (M1-M10), named
  ``activelabel:<what>:<how>`` after Prometheus' naming practice;
* one group per SLO (``labels served within the latency SLO``, ``events not
  dead-lettered``) in Sloth's shape: ``slo:sli_error:ratio_rate<window>`` per
  window, the meta rules, and a page and a ticket multiwindow multi-burn-rate
  alert, each window pair guarded by a minimum traffic (pyrra#1925);
* group ``activelabel-alerts``: labeler down, reload failing, DLQ spike, PII
  leak, accuracy drop, drift, cardinality near its limit, circuit breaker open,
  rollout aborted, Kafka lag growing.

Every alert carries ``severity`` (page | ticket), a summary, the measured value
and the threshold, and a ``runbook_url`` to its section of docs/runbooks.md.
Metric names come from ``catalog`` (``series``), so a renamed metric breaks
generation rather than silently breaking an alert.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import yaml

from activelabel.observability.catalog import series
from activelabel.observability.slo import BurnWindow, SLOSpec, duration_seconds

LATENCY = "activelabel_service_label_latency_seconds"
DLQ = series("activelabel_service_events_dead_lettered")
LABELED = series("activelabel_service_events_labeled")


@dataclass(frozen=True)
class SLO:
    """One ratio SLO: ``error`` and ``total`` are PromQL with ``{window}`` where the range goes."""

    slug: str
    title: str
    objective: float
    error: str
    total: str
    alert: str

    @property
    def budget(self) -> float:
        return round(1 - self.objective, 10)


def le_value(bound: float) -> str:
    """A bucket bound as the ``le`` label value prometheus_client writes (``0.01``, ``1.0``, ``5e-05``)."""
    return repr(float(bound))


def slos(spec: SLOSpec) -> tuple[SLO, SLO]:
    """The two SLOs of the seed: labels served within the latency SLO, events not dead-lettered."""
    doors = f'door=~"{spec.latency.doors}"'
    le = le_value(spec.latency.threshold_seconds)
    count = f"sum(rate({LATENCY}_count{{{doors}}}[{{window}}]))"
    fast = f'sum(rate({LATENCY}_bucket{{{doors},le="{le}"}}[{{window}}]))'
    dead = f"(sum(rate({DLQ}[{{window}}])) or vector(0))"
    events = f"(sum(rate({LABELED}[{{window}}])) + {dead})"
    return (
        SLO("label-latency", f"labels served within {le}s", spec.latency.objective,
            f"({count} - {fast})", count, "ActivelabelLatencyBudgetBurn"),
        SLO("events-not-dead-lettered", "events labeled, not dead-lettered", spec.dead_letter.objective,
            dead, events, "ActivelabelDeadLetterBudgetBurn"),
    )


def _anchor(alert: str) -> str:
    """The runbook section of an alert: its name in kebab case (``ActivelabelDown`` -> ``activelabel-down``)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "-", alert).lower().replace("p-i-i", "pii")


def _alert(spec: SLOSpec, name: str, expr: str, severity: str, for_: str, summary: str, description: str,
           labels: dict[str, str] | None = None) -> dict[str, Any]:
    rule: dict[str, Any] = {"alert": name, "expr": expr}
    if duration_seconds(for_) > 0:
        rule["for"] = for_
    rule["labels"] = {"severity": severity, **(labels or {})}
    rule["annotations"] = {
        "summary": summary,
        "description": description,
        "runbook_url": f"{spec.runbook_url}#{_anchor(name)}",
    }
    return rule


def _record(name: str, expr: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    rule: dict[str, Any] = {"record": name, "expr": expr}
    if labels:
        rule["labels"] = labels
    return rule


def _windows(spec: SLOSpec) -> list[str]:
    names = {spec.rate_window} | {w.short for w in spec.burn_windows} | {w.long for w in spec.burn_windows}
    return sorted(names, key=duration_seconds)


def sli_recording_rules(spec: SLOSpec) -> list[dict[str, Any]]:
    """Recording rules per SLI, on ``spec.rate_window`` (the dashboards read these)."""
    w, fw = spec.rate_window, spec.feedback_window
    events = series("activelabel_labeler_events")

    def rate(metric: str, by: str = "") -> str:
        return f"sum{f' by ({by})' if by else ''}(rate({metric}[{w}]))"

    return [
        _record(f"activelabel:label_latency_seconds:p95_rate{w}",
                f"histogram_quantile(0.95, sum by (le, door) (rate({LATENCY}_bucket[{w}])))"),
        _record(f"activelabel:label_latency_seconds:p95_by_arm_rate{w}",
                f"histogram_quantile(0.95, sum by (le, door, arm) (rate({LATENCY}_bucket[{w}])))"),
        _record(f"activelabel:events_labeled:rate{w}", rate(LABELED, "door")),
        _record(f"activelabel:label_coverage:ratio_rate{w}",
                f"{rate(series('activelabel_label_set'), 'label')} / on() group_left() {rate(events)}"),
        _record("activelabel:label_coverage:serving_ratio", f"min by (label) ({series('activelabel_label_coverage_ratio')})"),
        _record(f"activelabel:label_accuracy:ratio_rate{fw}",
                f'sum by (label) (rate({series("activelabel_label_feedback")}{{outcome="correct"}}[{fw}]))'
                f' / sum by (label) (rate({series("activelabel_label_feedback")}[{fw}]))'),
        _record("activelabel:label_accuracy:window_ratio", f"min by (label) ({series('activelabel_label_accuracy_ratio')})"),
        _record("activelabel:label_cardinality:usage_ratio",
                f"max by (label) ({series('activelabel_label_distinct_values')}"
                f" / {series('activelabel_label_max_cardinality')})"),
        _record(f"activelabel:label_overflow:rate{w}", rate(series("activelabel_label_overflow"), "label")),
        _record(f"activelabel:label_conflict:ratio_rate{w}",
                f"{rate(series('activelabel_label_conflicts'), 'label')} / on() group_left() {rate(events)}"),
        _record(f"activelabel:rule_errors:rate{w}", rate(series("activelabel_rule_errors"), "rule")),
        _record(f"activelabel:rule_error:ratio_rate{w}", f"{rate(series('activelabel_rule_errors'))} / {rate(events)}"),
        _record(f"activelabel:dead_lettered:rate{w}", rate(DLQ, "door, reason")),
        _record(f"activelabel:dlq:ratio_rate{w}",
                f"(sum(rate({DLQ}[{w}])) or vector(0)) / (sum(rate({LABELED}[{w}])) + (sum(rate({DLQ}[{w}])) or vector(0)))"),
        _record("activelabel:label_drift_psi:max", f"max by (label) ({series('activelabel_label_drift_psi')})"),
        _record("activelabel:label_drift_js_distance:max", f"max by (label) ({series('activelabel_label_drift_js_distance')})"),
        _record(f"activelabel:feedback_loop_latency_seconds:p50_rate{fw}",
                "histogram_quantile(0.5, sum by (le, label) "
                f"(rate(activelabel_feedback_loop_latency_seconds_bucket[{fw}])))"),
        _record(f"activelabel:feedback_loop_latency_seconds:p95_rate{fw}",
                "histogram_quantile(0.95, sum by (le, label) "
                f"(rate(activelabel_feedback_loop_latency_seconds_bucket[{fw}])))"),
        _record("activelabel:pii_leaks_declared:increase1h",
                f"sum by (sink, label) (increase({series('activelabel_pii_leaks_declared')}[1h]))"),
        _record("activelabel:pii_undeclared:increase1h",
                f"sum by (sink, detector) (increase({series('activelabel_pii_undeclared')}[1h]))"),
        _record(f"activelabel:cpu_seconds_per_event:ratio_rate{w}",
                f"{rate(series('activelabel_service_label_cpu_seconds'), 'door')} / {rate(LABELED, 'door')}"),
    ]


def _burn_condition(slo: SLO, selector: str, pair: BurnWindow, min_rate: float) -> str:
    threshold = f"({pair.factor:g} * {slo.budget:g})"
    # Traffic over the short window: a burst of errors in a quiet minute is not an incident.
    guard = slo.total.replace("{window}", pair.short)
    return (
        f"(max(slo:sli_error:ratio_rate{pair.short}{{{selector}}} > {threshold}) without (sloth_window)"
        f" and max(slo:sli_error:ratio_rate{pair.long}{{{selector}}} > {threshold}) without (sloth_window)"
        f" and on() ({guard} > {min_rate:g}))"
    )


def slo_group(spec: SLOSpec, slo: SLO) -> dict[str, Any]:
    """Sloth-shaped recording, meta and burn-rate alert rules for one SLO."""
    sloth = {"sloth_id": f"{spec.service}-{slo.slug}", "sloth_service": spec.service, "sloth_slo": slo.slug}
    selector = f'sloth_id="{sloth["sloth_id"]}", sloth_service="{spec.service}", sloth_slo="{slo.slug}"'
    rules: list[dict[str, Any]] = []
    for window in _windows(spec):
        expr = f"{slo.error.replace('{window}', window)} / {slo.total.replace('{window}', window)}"
        rules.append(_record(f"slo:sli_error:ratio_rate{window}", expr, {**sloth, "sloth_window": window}))
    first = _windows(spec)[0]
    rules.append(_record(
        f"slo:sli_error:ratio_rate{spec.period}",
        f"sum_over_time(slo:sli_error:ratio_rate{first}{{{selector}}}[{spec.period}])"
        f" / ignoring (sloth_window) count_over_time(slo:sli_error:ratio_rate{first}{{{selector}}}[{spec.period}])",
        {**sloth, "sloth_window": spec.period},
    ))
    days = duration_seconds(spec.period) / 86400
    rules += [
        _record("slo:objective:ratio", f"vector({slo.objective:g})", sloth),
        _record("slo:error_budget:ratio", f"vector({slo.budget:g})", sloth),
        _record("slo:time_period:days", f"vector({days:g})", sloth),
        _record("slo:current_burn_rate:ratio",
                f"slo:sli_error:ratio_rate{first}{{{selector}}} / on(sloth_id, sloth_slo, sloth_service) group_left"
                f" slo:error_budget:ratio{{{selector}}}", sloth),
        _record("slo:period_burn_rate:ratio",
                f"slo:sli_error:ratio_rate{spec.period}{{{selector}}} / on(sloth_id, sloth_slo, sloth_service) group_left"
                f" slo:error_budget:ratio{{{selector}}}", sloth),
        _record("slo:period_error_budget_remaining:ratio", f"1 - slo:period_burn_rate:ratio{{{selector}}}", sloth),
    ]
    t = spec.thresholds
    for severity, for_ in (("page", t.page_for), ("ticket", t.ticket_for)):
        pairs = [p for p in spec.burn_windows if p.severity == severity]
        if not pairs:
            continue
        expr = "\n or ".join(_burn_condition(slo, selector, p, spec.min_events_per_second) for p in pairs)
        table = ", ".join(f"{p.factor:g}x over {p.short} and {p.long}" for p in pairs)
        rules.append(_alert(
            spec, slo.alert, expr, severity, for_,
            f"activelabel is burning the error budget of '{slo.title}' too fast ({severity})",
            f"Error ratio {{{{ $value | humanizePercentage }}}} over the short window; objective {slo.objective:g}"
            f" (budget {slo.budget:g}); fires at burn rates {table}, with at least"
            f" {spec.min_events_per_second:g} events/s.",
            {**sloth, "category": slo.slug},
        ))
    return {"name": f"activelabel-slo-{slo.slug}", "rules": rules}


def plain_alerts(spec: SLOSpec, labels: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Alerts on one condition each (labeler down, PII leak, drift...)."""
    t, w, job = spec.thresholds, spec.rate_window, spec.job
    only = sorted(labels) if labels is not None else None
    label_filter = f'{{label=~"{"|".join(re.escape(n) for n in only)}"}}' if only else ""
    guard = f"on() (sum(rate({LABELED}[{w}])) + (sum(rate({DLQ}[{w}])) or vector(0)) > {spec.min_events_per_second:g})"
    return [
        # One alert per target that is down; the absent() arm only when none is known to be down
        # (no target at all, or every target up without a policy), so one outage pages once per target.
        _alert(spec, "ActivelabelDown",
               f'up{{job="{job}"}} == 0 or on() (absent(activelabel_policy_info{{job="{job}"}})'
               f' unless on() (up{{job="{job}"}} == 0))',
               "page", t.down_for, "activelabel labeler is down or serves no policy",
               f"No target of job {job} is up with a policy loaded (value {{{{ $value }}}}; expected a serving labeler)."),
        _alert(spec, "ActivelabelPolicyReloadFailing", f"{series('activelabel_policy_last_reload_accepted')} == 0",
               "ticket", t.reload_for, "the latest policy reload on {{ $labels.instance }} was refused",
               "The last reload attempt was refused (value {{ $value }}, expected 1); the previous policy keeps serving."),
        _alert(spec, "ActivelabelDeadLetterSpike",
               f"activelabel:dlq:ratio_rate{w} > {t.dlq_spike_ratio:g} and {guard}",
               "page", t.spike_for, "dead-lettered events spiked",
               f"{{{{ $value | humanizePercentage }}}} of events were dead-lettered over {w}; threshold {t.dlq_spike_ratio:g}."),
        _alert(spec, "ActivelabelPIILeak",
               f"sum by (sink, label) (increase({series('activelabel_pii_leaks_declared')}[5m])) > 0",
               "page", "0s", "a pii/secret label reached sink {{ $labels.sink }} unprotected",
               "{{ $value }} value(s) of label {{ $labels.label }} leaked in the last 5m; threshold 0 (must never happen)."),
        _alert(spec, "ActivelabelAccuracyDrop",
               f"{series('activelabel_label_accuracy_ratio')}{label_filter} < {t.accuracy_min:g}"
               f" and {series('activelabel_label_accuracy_window_items')}{label_filter} >= {t.accuracy_min_items}",
               "ticket", t.accuracy_for, "accuracy of label {{ $labels.label }} dropped",
               f"Accuracy {{{{ $value | humanizePercentage }}}} against ground truth; threshold {t.accuracy_min:g}"
               f" (with at least {t.accuracy_min_items} judged items)."),
        _alert(spec, "ActivelabelLabelDrift",
               f"{series('activelabel_label_drift_psi')}{label_filter} >= {t.drift_psi:g}",
               "ticket", t.drift_for, "label {{ $labels.label }} drifted from its reference window",
               f"PSI {{{{ $value | printf \"%.3f\" }}}}; threshold {t.drift_psi:g}."),
        _alert(spec, "ActivelabelCardinalityNearLimit",
               f"{series('activelabel_label_distinct_values')}{label_filter}"
               f" / {series('activelabel_label_max_cardinality')}{label_filter} >= {t.cardinality_usage:g}",
               "ticket", t.reload_for, "label {{ $labels.label }} is near its max_cardinality",
               f"{{{{ $value | humanizePercentage }}}} of max_cardinality used; threshold {t.cardinality_usage:g}."),
        _alert(spec, "ActivelabelCircuitBreakerOpen", f"{series('activelabel_model_circuit_open')} == 1",
               "ticket", t.down_for, "the circuit breaker of model {{ $labels.model }} is open",
               "The model is not being called (value {{ $value }}, expected 0); its labels come from rules and defaults."),
        _alert(spec, "ActivelabelRolloutAborted", f"increase({series('activelabel_rollout_aborted')}[15m]) > 0",
               "ticket", "0s", "a policy rollout was aborted ({{ $labels.reason }})",
               "{{ $value }} rollout(s) rolled back in the last 15m; threshold 0."),
        _alert(spec, "ActivelabelStreamLagGrowing",
               f"sum by (topic) (deriv({series('activelabel_stream_consumer_lag')}[{t.lag_window}])) > 0"
               f" and sum by (topic) ({series('activelabel_stream_consumer_lag')}) > {t.stream_lag_messages}",
               "ticket", t.reload_for, "the stream worker falls behind on topic {{ $labels.topic }}",
               f"Consumer lag grows by {{{{ $value | printf \"%.1f\" }}}} messages/s over {t.lag_window}"
               f" and exceeds the threshold of {t.stream_lag_messages} messages."),
    ]


def build_rules(spec: SLOSpec, labels: Iterable[str] | None = None) -> dict[str, Any]:
    """The whole rules file; ``labels`` (from ``--policy``) limits the per-label alerts to those labels."""
    groups = [{"name": "activelabel-sli", "rules": sli_recording_rules(spec)}]
    groups += [slo_group(spec, slo) for slo in slos(spec)]
    groups.append({"name": "activelabel-alerts", "rules": plain_alerts(spec, labels)})
    return {"groups": groups}


class _NoAliases(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True  # shared label dicts are written out in full, never as &anchors


def render_yaml(data: dict[str, Any], header: str) -> str:
    """YAML with a comment header, keys in the order written, no line wrapping."""
    body = yaml.dump(data, Dumper=_NoAliases, sort_keys=False, width=10_000, allow_unicode=True)
    return "".join(f"# {line}\n" for line in header.splitlines()) + body


_NAME = re.compile(r"\b(activelabel_[a-zA-Z0-9_]+|activelabel:[a-zA-Z0-9_:]+|slo:[a-zA-Z0-9_:]+)")


def referenced_names(expr: str) -> set[str]:
    """Metric and recording-rule names a PromQL expression reads (ours only: ``activelabel_*``, ``activelabel:*``, ``slo:*``)."""
    return set(_NAME.findall(expr))
