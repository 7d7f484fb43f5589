"""Prometheus SLIs (M1, M3–M6) after a known sequence of events, and no sensitive value in metrics or logs."""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path

import httpx
import orjson
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "service"))
from harness import FAILING_TESTS_POLICY, POLICY, auth, build_app

from activelabel.service.testing import serve_in_thread

EMAILS = ["ann@example.com", "bob@example.com", "cy@example.com", "dee@example.com"]


@pytest.fixture(scope="module")
def scraped():
    """Run a known sequence against a fresh registry; yield (registry, /metrics text, policy version)."""
    registry = CollectorRegistry()
    with serve_in_thread(build_app(registry=registry)) as url, httpx.Client(base_url=url) as client:
        label = lambda body: client.post("/v1/label", json=body, headers=auth("label-token"))
        version = label({"path": "/pay/1", "status": 503, "tenant": "acme"}).json()["policy_version"]  # critical; pay-any conflicts
        label({"path": "/home", "status": 200})  # priority from default only
        label({"status": 200})  # no path: rule pay-any errors (pay-5xx is false by its status test)
        label({"events": [{"path": "/home", "email": e} for e in EMAILS] + [7]})  # 4 distinct emails over max 3; one dead letter
        client.post("/v1/label", content=b"{oops", headers={**auth("label-token"), "content-type": "application/json"})
        client.post("/v1/label", json={}, headers={"authorization": "Bearer wrong"})
        client.request("GET", "/v1/extauthz/pay", headers={"x-activelabel-token": "label-token", "host": "a"})
        text = client.get("/metrics").text
    yield registry, text, version


def value(registry: CollectorRegistry, metric: str, **labels: str) -> float | None:
    return registry.get_sample_value(metric, labels)


def test_event_and_coverage_counts(scraped):
    """Events seen and per-label coverage (events with the label / events) match the sequence sent."""
    registry, _, _ = scraped
    assert value(registry, "activelabel_labeler_events_total") == 8
    assert value(registry, "activelabel_label_set_total", label="priority") == 8
    assert value(registry, "activelabel_label_set_total", label="tier") == 1
    assert value(registry, "activelabel_label_coverage_ratio", label="tier") == pytest.approx(1 / 8)
    assert value(registry, "activelabel_label_coverage_ratio", label="priority") == 1.0
    assert value(registry, "activelabel_label_set_total", label="privileged") == 0


def test_cardinality_and_overflow(scraped):
    """Distinct values stop at max_cardinality and the extra value is counted as overflow."""
    registry, _, _ = scraped
    assert value(registry, "activelabel_label_distinct_values", label="customer_email") == 3
    assert value(registry, "activelabel_label_overflow_total", label="customer_email") == 1
    assert value(registry, "activelabel_label_distinct_values", label="priority") is None  # enum: not counted


def test_conflicts_rule_matches_and_errors(scraped):
    """A conflict is counted when two rules set different values; rule matches and errors are per rule."""
    registry, _, _ = scraped
    assert value(registry, "activelabel_label_conflicts_total", label="priority") == 1
    assert value(registry, "activelabel_rule_matches_total", rule="pay-5xx") == 1
    assert value(registry, "activelabel_rule_matches_total", rule="tenant-acme") == 1
    assert value(registry, "activelabel_rule_matches_total", rule="email") == 4
    assert value(registry, "activelabel_rule_errors_total", rule="pay-any") == 1
    assert value(registry, "activelabel_rule_errors_total", rule="tenant-acme") == 0


def test_front_door_latency_and_outcomes(scraped):
    """Latency is observed per front door, and every request is counted as labeled or error with its reason."""
    registry, _, _ = scraped
    assert value(registry, "activelabel_service_label_latency_seconds_count", door="label", arm="stable") == 4
    assert value(registry, "activelabel_service_label_latency_seconds_count", door="ext_authz", arm="stable") == 1
    assert value(registry, "activelabel_service_requests_total", door="label", outcome="labeled", reason="") == 4
    assert value(registry, "activelabel_service_requests_total", door="label", outcome="error", reason="bad_json") == 1
    assert value(registry, "activelabel_service_requests_total", door="label", outcome="error", reason="unauthenticated") == 1
    assert value(registry, "activelabel_service_events_labeled_total", door="label") == 7
    assert value(registry, "activelabel_service_events_dead_lettered_total", door="label", reason="not_an_object") == 1
    assert value(registry, "activelabel_service_events_failed_total", door="label") == 0


def test_every_accepted_request_is_labeled_or_an_error(scraped):
    """The six requests sent to /v1/label add up: each is counted once, as labeled or as an error."""
    _, text, _ = scraped
    (family,) = [f for f in text_string_to_metric_families(text) if f.name == "activelabel_service_requests"]
    total = sum(s.value for s in family.samples if s.name.endswith("_total") and s.labels["door"] == "label")
    assert total == 6


def test_policy_version_info_and_start_reload(scraped):
    """The serving policy's name and version are an info metric; the initial load counts as an accepted reload."""
    registry, _, version = scraped
    assert value(registry, "activelabel_policy_info", name="service-fixture", version=version) == 1
    assert value(registry, "activelabel_policy_reloads_total", outcome="accepted", trigger="start") == 1


def test_metrics_endpoint_is_valid_exposition_with_activelabel_names(scraped):
    """GET /metrics parses as Prometheus text and every family is named activelabel_*."""
    _, text, _ = scraped
    families = list(text_string_to_metric_families(text))
    assert families and all(f.name.startswith("activelabel_") for f in families)


SECRET_VALUE = "crimson-vault-owner"
PII_VALUE = "zed.private@example.org"
TEST_PII_VALUE = "policy-test-person@example.com"


def test_no_pii_or_secret_value_in_metrics_logs_or_errors(tmp_path, caplog):
    """pii and secret label values never appear in /metrics, in log lines or in any error message."""
    policy_file = tmp_path / "policy.yaml"
    shutil.copy(POLICY, policy_file)
    event = {"path": "/pay", "status": 500, "email": PII_VALUE, "key_owner": SECRET_VALUE}
    bodies: list[str] = []
    with caplog.at_level(logging.DEBUG), serve_in_thread(build_app(policy_file)) as url, httpx.Client(base_url=url) as client:
        cleared = client.post("/v1/label", json=event, headers=auth("secret-token")).json()
        assert cleared["labels"]["api_key_owner"] == SECRET_VALUE  # the values really were produced
        assert cleared["labels"]["customer_email"] == PII_VALUE
        for request in (
            lambda: client.post("/v1/label", json={"events": [event, "x"]}, headers=auth("secret-token")),
            lambda: client.post("/v1/label?explain=true", json=event, headers=auth("label-token")),
            lambda: client.post("/v1/label", content=orjson.dumps(event)[:-3], headers={**auth("label-token"), "content-type": "application/json"}),
            lambda: client.post("/v1/label", content=orjson.dumps(event), headers={**auth("label-token"), "content-type": "text/plain"}),
            lambda: client.post("/v1/label", json={"events": [event] * 2000}, headers=auth("label-token")),
            lambda: client.post("/v1/label", json=event, headers=auth("feedback-token")),
            lambda: client.post("/v1/traces", content=orjson.dumps(event), headers={**auth("label-token"), "content-type": "application/x-protobuf"}),
            lambda: client.post("/v1/admission", json={"kind": "AdmissionReview", "request": event}, headers=auth("label-token")),
            lambda: client.request("GET", "/v1/extauthz/pay?email=" + PII_VALUE, headers={"x-activelabel-token": "label-token", "host": "a"}),
        ):
            r = request()
            if r.status_code >= 400:
                bodies.append(r.text)
        shutil.copy(FAILING_TESTS_POLICY, policy_file)
        refused = client.post("/v1/policy/reload", headers=auth("admin-token"))
        assert refused.status_code == 422
        bodies.append(refused.text)
        metrics = client.get("/metrics").text
    assert len(bodies) >= 7
    server_log = "\n".join(
        r.getMessage() for r in caplog.records if r.name.startswith(("activelabel", "uvicorn"))
    )
    assert "refused" in server_log
    for text in [metrics, server_log, *bodies]:
        for sensitive in (SECRET_VALUE, PII_VALUE, TEST_PII_VALUE):
            assert sensitive not in text
