"""Ground truth over HTTP: decisions recorded on /v1/label, true values accepted on /v1/feedback."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "service"))
from harness import auth, build_app

from activelabel.quality.store import DecisionStore
from activelabel.service import ServiceConfig
from activelabel.service.config import StoreConfig
from activelabel.service.testing import serve_in_thread

SENSITIVE = "zed.private@example.org"


@pytest.fixture
def recorded(tmp_path):
    registry = CollectorRegistry()
    store_path = tmp_path / "decisions.db"
    config = ServiceConfig(store=StoreConfig(path=str(store_path), id_field="order_id"))
    with serve_in_thread(build_app(config=config, registry=registry)) as url, httpx.Client(base_url=url) as client:
        yield client, store_path, registry


def test_labeled_events_carry_their_record_id(recorded):
    """With a store, each labeled event's answer carries the id its decision was recorded under."""
    client, store_path, _ = recorded
    one = client.post("/v1/label", json={"order_id": "o-1", "path": "/pay", "status": 500}, headers=auth("label-token")).json()
    assert one["id"] == "o-1"
    batch = client.post("/v1/label", json={"events": [{"order_id": "o-2", "path": "/"}, {"path": "/no-id"}, 3]}, headers=auth("label-token")).json()
    assert [r.get("id") for r in batch["results"]] == ["o-2", None, None]
    with DecisionStore(store_path) as store:
        assert store.decision("o-1").labels["priority"] == "critical"
        assert store.has_record("o-2")


def test_feedback_is_accepted_for_recorded_ids_and_refused_with_reasons(recorded):
    """True values for recorded ids are stored; unknown ids and values outside the label's type are refused with a reason."""
    client, store_path, registry = recorded
    client.post("/v1/label", json={"order_id": "o-1", "path": "/pay", "status": 500}, headers=auth("label-token"))
    r = client.post(
        "/v1/feedback",
        json={"items": [
            {"id": "o-1", "label": "priority", "value": "high", "who": "ana"},
            {"id": "nope", "label": "priority", "value": "high"},
            {"id": "o-1", "label": "priority", "value": "urgent"},
            {"id": "o-1"},
        ]},
        headers=auth("feedback-token"),
    )
    assert r.status_code == 200
    body = r.json()
    assert body["accepted"] == 1
    assert [x["index"] for x in body["rejected"]] == [1, 2, 3]
    assert "nope" in body["rejected"][0]["reason"]
    with DecisionStore(store_path) as store:
        assert store.truth_map() == {("o-1", "priority"): "high"}
    assert registry.get_sample_value("activelabel_feedback_items_total", {"outcome": "accepted"}) == 1
    assert registry.get_sample_value("activelabel_feedback_items_total", {"outcome": "rejected"}) == 3


def test_refused_feedback_on_a_sensitive_label_does_not_echo_the_value(recorded):
    """A refused true value for a pii label is reported without quoting the value."""
    client, _, _ = recorded
    client.post("/v1/label", json={"order_id": "o-1", "path": "/"}, headers=auth("label-token"))
    r = client.post("/v1/feedback", json={"id": "o-404", "label": "customer_email", "value": SENSITIVE}, headers=auth("feedback-token"))
    assert r.json()["accepted"] == 0 and len(r.json()["rejected"]) == 1
    assert SENSITIVE not in r.text


def test_feedback_needs_the_feedback_scope(recorded):
    """A label-only token cannot send ground truth (403)."""
    client, _, _ = recorded
    r = client.post("/v1/feedback", json={"id": "o-1", "label": "priority", "value": "high"}, headers=auth("label-token"))
    assert r.status_code == 403


def test_feedback_without_a_store_says_how_to_enable_it():
    """Without a decision store, /v1/feedback answers 501 naming --record."""
    with serve_in_thread(build_app()) as url:
        r = httpx.post(url + "/v1/feedback", json={"id": "x", "label": "priority", "value": "high"}, headers=auth("feedback-token"))
    assert r.status_code == 501
    assert "--record" in r.json()["error"]["message"]


def test_feedback_feeds_the_accuracy_sli(recorded):
    """Ground truth is compared with the recorded labels: agreement counts and accuracy per label (M2)."""
    client, _, registry = recorded
    for order, path in (("a", "/pay"), ("b", "/pay"), ("c", "/home")):
        client.post("/v1/label", json={"order_id": order, "path": path}, headers=auth("label-token"))
    # a and b were labeled high (pay-any), c normal (default).
    client.post(
        "/v1/feedback",
        json={"items": [
            {"id": "a", "label": "priority", "value": "high"},
            {"id": "b", "label": "priority", "value": "critical"},
            {"id": "c", "label": "priority", "value": "normal"},
            {"id": "c", "label": "tier", "value": "gold"},
        ]},
        headers=auth("feedback-token"),
    )
    sample = registry.get_sample_value
    assert sample("activelabel_label_feedback_total", {"label": "priority", "outcome": "correct"}) == 2
    assert sample("activelabel_label_feedback_total", {"label": "priority", "outcome": "incorrect"}) == 1
    assert sample("activelabel_label_accuracy_ratio", {"label": "priority"}) == pytest.approx(2 / 3)
    assert sample("activelabel_label_accuracy_ratio", {"label": "tier"}) == 0.0
