"""The seed's SLIs M1-M10 after known sequences of events, through a real `serve` on loopback with a fresh registry."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import orjson
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "service"))
from harness import POLICY, auth, build_app, build_labeler

from activelabel.observability import CATALOG, PiiLeakMetrics, ServiceMetrics
from activelabel.observability.windows import GroundTruthFollower
from activelabel.quality.drift import js_distance, psi
from activelabel.quality.store import DecisionStore
from activelabel.service import LabelingMiddleware, ServiceConfig
from activelabel.service.config import StoreConfig
from activelabel.service.testing import serve_in_thread

REPO = Path(__file__).resolve().parents[1]


def value(registry: CollectorRegistry, metric: str, **labels: str) -> float | None:
    return registry.get_sample_value(metric, labels)


def _label(client: httpx.Client, body: object) -> httpx.Response:
    return client.post("/v1/label", json=body, headers=auth("label-token"))


def test_m1_latency_is_observed_per_door_and_arm():
    """Each labeled request is one latency observation on its door, under the stable arm until a rollout adds others."""
    registry = CollectorRegistry()
    with serve_in_thread(build_app(registry=registry)) as url, httpx.Client(base_url=url) as client:
        for _ in range(3):
            _label(client, {"path": "/home", "status": 200})
        _label(client, {"events": [{"path": "/a"}, {"path": "/b"}]})
    assert value(registry, "activelabel_service_label_latency_seconds_count", door="label", arm="stable") == 4
    assert value(registry, "activelabel_service_label_latency_seconds_count", door="admission", arm="stable") == 0


def test_m2_accuracy_counts_api_feedback_and_imports_once(tmp_path):
    """Ground truth from /v1/feedback and from `activelabel feedback import` into the same store both feed the accuracy SLI, once each."""
    registry = CollectorRegistry()
    store_path = tmp_path / "decisions.db"
    config = ServiceConfig(store=StoreConfig(path=str(store_path), id_field="order_id"))
    with serve_in_thread(build_app(config=config, registry=registry)) as url, httpx.Client(base_url=url) as client:
        for i in range(6):  # o-0..o-2 critical, o-3..o-5 normal
            _label(client, {"order_id": f"o-{i}", "path": "/pay" if i < 3 else "/home", "status": 500})
        truths = [{"id": "o-0", "label": "priority", "value": "critical"},
                  {"id": "o-1", "label": "priority", "value": "critical"},
                  {"id": "o-3", "label": "priority", "value": "low"}]
        assert client.post("/v1/feedback", json={"items": truths}, headers=auth("feedback-token")).json()["accepted"] == 3
        imported = tmp_path / "truth.jsonl"
        imported.write_text("\n".join(orjson.dumps(t).decode() for t in (
            {"id": "o-4", "label": "priority", "value": "normal"},
            {"id": "o-5", "label": "priority", "value": "normal"})) + "\n")
        env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
        run = subprocess.run([sys.executable, "-m", "activelabel", "feedback", "import", str(imported), "--store", str(store_path)],
                             capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
        assert run.returncode == 0, run.stderr
        text = client.get("/metrics").text
    scraped = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in text_string_to_metric_families(text) for s in f.samples}
    assert scraped[("activelabel_label_accuracy_ratio", (("label", "priority"),))] == pytest.approx(4 / 5)
    assert scraped[("activelabel_label_accuracy_window_items", (("label", "priority"),))] == 5
    assert scraped[("activelabel_label_feedback_total", (("label", "priority"), ("outcome", "correct")))] == 4
    assert scraped[("activelabel_label_feedback_total", (("label", "priority"), ("outcome", "incorrect")))] == 1
    confusion = {k[1]: v for k, v in scraped.items() if k[0] == "activelabel_label_confusion_total"}
    assert confusion == {
        (("label", "priority"), ("predicted", "critical"), ("truth", "critical")): 2,
        (("label", "priority"), ("predicted", "normal"), ("truth", "low")): 1,
        (("label", "priority"), ("predicted", "normal"), ("truth", "normal")): 2,
    }


def test_m2_accuracy_window_slides_and_m8_measures_decision_to_truth(tmp_path):
    """Ground truth older than the window leaves the accuracy ratio; the feedback delay is truth time minus decision time."""
    now = [1000.0]
    store = DecisionStore(tmp_path / "d.db", policy=build_labeler().policy, clock=lambda: now[0])
    labeler = build_labeler()
    store.record("r1", {"path": "/pay", "status": 500}, labeler.label({"path": "/pay", "status": 500}))  # critical at t=1000
    store.record("r2", {"path": "/home"}, labeler.label({"path": "/home"}))  # normal at t=1000
    follower = GroundTruthFollower(store, window_s=120, clock=lambda: now[0])
    now[0] = 1030.0
    store.add_ground_truth("r1", "priority", "low")  # wrong, 30 s after the decision
    now[0] = 1100.0
    store.add_ground_truth("r2", "priority", "normal")  # right, 100 s after
    follower.sync()
    assert follower.accuracy() == {"priority": (0.5, 2)}
    now[0] = 1151.0  # the first truth (t=1030) is out of the 120 s window, the second (t=1100) is in
    assert follower.accuracy() == {"priority": (1.0, 1)}
    delay = follower.delay["priority"]
    assert delay.count == 2 and delay.total == pytest.approx(130.0)
    assert dict(delay.cumulative())["60.0"] == 1  # 30 s is within the 60 s bucket, 100 s is not
    store.close()


def _variant_tier_always(text: str) -> str:
    return text.replace('when: has(event.tenant) && event.tenant == "acme"', "when: true")


def test_m3_coverage_is_of_the_serving_policy_across_a_real_reload(tmp_path):
    """After a reload, coverage divides by the new policy's events only: 4 of 4 new events with a label read 1.0, not 4/15."""
    policy_file = tmp_path / "policy.yaml"
    shutil.copy(POLICY, policy_file)
    registry = CollectorRegistry()
    with serve_in_thread(build_app(policy_file, registry=registry)) as url, httpx.Client(base_url=url) as client:
        for _ in range(11):
            _label(client, {"path": "/home", "status": 200})  # no tier under the first policy
        assert value(registry, "activelabel_label_coverage_ratio", label="tier") == 0.0
        policy_file.write_text(_variant_tier_always(POLICY.read_text()))
        assert client.post("/v1/policy/reload", headers=auth("admin-token")).json()["accepted"] is True
        for _ in range(4):
            _label(client, {"path": "/home", "status": 200})
    assert value(registry, "activelabel_label_coverage_ratio", label="tier") == 1.0
    assert value(registry, "activelabel_labeler_serving_events") == 4
    # The counters never go backwards across the reload.
    assert value(registry, "activelabel_labeler_events_total") == 15
    assert value(registry, "activelabel_label_set_total", label="tier") == 4


def test_m4_distinct_values_overflow_and_the_limit():
    """The cardinality gauge stops at max_cardinality, the overflow is counted and the limit itself is exported."""
    registry = CollectorRegistry()
    with serve_in_thread(build_app(registry=registry)) as url, httpx.Client(base_url=url) as client:
        _label(client, {"events": [{"email": f"u{i}@example.com"} for i in range(5)]})
    assert value(registry, "activelabel_label_distinct_values", label="customer_email") == 3
    assert value(registry, "activelabel_label_max_cardinality", label="customer_email") == 3
    assert value(registry, "activelabel_label_overflow_total", label="customer_email") == 2


def test_m4_top_values_count_declared_values_of_bounded_labels_only():
    """Values of enum and bool labels are counted per value; a pii string label's values never become metric labels."""
    registry = CollectorRegistry()
    with serve_in_thread(build_app(registry=registry)) as url, httpx.Client(base_url=url) as client:
        _label(client, {"events": [{"path": "/pay", "status": 500, "email": "a@example.com"}] * 3 + [{"path": "/home"}]})
        text = client.get("/metrics").text
    assert value(registry, "activelabel_label_values_total", label="priority", value="critical") == 3
    assert value(registry, "activelabel_label_values_total", label="priority", value="normal") == 1
    assert 'label="customer_email"' not in "\n".join(line for line in text.splitlines() if line.startswith("activelabel_label_values"))
    assert "a@example.com" not in text


def test_m5_conflicts_and_m6_rule_errors_and_dead_letters_by_reason():
    """Disagreeing rules count a conflict; an erroring rule counts per rule; refused batch items count per reason."""
    registry = CollectorRegistry()
    with serve_in_thread(build_app(registry=registry)) as url, httpx.Client(base_url=url) as client:
        _label(client, {"path": "/pay/1", "status": 503})  # pay-5xx and pay-any disagree
        _label(client, {"status": 200})  # pay-any errors on the missing path
        _label(client, {"events": [{"path": "/"}, 7, "x", None]})
    assert value(registry, "activelabel_label_conflicts_total", label="priority") == 1
    assert value(registry, "activelabel_rule_errors_total", rule="pay-any") == 1
    assert value(registry, "activelabel_service_events_dead_lettered_total", door="label", reason="not_an_object") == 3
    assert value(registry, "activelabel_service_events_labeled_total", door="label") == 3


def test_m7_drift_gauge_equals_the_report_computation():
    """After a reference window of normal traffic and a window of payment failures, PSI and JS distance match quality.drift on the same values."""
    registry = CollectorRegistry()
    config = ServiceConfig(drift_window_events=10, drift_sample_every=1)
    with serve_in_thread(build_app(config=config, registry=registry)) as url, httpx.Client(base_url=url) as client:
        _label(client, {"events": [{"path": "/home", "status": 200}] * 10})  # reference: priority normal
        _label(client, {"events": [{"path": "/pay", "status": 500}] * 6 + [{"path": "/home"}] * 4})
    reference, current = ["normal"] * 10, ["critical"] * 6 + ["normal"] * 4
    assert value(registry, "activelabel_label_drift_psi", label="priority") == pytest.approx(psi(reference, current))
    assert value(registry, "activelabel_label_drift_js_distance", label="priority") == pytest.approx(js_distance(reference, current))
    assert value(registry, "activelabel_label_drift_psi", label="priority") > 0.1
    # pii and secret labels are never kept for drift.
    assert value(registry, "activelabel_label_drift_psi", label="customer_email") is None


def test_m9_leak_counters_for_the_privacy_code():
    """The privacy code counts declared leaks, undeclared detector hits and canary recall through one small object."""
    metrics = ServiceMetrics()
    metrics.pii.count_declared_leak("kafka:labeled", "customer_email")
    metrics.pii.count_undeclared("output", "luhn_card", 2)
    metrics.pii.set_canary_recall(caught=9, injected=10)
    r = metrics.registry
    assert value(r, "activelabel_pii_leaks_declared_total", sink="kafka:labeled", label="customer_email") == 1
    assert value(r, "activelabel_pii_undeclared_total", sink="output", detector="luhn_card") == 2
    assert value(r, "activelabel_pii_canary_recall") == pytest.approx(0.9)
    standalone = PiiLeakMetrics(CollectorRegistry())
    standalone.set_canary_recall(caught=0, injected=0)  # no canary yet: no recall is claimed, not even 0
    assert value(standalone.registry, "activelabel_pii_canary_recall") is None


def test_m10_cpu_seconds_are_counted_per_door_and_bounded_by_wall_time():
    """CPU seconds accumulate on the door that labeled, never exceed its wall-clock latency, and stay 0 on idle doors."""
    registry = CollectorRegistry()
    with serve_in_thread(build_app(registry=registry)) as url, httpx.Client(base_url=url) as client:
        for _ in range(5):
            _label(client, {"events": [{"path": "/pay", "status": 500}] * 200})
        for _ in range(20):
            client.get("/v1/extauthz/pay/1", headers={"x-activelabel-token": "label-token", "host": "shop"})
    cpu = value(registry, "activelabel_service_label_cpu_seconds_total", door="label")
    wall = value(registry, "activelabel_service_label_latency_seconds_sum", door="label", arm="stable")
    # Thread time cannot exceed wall time, except by the clocks' granularity (measured up to ~60 us per reading).
    assert cpu is not None and 0 < cpu <= wall + 5 * 1e-4
    assert value(registry, "activelabel_service_label_cpu_seconds_total", door="ext_authz") > 0
    assert value(registry, "activelabel_service_label_cpu_seconds_total", door="otlp_logs") == 0


def test_sdk_middleware_reports_its_door_cost_and_drift():
    """The ASGI middleware (SDK hook) observes M1 latency, M10 CPU and M7 drift windows on its own door, on the injected registry."""
    metrics = ServiceMetrics(CollectorRegistry())
    inner = Starlette(routes=[Route("/{path:path}", lambda request: PlainTextResponse("ok"))])
    app = LabelingMiddleware(inner, build_labeler(), metrics=metrics)
    with serve_in_thread(app) as url, httpx.Client(base_url=url) as client:
        for _ in range(3):
            assert client.get("/pay/1").status_code == 200
    r = metrics.registry
    assert value(r, "activelabel_service_label_latency_seconds_count", door="middleware", arm="stable") == 3
    assert value(r, "activelabel_service_events_labeled_total", door="middleware") == 3
    assert value(r, "activelabel_service_label_cpu_seconds_total", door="middleware") > 0


def test_a_door_is_one_object_a_worker_adopts_in_one_call():
    """A new door (the stream worker) gets latency, events, dead letters by reason and CPU from one DoorMetrics."""
    metrics = ServiceMetrics(CollectorRegistry())
    door = metrics.door("stream")
    door.observe_labeled(0.002, events=9, dead_lettered={"bad_json": 1}, cpu_seconds=0.001)
    r = metrics.registry
    assert value(r, "activelabel_service_label_latency_seconds_count", door="stream", arm="stable") == 1
    assert value(r, "activelabel_service_events_labeled_total", door="stream") == 9
    assert value(r, "activelabel_service_events_dead_lettered_total", door="stream", reason="bad_json") == 1
    assert value(r, "activelabel_service_label_cpu_seconds_total", door="stream") == pytest.approx(0.001)


def test_every_exported_family_is_in_the_catalog_with_help_naming_its_sli(tmp_path):
    """A real serve with a store exports only catalog families, each HELP starting with its SLI, and every service family of the catalog."""
    registry = CollectorRegistry()
    config = ServiceConfig(store=StoreConfig(path=str(tmp_path / "d.db"), id_field="order_id"), drift_window_events=2, drift_sample_every=1)
    with serve_in_thread(build_app(config=config, registry=registry)) as url, httpx.Client(base_url=url) as client:
        _label(client, {"events": [{"order_id": f"o{i}", "path": "/pay", "status": 500} for i in range(5)] + [1]})
        client.post("/v1/feedback", json={"id": "o1", "label": "priority", "value": "critical"}, headers=auth("feedback-token"))
        text = client.get("/metrics").text
    # Info families reach the text format as gauges named <name>_info.
    families = {f.name.removesuffix("_info") if f.name.removesuffix("_info") in CATALOG else f.name: f
                for f in text_string_to_metric_families(text) if not f.name.endswith("_created")}
    for name, family in families.items():
        assert name in CATALOG, f"{name} is exported but not in the catalog"
        assert family.documentation.startswith(CATALOG[name].sli + ":")
    service = {n for n, s in CATALOG.items() if s.exporter == "service"} - {"activelabel_model_circuit_open"}
    assert service <= set(families), service - set(families)
    assert generate_latest(registry)  # the registry itself renders too
