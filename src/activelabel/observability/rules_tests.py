"""The ``promtool test rules`` file matching ``rules.build_rules`` for the same SLO spec.

Each test case is a scene an on-call engineer would recognise, written as input
series at a step derived from the spec's shortest window:

* normal traffic: nothing pages, the recording rules read 0 errors;
* a latency regression: every request slower than the SLO threshold pages;
* a dead-letter spike: one event in four dead-lettered pages twice (budget burn and spike);
* a declared pii label leaking to a sink pages at once;
* the labeler down (``up == 0``) pages once per target, and no target at all pages;
* a refused reload, an accuracy drop and drift open tickets.

Expected annotations are rendered here from the same strings the rules carry,
with the values the scene produces, so a wording change in an alert shows up as
a failing ``promtool test rules`` rather than drifting unnoticed.
"""

from __future__ import annotations

import math
from typing import Any

from activelabel.observability.catalog import series
from activelabel.observability.rules import DLQ, LABELED, LATENCY, build_rules, le_value, slos
from activelabel.observability.slo import SLOSpec, duration_seconds

INSTANCE = "labeler:8080"


def _step(spec: SLOSpec) -> int:
    """Seconds between input samples: a fifth of the shortest window, at most a minute."""
    shortest = min(duration_seconds(w.short) for w in spec.burn_windows)
    return int(max(1, min(60, shortest // 5)))


def _fmt(seconds: float) -> str:
    return f"{int(seconds)}s"


class _Scene:
    def __init__(self, spec: SLOSpec, name: str, steps: int) -> None:
        self.spec = spec
        self.step = _step(spec)
        self.steps = steps
        self.case: dict[str, Any] = {"name": name, "interval": _fmt(self.step), "input_series": [],
                                     "alert_rule_test": [], "promql_expr_test": []}
        self._all = [r for g in build_rules(spec)["groups"] for r in g["rules"] if "alert" in r]

    def counter(self, metric: str, per_step: float, **labels: str) -> None:
        self.series(metric, f"0+{per_step:g}x{self.steps}", **labels)

    def series(self, metric: str, values: str, **labels: str) -> None:
        all_labels = {"job": self.spec.job, "instance": INSTANCE, **labels}
        selector = ", ".join(f'{k}="{v}"' for k, v in all_labels.items())
        self.case["input_series"].append({"series": f"{metric}{{{selector}}}", "values": values})

    def traffic(self, per_step: float, fast_share: float = 1.0, dead_per_step: float = 0.0) -> None:
        """Requests of one event each on the label door; ``fast_share`` of them within the latency threshold."""
        le = le_value(self.spec.latency.threshold_seconds)
        door = {"door": "label", "arm": "stable"}
        self.counter(f"{LATENCY}_count", per_step, **door)
        self.counter(f"{LATENCY}_bucket", per_step * fast_share, le=le, **door)
        self.counter(f"{LATENCY}_bucket", per_step, le="+Inf", **door)
        self.counter(LABELED, per_step, door="label")
        if dead_per_step:
            self.counter(DLQ, dead_per_step, door="label", reason="not_an_object")
        self.healthy()

    def healthy(self) -> None:
        self.series("up", f"1x{self.steps}")
        self.series("activelabel_policy_info", f"1x{self.steps}", name="edge", version="v1")
        self.series(series("activelabel_policy_last_reload_accepted"), f"1x{self.steps}")

    def expect(self, alert: str, at: float, fired: list[tuple[str, dict[str, str], dict[str, str]]]) -> None:
        """``fired``: (severity, extra labels, template values) of each alert instance expected firing at ``at``."""
        exp = []
        for severity, labels, values in fired:
            rule = next(r for r in self._all if r["alert"] == alert and r["labels"]["severity"] == severity)
            all_labels = {**rule["labels"], **labels}
            annotations = {k: _render(v, values, all_labels) for k, v in rule["annotations"].items()}
            exp.append({"exp_labels": all_labels, "exp_annotations": annotations})
        self.case["alert_rule_test"].append({"eval_time": _fmt(at), "alertname": alert, "exp_alerts": exp})

    def expect_value(self, expr: str, at: float, value: float, **labels: str) -> None:
        labels = {"__name__": expr.split("{")[0], **labels}
        self.case["promql_expr_test"].append(
            {"expr": expr, "eval_time": _fmt(at), "exp_samples": [{"labels": _labels_text(labels), "value": value}]})


def _labels_text(labels: dict[str, str]) -> str:
    return "{" + ", ".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else ""


def _render(template: str, values: dict[str, str], labels: dict[str, str]) -> str:
    out = template
    for form, val in values.items():
        out = out.replace(form, val)
    for key, val in labels.items():
        out = out.replace("{{ $labels." + key + " }}", val)
    return out


PCT = "{{ $value | humanizePercentage }}"
RAW = "{{ $value }}"
F3 = '{{ $value | printf "%.3f" }}'


def _ceil_steps(seconds: float, step: int) -> int:
    return math.ceil(seconds / step)


def build_rule_tests(spec: SLOSpec, rules_file: str) -> dict[str, Any]:
    """The promtool test file for ``build_rules(spec)`` written to ``rules_file``."""
    step = _step(spec)
    t = spec.thresholds
    latency_slo, dlq_slo = slos(spec)
    quick = next(w for w in spec.burn_windows if w.severity == "page")
    page_for = duration_seconds(t.page_for)
    ticket_for = duration_seconds(t.ticket_for)
    # When the quick page pair has seen a full short window and the alert's `for` has passed.
    burn_at = duration_seconds(quick.short) + page_for + 3 * step
    tests: list[dict[str, Any]] = []

    def sloth(slo: Any) -> dict[str, str]:
        return {"sloth_id": f"{spec.service}-{slo.slug}", "sloth_service": spec.service, "sloth_slo": slo.slug}

    def burning(slo: Any, value: str, at: float) -> list[tuple[str, dict[str, str], dict[str, str]]]:
        fired: list[tuple[str, dict[str, str], dict[str, str]]] = [("page", {}, {PCT: value})]
        if any(w.severity == "ticket" for w in spec.burn_windows) and at >= ticket_for + 3 * step:
            fired.append(("ticket", {}, {PCT: value}))
        return fired

    # Normal traffic over the longest page window: no page, zero error ratios.
    normal_at = max(duration_seconds(w.long) for w in spec.burn_windows if w.severity == "page") + page_for + step
    scene = _Scene(spec, "normal traffic pages nobody", _ceil_steps(normal_at, step) + 2)
    scene.traffic(per_step=60)
    for alert in (latency_slo.alert, dlq_slo.alert, "ActivelabelDeadLetterSpike", "ActivelabelDown",
                  "ActivelabelPolicyReloadFailing"):
        scene.expect(alert, normal_at, [])
    scene.expect_value(f"slo:sli_error:ratio_rate{quick.short}{_labels_text(sloth(latency_slo))}", normal_at, 0,
                       **sloth(latency_slo), sloth_window=quick.short)
    scene.expect_value(f"activelabel:dlq:ratio_rate{spec.rate_window}", normal_at, 0)
    tests.append(scene.case)

    # A latency regression: every request slower than the threshold.
    scene = _Scene(spec, "a latency regression pages", _ceil_steps(burn_at, step) + 2)
    scene.traffic(per_step=60, fast_share=0.0)
    scene.expect(latency_slo.alert, burn_at, burning(latency_slo, "100%", burn_at))
    scene.expect(dlq_slo.alert, burn_at, [])
    scene.expect_value(f"slo:sli_error:ratio_rate{quick.short}{_labels_text(sloth(latency_slo))}", burn_at, 1,
                       **sloth(latency_slo), sloth_window=quick.short)
    tests.append(scene.case)

    # A dead-letter spike: one event in four dead-lettered.
    spike_at = max(burn_at, duration_seconds(spec.rate_window) + duration_seconds(t.spike_for) + 3 * step)
    scene = _Scene(spec, "a dead-letter spike pages", _ceil_steps(spike_at, step) + 2)
    scene.traffic(per_step=30, dead_per_step=10)
    scene.expect(dlq_slo.alert, spike_at, burning(dlq_slo, "25%", spike_at))
    scene.expect("ActivelabelDeadLetterSpike", spike_at, [("page", {}, {PCT: "25%"})])
    scene.expect(latency_slo.alert, spike_at, [])
    scene.expect_value(f"activelabel:dlq:ratio_rate{spec.rate_window}", spike_at, 0.25)
    tests.append(scene.case)

    # A declared pii label reaching a sink: pages with no delay.
    scene = _Scene(spec, "a pii leak pages at once", 12)
    scene.healthy()
    scene.series(series("activelabel_pii_leaks_declared"), "0 0 0 1 1 1 1 1 1 1 1 1 1",
                 sink="output", label="customer_email")
    scene.expect("ActivelabelPIILeak", 4 * step, [("page", {"sink": "output", "label": "customer_email"},
                                                    {'{{ $value | printf "%.0f" }}': "1", RAW: "1"})])
    tests.append(scene.case)

    # The labeler down: its target is not up and no policy is served.
    down_at = duration_seconds(t.down_for) + 2 * step
    scene = _Scene(spec, "the labeler down pages", _ceil_steps(down_at, step) + 2)
    scene.series("up", f"0x{scene.steps}")
    scene.expect("ActivelabelDown", down_at, [("page", {"job": spec.job, "instance": INSTANCE}, {RAW: "0"})])
    tests.append(scene.case)

    # No target at all (service discovery lost it): the absent() arm pages.
    scene = _Scene(spec, "no labeler target at all pages", _ceil_steps(down_at, step) + 2)
    scene.series("some_other_job_metric", f"1x{scene.steps}")
    scene.expect("ActivelabelDown", down_at, [("page", {"job": spec.job}, {RAW: "1"})])
    tests.append(scene.case)

    # Tickets: a refused reload, accuracy below its floor, drift over its threshold.
    ticket_at = max(duration_seconds(t.reload_for), duration_seconds(t.accuracy_for), duration_seconds(t.drift_for)) + 2 * step
    scene = _Scene(spec, "a refused reload, an accuracy drop and drift open tickets", _ceil_steps(ticket_at, step) + 2)
    scene.series("up", f"1x{scene.steps}")
    scene.series("activelabel_policy_info", f"1x{scene.steps}", name="edge", version="v1")
    scene.series(series("activelabel_policy_last_reload_accepted"), f"0x{scene.steps}")
    scene.series(series("activelabel_label_accuracy_ratio"), f"0.5x{scene.steps}", label="priority")
    scene.series(series("activelabel_label_accuracy_window_items"), f"{t.accuracy_min_items * 2}x{scene.steps}",
                 label="priority")
    scene.series(series("activelabel_label_drift_psi"), f"0.3x{scene.steps}", label="priority")
    host = {"job": spec.job, "instance": INSTANCE}
    scene.expect("ActivelabelPolicyReloadFailing", ticket_at, [("ticket", host, {RAW: "0"})])
    scene.expect("ActivelabelAccuracyDrop", ticket_at, [("ticket", {**host, "label": "priority"}, {PCT: "50%"})])
    scene.expect("ActivelabelLabelDrift", ticket_at, [("ticket", {**host, "label": "priority"}, {F3: "0.300"})])
    tests.append(scene.case)

    return {"rule_files": [rules_file], "evaluation_interval": _fmt(step), "tests": tests}
