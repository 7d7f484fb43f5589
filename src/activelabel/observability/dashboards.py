"""Grafana dashboards as plain JSON: executive, on-call and debug (the seed's three).

Written by our own code against Grafana's dashboard JSON model (``schemaVersion``
pinned, one ``uid`` each, a ``datasource`` variable so one file works against
any Prometheus) rather than a generator library that lags Grafana
(grafonnet#246). Panels read the recording rules of ``rules`` where one exists
and the catalog's metric names otherwise; a test checks every name is exported.
"""

from __future__ import annotations

import json
from typing import Any

from activelabel.observability.catalog import series
from activelabel.observability.rules import DLQ, LABELED, LATENCY
from activelabel.observability.slo import SLOSpec

SCHEMA_VERSION = 39  # Grafana 10.4 / 11.x
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def _panel(title: str, targets: list[tuple[str, str]], *, kind: str = "timeseries", unit: str = "short",
           description: str = "", width: int = 12, height: int = 8, options: dict[str, Any] | None = None,
           instant: bool = False) -> dict[str, Any]:
    panel: dict[str, Any] = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "gridPos": {"h": height, "w": width, "x": 0, "y": 0},
        "targets": [
            {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "refId": chr(ord("A") + i),
             **({"instant": True, "format": "table"} if instant else {})}
            for i, (expr, legend) in enumerate(targets)
        ],
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": options or {},
    }
    return panel


def _layout(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Flow panels left to right, top to bottom on Grafana's 24-column grid; number them."""
    x = y = row_height = 0
    for i, panel in enumerate(panels, start=1):
        pos = panel["gridPos"]
        if x + pos["w"] > 24:
            x, y, row_height = 0, y + row_height, 0
        pos["x"], pos["y"] = x, y
        x += pos["w"]
        row_height = max(row_height, pos["h"])
        panel["id"] = i
    return panels


def _dashboard(uid: str, title: str, description: str, panels: list[dict[str, Any]], spec: SLOSpec,
               time_from: str) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["activelabel"],
        "timezone": "utc",
        "editable": True,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "time": {"from": time_from, "to": "now"},
        "refresh": "1m",
        "templating": {"list": [
            {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
             "current": {}, "hide": 0, "refresh": 1, "regex": "", "options": []},
        ]},
        "annotations": {"list": [
            {"name": "Policy reloads", "datasource": DATASOURCE, "enable": True, "iconColor": "blue",
             "expr": f"changes({series('activelabel_policy_last_reload_timestamp_seconds')}{{job=\"{spec.job}\"}}[2m]) > 0",
             "titleFormat": "policy reload", "textFormat": "{{instance}}"},
            {"name": "Rollouts aborted", "datasource": DATASOURCE, "enable": True, "iconColor": "red",
             "expr": f"increase({series('activelabel_rollout_aborted')}[2m]) > 0",
             "titleFormat": "rollout aborted", "textFormat": "{{reason}}"},
        ]},
        "links": [],
        "panels": _layout(panels),
    }


def executive(spec: SLOSpec) -> dict[str, Any]:
    """Coverage across streams, accuracy trends, cost per labeled event, incidents."""
    w = spec.rate_window
    return _dashboard("activelabel-executive", "activelabel / executive",
                      "Is labeling worth it and healthy? Coverage, accuracy, cost and incidents.", [
        _panel("Events labeled per door", [(f"activelabel:events_labeled:rate{w}", "{{door}}")], unit="ops",
               description="Events labeled per second on each front door (serve doors, SDK hooks, stream)."),
        _panel("Coverage per label", [(f"activelabel:label_coverage:ratio_rate{w}", "{{label}}")], unit="percentunit",
               description="Share of events that got each label (M3)."),
        _panel("Accuracy against ground truth", [("activelabel:label_accuracy:window_ratio", "{{label}}")],
               unit="percentunit", description="Share of ground-truth items agreeing with the label, sliding window (M2)."),
        _panel("CPU per labeled event", [(f"activelabel:cpu_seconds_per_event:ratio_rate{w}", "{{door}}")], unit="s",
               description="CPU seconds spent per labeled event, per door (M10)."),
        _panel("Error budget remaining", [("slo:period_error_budget_remaining:ratio", "{{sloth_slo}}")], kind="stat",
               unit="percentunit", width=8, description="Share of the period's error budget left, per SLO."),
        _panel("Incidents firing", [('count by (alertname, severity) (ALERTS{alertstate="firing", alertname=~"Activelabel.*"})',
                                     "{{alertname}} ({{severity}})")], kind="table", width=16, instant=True,
               description="activelabel alerts firing now."),
        _panel("PII leaks (declared labels)", [("sum(activelabel:pii_leaks_declared:increase1h) or vector(0)", "leaks")],
               kind="stat", width=8, description="Values of pii/secret labels that reached a sink unprotected in 1h (M9); must be 0."),
    ], spec, "now-7d")


def on_call(spec: SLOSpec) -> dict[str, Any]:
    """Latency p95 and errors, DLQ by reason, conflicts, recent policy changes and rollouts."""
    w = spec.rate_window
    requests = series("activelabel_service_requests")
    return _dashboard("activelabel-on-call", "activelabel / on-call",
                      "What is wrong right now: latency, errors, dead letters, conflicts, policy changes.", [
        _panel("Label latency p95 per door", [(f"activelabel:label_latency_seconds:p95_rate{w}", "{{door}}")], unit="s",
               description=f"95th percentile of label latency (M1); the SLO threshold is {spec.latency.threshold_seconds}s."),
        _panel("Label latency p95 per rollout arm", [(f"activelabel:label_latency_seconds:p95_by_arm_rate{w}",
                                                      "{{door}} {{arm}}")], unit="s",
               description="p95 per arm (stable, canary, shadow) during a rollout (M1)."),
        _panel("Burn rate per SLO", [("slo:current_burn_rate:ratio", "{{sloth_slo}}")], unit="short",
               description="Error ratio / error budget over the shortest window; 1 spends the budget exactly in the period."),
        _panel("Request errors by reason", [(f'sum by (door, reason) (rate({requests}{{outcome="error"}}[{w}]))',
                                             "{{door}} {{reason}}")], unit="reqps",
               description="Requests answered with an error, by fixed reason code (M6)."),
        _panel("Dead letters by reason", [(f"activelabel:dead_lettered:rate{w}", "{{door}} {{reason}}")], unit="ops",
               description="Events sent to the dead-letter output, by reason (M6)."),
        _panel("Dead-letter ratio", [(f"activelabel:dlq:ratio_rate{w}", "dead-lettered")], unit="percentunit",
               description=f"Share of events dead-lettered; pages above {spec.thresholds.dlq_spike_ratio:g}."),
        _panel("Conflict rate per label", [(f"activelabel:label_conflict:ratio_rate{w}", "{{label}}")],
               unit="percentunit", description="Events where rules disagreed on the label / events (M5)."),
        _panel("Policy serving and reloads", [
            (series("activelabel_policy"), "{{instance}} {{name}} {{version}}"),
            (f"increase({series('activelabel_policy_reloads')}[1h])", "{{outcome}} {{trigger}}"),
        ], kind="table", instant=True, description="Policy version per instance and reload attempts in the last hour."),
        _panel("Rollouts aborted and breakers open", [
            (f"increase({series('activelabel_rollout_aborted')}[1h])", "aborted: {{reason}}"),
            (series("activelabel_model_circuit_open"), "breaker open: {{model}}"),
        ], description="Rollbacks by reason; 1 while a model's circuit breaker is open."),
        _panel("Stream consumer lag", [(f"sum by (topic) ({series('activelabel_stream_consumer_lag')})", "{{topic}}")],
               description="Messages behind the end of each topic for the stream worker."),
    ], spec, "now-6h")


def debug(spec: SLOSpec) -> dict[str, Any]:
    """Confusion matrix of recent feedback, cardinality and top values, rule hits and errors per rule, drift."""
    w = spec.rate_window
    feedback = series("activelabel_label_feedback")
    return _dashboard("activelabel-debug", "activelabel / debug",
                      "Why a label is wrong: feedback, cardinality, rules, drift.", [
        _panel("Confusion matrix of recent feedback",
               [(f"sum by (label, truth, predicted) (increase({series('activelabel_label_confusion')}[{spec.feedback_window}]))",
                 "{{label}}: {{truth}} as {{predicted}}")],
               kind="table", instant=True,
               description="Ground truth (rows: truth) against the recorded value (predicted), enum and bool labels (M2)."),
        _panel("Recent feedback: correct vs incorrect per label",
               [(f"sum by (label, outcome) (increase({feedback}[{spec.feedback_window}]))", "{{label}} {{outcome}}")],
               kind="table", instant=True, description="Ground truth compared with the recorded label, every label (M2)."),
        _panel("Top values per label",
               [(f"topk by (label) (5, sum by (label, value) (rate({series('activelabel_label_values')}[{w}])))",
                 "{{label}}={{value}}")], unit="ops",
               description="The five most frequent values of each enum, bool and bucket label (pii and secret labels never)."),
        _panel("Feedback-loop latency p50 / p95", [
            (f"activelabel:feedback_loop_latency_seconds:p50_rate{spec.feedback_window}", "p50 {{label}}"),
            (f"activelabel:feedback_loop_latency_seconds:p95_rate{spec.feedback_window}", "p95 {{label}}"),
        ], unit="s", description="Decision time to ground-truth time (M8)."),
        _panel("Cardinality: distinct values and limit", [
            (series("activelabel_label_distinct_values"), "distinct {{label}}"),
            (series("activelabel_label_max_cardinality"), "limit {{label}}"),
        ], description="Distinct values per label against max_cardinality (M4)."),
        _panel("Overflowed values per label", [(f"activelabel:label_overflow:rate{w}", "{{label}}")], unit="ops",
               description="Values replaced by the overflow value (M4)."),
        _panel("Rule hits per rule", [(f"sum by (rule) (rate({series('activelabel_rule_matches')}[{w}]))", "{{rule}}")],
               unit="ops", description="Times each rule decided its label."),
        _panel("Rule errors per rule", [(f"activelabel:rule_errors:rate{w}", "{{rule}}")], unit="ops",
               description="Rule evaluations that errored, per rule (M6)."),
        _panel("Drift per label (PSI)", [("activelabel:label_drift_psi:max", "{{label}}")],
               description=f"Population stability index against the reference window (M7); tickets at {spec.thresholds.drift_psi:g}."),
        _panel("Drift per label (Jensen-Shannon)", [("activelabel:label_drift_js_distance:max", "{{label}}")],
               description="Jensen-Shannon distance against the reference window (M7)."),
        _panel("Latency heatmap", [(f'sum by (le) (rate({LATENCY}_bucket[{w}]))', "{{le}}")], kind="heatmap", width=24,
               description="Distribution of label latency across buckets (M1)."),
        _panel("Events labeled vs dead-lettered", [
            (f"sum(rate({LABELED}[{w}]))", "labeled"), (f"sum(rate({DLQ}[{w}]))", "dead-lettered"),
        ], unit="ops", width=24, description="Counts add up: in = labeled + dead-lettered."),
    ], spec, "now-6h")


DASHBOARDS = {"executive": executive, "on-call": on_call, "debug": debug}


def build_dashboards(spec: SLOSpec) -> dict[str, dict[str, Any]]:
    """File name (without ``.json``) -> dashboard JSON."""
    return {name: build(spec) for name, build in DASHBOARDS.items()}


def render_json(dashboard: dict[str, Any]) -> str:
    return json.dumps(dashboard, indent=2, ensure_ascii=False) + "\n"


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression in a dashboard (panel targets and annotations)."""
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    return exprs + [a["expr"] for a in dashboard["annotations"]["list"] if "expr" in a]
