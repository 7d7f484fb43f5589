"""Hostile input on every front door: arbitrary bytes and JSON never produce a 500 or stop the server."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "service"))
from harness import auth, build_app

from activelabel.service.testing import serve_in_thread

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
# Shapes close to what each door expects, so fuzzing gets past the first check.
OTLP_KEYS = st.sampled_from(["resourceSpans", "resourceLogs", "scopeSpans", "scopeLogs", "spans", "logRecords", "attributes", "traceId", "spanId", "body", "kind", "status", "key", "value", "stringValue"])
OTLP_JSON = st.recursive(JSON, lambda inner: st.dictionaries(OTLP_KEYS, inner, max_size=4) | st.lists(inner, max_size=3), max_leaves=25)
REVIEW = st.fixed_dictionaries(
    {"apiVersion": st.just("admission.k8s.io/v1"), "kind": st.just("AdmissionReview"), "request": st.fixed_dictionaries({"uid": st.text(max_size=8)}, optional={"object": JSON, "operation": JSON})}
)
FUZZ = settings(max_examples=120, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def client():
    with serve_in_thread(build_app()) as url, httpx.Client(base_url=url, timeout=10) as c:
        yield c


def _post(client: httpx.Client, path: str, content: bytes, media: str) -> httpx.Response:
    r = client.post(path, content=content, headers={**auth("label-token"), "content-type": media})
    assert r.status_code < 500, r.text
    assert r.headers["content-type"].startswith(("application/json", "application/x-protobuf"))
    return r


@FUZZ
@given(body=st.binary(max_size=300))
def test_arbitrary_bytes_never_500(client, body):
    """Random bytes on /v1/label, /v1/traces (protobuf), /v1/logs and /v1/admission get an answer below 500."""
    _post(client, "/v1/label", body, "application/json")
    _post(client, "/v1/traces", body, "application/x-protobuf")
    _post(client, "/v1/logs", body, "application/x-protobuf")
    _post(client, "/v1/admission", body, "application/json")


@FUZZ
@given(value=JSON)
def test_arbitrary_json_events_are_labeled_or_refused(client, value):
    """Any JSON value sent as an event or a batch is labeled (objects) or refused with a 4xx (anything else)."""
    r = _post(client, "/v1/label", orjson.dumps(value), "application/json")
    assert (r.status_code == 200) == isinstance(value, dict)
    _post(client, "/v1/label", orjson.dumps({"events": [value, value]}), "application/json")


@FUZZ
@given(value=OTLP_JSON)
def test_arbitrary_otlp_json_never_500(client, value):
    """OTLP-shaped JSON with wrong types and missing fields is labeled or refused, never a 500."""
    _post(client, "/v1/traces", orjson.dumps(value), "application/json")
    _post(client, "/v1/logs", orjson.dumps(value), "application/json")


@FUZZ
@given(review=REVIEW)
def test_arbitrary_admission_objects_never_500(client, review):
    """AdmissionReviews whose object is any JSON value are answered allowed, never a 500."""
    r = _post(client, "/v1/admission", orjson.dumps(review), "application/json")
    assert r.status_code == 200 and r.json()["response"]["allowed"] is True


def test_server_still_labels_after_the_fuzzing(client):
    """After all of the above the same server process labels a normal event."""
    r = client.post("/v1/label", json={"path": "/pay", "status": 503}, headers=auth("label-token"))
    assert r.json()["labels"]["priority"] == "critical"


HEADER_VALUE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30).map(str.strip)  # HTTP trims edges


@FUZZ
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]),
    path=st.text(max_size=40),
    headers=st.dictionaries(st.sampled_from(["x-tenant", "x-forwarded-for", "user-agent", "x-user-email", "cookie", "x-label-tier"]), HEADER_VALUE, max_size=4),
)
def test_arbitrary_envoy_checks_are_answered_200(client, method, path, headers):
    """Any method, path and header values forwarded by Envoy are labeled and allowed."""
    from urllib.parse import quote

    r = client.request(method, "/v1/extauthz/" + quote(path), headers={**headers, "x-activelabel-token": "label-token", "host": "a"})
    assert r.status_code == 200
    assert "x-label-priority" in r.headers
