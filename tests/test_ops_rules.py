"""`activelabel ops rules` and `ops dashboards`: generated files pass promtool, read only exported metrics, match the golden JSON."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from activelabel.observability.catalog import exported_series
from activelabel.observability.dashboards import SCHEMA_VERSION, build_dashboards, dashboard_exprs, render_json
from activelabel.observability.rules import build_rules, referenced_names
from activelabel.observability.slo import SLOSpec

REPO = Path(__file__).resolve().parents[1]
POLICY = REPO / "tests" / "fixtures" / "service" / "policy.yaml"
GOLDEN = REPO / "tests" / "golden" / "dashboards"
SHORT_SLO = """
rate_window: 10s
latency: {threshold_seconds: 0.0025}
burn_windows:
  - {severity: page, short: 5s, long: 15s, factor: 14.4}
  - {severity: ticket, short: 20s, long: 60s, factor: 3}
thresholds: {page_for: 2s, ticket_for: 1m, down_for: 10s, reload_for: 30s, accuracy_for: 30s, drift_for: 30s}
"""


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.run([sys.executable, "-m", "activelabel", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=120)


def _promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.mark.parametrize("slo", [None, SHORT_SLO], ids=["default-slo", "short-windows"])
def test_generated_rules_pass_promtool_check_and_test(tmp_path, slo):
    """`ops rules --tests` writes a rules file promtool accepts and a test file whose scenes (normal, faults) all pass."""
    args = ["ops", "rules", "-o", "rules.yaml", "--tests", "--policy", str(POLICY)]
    if slo:
        (tmp_path / "slo.yaml").write_text(slo)
        args += ["--slo", "slo.yaml"]
    run = _cli(*args, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "rules.yaml" in run.stderr and "rules_test.yaml" in run.stderr
    check = _promtool("check", "rules", "rules.yaml", cwd=tmp_path)
    assert check.returncode == 0 and "SUCCESS" in check.stdout, check.stdout + check.stderr
    test = _promtool("test", "rules", "rules_test.yaml", cwd=tmp_path)
    assert test.returncode == 0 and "SUCCESS" in test.stdout, test.stdout + test.stderr
    scenes = [t["name"] for t in yaml.safe_load((tmp_path / "rules_test.yaml").read_text())["tests"]]
    assert "normal traffic pages nobody" in scenes and "a dead-letter spike pages" in scenes


def _all_rules(spec: SLOSpec) -> list[dict]:
    return [r for g in build_rules(spec)["groups"] for r in g["rules"]]


def test_every_metric_a_rule_reads_is_exported_and_every_recorded_name_is_defined():
    """No rule reads a metric the code does not export, nor a recording rule that is not written."""
    rules = _all_rules(SLOSpec())
    recorded = {r["record"] for r in rules if "record" in r}
    for rule in rules:
        for name in referenced_names(rule["expr"]):
            if name.startswith("activelabel_"):
                assert name in exported_series(), f"{rule.get('record') or rule['alert']} reads unexported {name}"
            else:
                assert name in recorded, f"{rule.get('record') or rule['alert']} reads unrecorded {name}"


def test_burn_rate_alerts_follow_slothes_window_table_with_a_traffic_guard():
    """Page on 14.4x over 5m and 1h or 6x over 30m and 6h; ticket on 3x over 2h and 1d or 1x over 6h and 3d; each pair guarded."""
    alerts = {(r["alert"], r["labels"]["severity"]): r for r in _all_rules(SLOSpec()) if "alert" in r}
    for name in ("ActivelabelLatencyBudgetBurn", "ActivelabelDeadLetterBudgetBurn"):
        page, ticket = alerts[(name, "page")]["expr"], alerts[(name, "ticket")]["expr"]
        assert re.findall(r"ratio_rate(\w+)\{", page) == ["5m", "1h", "30m", "6h"]
        assert re.findall(r"ratio_rate(\w+)\{", ticket) == ["2h", "1d", "6h", "3d"]
        assert "(14.4 * " in page and "(6 * " in page and "(3 * " in ticket and "(1 * " in ticket
        assert page.count("> 0.1))") == 2 and ticket.count("> 0.1))") == 2  # min_events_per_second per pair
    assert alerts[("ActivelabelPIILeak", "page")]
    assert alerts[("ActivelabelLabelDrift", "ticket")] and alerts[("ActivelabelAccuracyDrop", "ticket")]


def test_every_alert_has_summary_measured_value_threshold_and_a_runbook_section():
    """Each alert names its value and threshold, and its runbook link points at a section that exists in docs/runbooks.md."""
    runbooks = (REPO / "docs" / "runbooks.md").read_text()
    anchors = {re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-") for h in re.findall(r"^## (.+)$", runbooks, re.M)}
    for rule in _all_rules(SLOSpec()):
        if "alert" not in rule:
            continue
        notes = rule["annotations"]
        assert notes["summary"] and "{{ $value" in notes["description"]
        assert re.search(r"threshold|objective|expected", notes["description"])
        url, anchor = notes["runbook_url"].split("#")
        assert url == "docs/runbooks.md" and anchor in anchors, f"no runbook section for {rule['alert']} (#{anchor})"


def test_policy_limits_label_alerts_to_its_labels(tmp_path):
    """With --policy, the accuracy, drift and cardinality alerts watch that policy's labels only."""
    run = _cli("ops", "rules", "-o", "r.yaml", "--policy", str(POLICY), cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    text = (tmp_path / "r.yaml").read_text()
    assert 'label=~"priority|tier|customer_email|api_key_owner|failed|privileged"' not in text  # sorted, not file order
    assert 'label=~"api_key_owner|customer_email|failed|priority|privileged|tier"' in text


def test_a_bad_slo_spec_is_refused_naming_the_field(tmp_path):
    """A latency threshold that is not a histogram bucket is refused with exit code 2, naming the field and the choices."""
    (tmp_path / "slo.yaml").write_text("latency: {threshold_seconds: 0.02}\nburn_windows: [{severity: page, short: 5 minutes, long: 1h, factor: 2}]\n")
    run = _cli("ops", "rules", "-o", "r.yaml", "--slo", "slo.yaml", cwd=tmp_path)
    assert run.returncode == 2
    assert "latency.threshold_seconds" in run.stderr and "0.025" in run.stderr
    assert "burn_windows.0.short" in run.stderr
    assert not (tmp_path / "r.yaml").exists()


def test_dashboards_match_the_golden_files(tmp_path):
    """`ops dashboards` writes executive, on-call and debug JSON identical to tests/golden/dashboards (ACTIVELABEL_UPDATE_GOLDEN=1 rewrites them)."""
    run = _cli("ops", "dashboards", "-o", "dash", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    written = sorted(p.name for p in (tmp_path / "dash").iterdir())
    assert written == ["debug.json", "executive.json", "on-call.json"]
    if os.environ.get("ACTIVELABEL_UPDATE_GOLDEN") == "1":
        GOLDEN.mkdir(parents=True, exist_ok=True)
        for name in written:
            (GOLDEN / name).write_text((tmp_path / "dash" / name).read_text())
    for name in written:
        assert (tmp_path / "dash" / name).read_text() == (GOLDEN / name).read_text(), f"{name} differs from the golden file"


def test_dashboards_are_grafana_models_reading_only_exported_names():
    """Each dashboard has a pinned schemaVersion, its own uid, a datasource variable, non-overlapping panels, and reads only exported or recorded names."""
    spec = SLOSpec()
    recorded = {r["record"] for r in _all_rules(spec) if "record" in r}
    dashboards = build_dashboards(spec)
    assert len({d["uid"] for d in dashboards.values()}) == 3
    for dashboard in dashboards.values():
        assert dashboard["schemaVersion"] == SCHEMA_VERSION
        assert dashboard["templating"]["list"][0] == {**dashboard["templating"]["list"][0], "name": "datasource", "type": "datasource"}
        cells = set()
        for panel in dashboard["panels"]:
            assert panel["datasource"]["uid"] == "${datasource}"
            pos = panel["gridPos"]
            assert pos["x"] + pos["w"] <= 24
            area = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
            assert not cells & area, f"panel {panel['title']} overlaps another"
            cells |= area
        for expr in dashboard_exprs(dashboard):
            for name in referenced_names(expr):
                assert name in exported_series() or name in recorded, f"{dashboard['uid']} reads {name}"
        assert json.loads(render_json(dashboard)) == dashboard


def test_production_doc_lists_every_metric_and_its_slo_spec_is_the_default():
    """docs/production.md has a row per catalog metric with its SLI, and its SLO spec example equals the defaults."""
    from activelabel.observability.catalog import CATALOG

    doc = (REPO / "docs" / "production.md").read_text()
    for spec in CATALOG.values():
        shown = spec.series[0] if spec.kind in ("counter", "info") else spec.name
        assert re.search(rf"^\| {re.escape(spec.sli)} \| `{shown}` \|", doc, re.M), f"{shown} missing from docs/production.md"
    (block,) = [b for b in re.findall(r"```yaml\n(.*?)```", doc, re.S) if b.startswith("service:")]
    assert SLOSpec.model_validate(yaml.safe_load(block)) == SLOSpec()
