"""The HTTP sidecar: POST /v1/label, registry, health, auth and bad input, on a real server."""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import httpx
import orjson
import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "service"))
from harness import POLICY, auth, build_app

from activelabel.service import AuthConfigError, ServiceConfig, create_app
from activelabel.service.testing import serve_in_thread

CONFIG = ServiceConfig(max_body_bytes=4096, max_batch_events=5)


@pytest.fixture(scope="module")
def base_url():
    with serve_in_thread(build_app(config=CONFIG)) as url:
        yield url


@pytest.fixture(scope="module")
def client(base_url):
    with httpx.Client(base_url=base_url, timeout=10) as c:
        yield c


def test_single_event_gets_labels_and_policy_version(client):
    """One JSON event is answered with its labels, the policy version in the body and in a header."""
    r = client.post("/v1/label", json={"path": "/pay/1", "status": 503, "tenant": "acme"}, headers=auth("label-token"))
    assert r.status_code == 200
    body = r.json()
    assert body["labels"]["priority"] == "critical"
    assert body["labels"]["tier"] == "gold"
    assert body["policy_version"].startswith("sha256:")
    assert r.headers["activelabel-policy-version"] == body["policy_version"]


def test_batch_is_answered_in_input_order(client):
    """A batch {"events": [...]} is answered with one result per event, in input order."""
    events = [{"path": "/pay/1", "status": 503}, {"path": "/home", "status": 200}, {"path": "/pay/2", "status": 200}]
    r = client.post("/v1/label", json={"events": events}, headers=auth("label-token"))
    assert r.status_code == 200
    priorities = [res["labels"]["priority"] for res in r.json()["results"]]
    assert priorities == ["critical", "normal", "high"]
    assert "policy_version" in r.json()


def test_explain_adds_label_meta(client):
    """With ?explain=true each result carries label_meta saying where each label came from."""
    r = client.post("/v1/label?explain=true", json={"path": "/pay/1", "status": 503}, headers=auth("label-token"))
    meta = r.json()["label_meta"]
    assert "priority" in meta["labels"]
    r = client.post("/v1/label?explain=true", json={"events": [{"path": "/x", "status": 1}]}, headers=auth("label-token"))
    assert "label_meta" in r.json()["results"][0]


def test_batch_item_that_is_not_an_object_is_reported_not_dropped(client):
    """A batch element that is not an object gets an error entry in its slot; the others are labeled."""
    r = client.post("/v1/label", json={"events": [{"path": "/pay", "status": 1}, 42]}, headers=auth("label-token"))
    assert r.status_code == 200
    first, second = r.json()["results"]
    assert first["labels"]["priority"] == "high"
    assert second["error"]["code"] == "not_an_object"


def test_secret_label_needs_secret_clearance(client):
    """A secret label is returned only to a token cleared for secrets; a pii label reaches an uncleared token only protected."""
    event = {"path": "/", "status": 200, "email": "ann@example.com", "key_owner": "team-blue"}
    plain = client.post("/v1/label", json=event, headers=auth("label-token")).json()["labels"]
    cleared = client.post("/v1/label", json=event, headers=auth("secret-token")).json()["labels"]
    assert "api_key_owner" not in plain
    assert plain["customer_email"] != "ann@example.com" and "ann@example.com" not in str(plain)
    assert cleared["customer_email"] == "ann@example.com"
    assert cleared["api_key_owner"] == "team-blue"
    explained = client.post("/v1/label?explain=true", json=event, headers=auth("label-token")).json()
    assert "api_key_owner" not in explained["label_meta"]["labels"]


def test_health_and_readiness(client):
    """/healthz says the process is up and /readyz that a policy is loaded, without a token."""
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["policy_version"].startswith("sha256:")


def test_policy_registry(client):
    """GET /v1/policy lists the labels with type, owner, description and sensitivity."""
    r = client.get("/v1/policy", headers=auth("label-token"))
    body = r.json()
    assert body["name"] == "service-fixture"
    assert body["labels"]["priority"]["type"] == "enum"
    assert body["labels"]["priority"]["owner"] == "payments-sre"
    assert body["labels"]["priority"]["description"] == "Routing priority at the ingress."
    assert body["labels"]["customer_email"]["sensitivity"] == "pii"


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({}, 401, "unauthenticated"),
        ({"authorization": "Bearer nope"}, 401, "unauthenticated"),
        ({"authorization": "Basic abc"}, 401, "unauthenticated"),
        (auth("feedback-token"), 403, "forbidden"),
    ],
)
def test_label_needs_a_token_with_label_scope(client, headers, status, code):
    """Labeling without a valid token is 401, with a token lacking the label scope 403, as JSON."""
    r = client.post("/v1/label", json={"path": "/"}, headers=headers)
    assert r.status_code == status
    assert r.json()["error"]["code"] == code


def test_reload_needs_admin_scope(client):
    """POST /v1/policy/reload with a label-only token is refused with 403."""
    r = client.post("/v1/policy/reload", headers=auth("label-token"))
    assert r.status_code == 403
    assert r.json()["error"]["required_scope"] == "admin"


@pytest.mark.parametrize(
    ("content", "headers", "status", "code"),
    [
        (b'{"path": ', {"content-type": "application/json"}, 400, "bad_json"),
        (b"", {"content-type": "application/json"}, 400, "bad_json"),
        (b"[1, 2]", {"content-type": "application/json"}, 400, "not_an_object"),
        (b'"text"', {"content-type": "application/json"}, 400, "not_an_object"),
        (b'{"path": "/"}', {"content-type": "text/plain"}, 415, "unsupported_media_type"),
        (b'{"path": "/"}', {}, 415, "unsupported_media_type"),
        (b"x" * 5000, {"content-type": "application/json"}, 413, "body_too_large"),
        (b"[" * 2000 + b"]" * 2000, {"content-type": "application/json"}, 400, "bad_json"),
        (b"not gzip", {"content-type": "application/json", "content-encoding": "gzip"}, 400, "bad_encoding"),
        (b"{}", {"content-type": "application/json", "content-encoding": "br"}, 415, "unsupported_encoding"),
    ],
)
def test_bad_input_gets_a_json_4xx(client, content, headers, status, code):
    """Malformed JSON, wrong content type or encoding, oversize or too deep bodies get a 4xx JSON error naming the problem."""
    r = client.post("/v1/label", content=content, headers={**auth("label-token"), **headers})
    assert r.status_code == status
    assert r.json()["error"]["code"] == code
    assert r.json()["error"]["message"]


def test_gzip_bomb_hits_the_body_limit(client):
    """A small gzip body that inflates past the limit is refused with 413, not inflated in full."""
    bomb = gzip.compress(b'{"pad": "' + b"a" * 100_000 + b'"}')
    assert len(bomb) < 4096
    r = client.post(
        "/v1/label", content=bomb, headers={**auth("label-token"), "content-type": "application/json", "content-encoding": "gzip"}
    )
    assert r.status_code == 413


def test_gzip_body_is_accepted(client):
    """A gzip-compressed event within the limit is labeled like a plain one."""
    body = gzip.compress(orjson.dumps({"path": "/pay/1", "status": 500}))
    r = client.post(
        "/v1/label", content=body, headers={**auth("label-token"), "content-type": "application/json", "content-encoding": "gzip"}
    )
    assert r.json()["labels"]["priority"] == "critical"


def test_batch_over_the_limit_is_refused(client):
    """A batch with more events than max_batch_events is refused with 413 naming the limit."""
    r = client.post("/v1/label", json={"events": [{}] * 6}, headers=auth("label-token"))
    assert r.status_code == 413
    assert r.json()["error"]["limit_events"] == 5


def test_server_keeps_serving_after_bad_input(client):
    """After a run of bad requests the same server still labels correctly."""
    for _ in range(5):
        client.post("/v1/label", content=b"\xff\xfe", headers={**auth("label-token"), "content-type": "application/json"})
    r = client.post("/v1/label", json={"path": "/pay", "status": 502}, headers=auth("label-token"))
    assert r.json()["labels"]["priority"] == "critical"


def test_service_refuses_to_start_without_auth_choice():
    """Building the service with neither tokens nor no_auth fails, saying how to fix it."""
    with pytest.raises(AuthConfigError, match="--no-auth"):
        create_app(POLICY)


def test_no_auth_mode_labels_without_token_but_hides_secrets():
    """With auth off anyone may label, but secret labels are still withheld."""
    with serve_in_thread(build_app(no_auth=True)) as url:
        r = httpx.post(url + "/v1/label", json={"path": "/pay", "status": 1, "key_owner": "x"})
    assert r.status_code == 200
    assert r.json()["labels"]["priority"] == "high"
    assert "api_key_owner" not in r.json()["labels"]


def test_label_endpoint_only_takes_post(client):
    """GET /v1/label is answered 405 with a JSON error and an Allow header."""
    r = client.get("/v1/label", headers=auth("label-token"))
    assert r.status_code == 405
    assert r.headers["allow"] == "POST"
    assert r.json()["error"]["code"] == "method_not_allowed"


def test_requests_beyond_max_in_flight_get_503_with_retry_after():
    """When max_in_flight requests are being handled, the next one is shed with 503 and Retry-After; health still answers; a body still arriving does not count."""
    import socket
    import threading
    from urllib.parse import urlsplit

    from activelabel.service.config import OtlpConfig

    # The request held in flight is an OTLP export waiting on its next hop, a socket
    # that accepts and never answers (a stalled collector).
    stalled = socket.socket()
    stalled.bind(("127.0.0.1", 0))
    stalled.listen(8)
    hop = f"http://127.0.0.1:{stalled.getsockname()[1]}"
    config = ServiceConfig(max_in_flight=1, otlp=OtlpConfig(forward_endpoint=hop, forward_timeout_s=30))
    spans = orjson.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "5b8efff798038103d269b633813fc60c",
                                                                        "spanId": "eee19b7ec3c1b174", "name": "x"}]}]}]})
    with serve_in_thread(build_app(config=config)) as url:
        host, port = urlsplit(url).hostname, urlsplit(url).port
        with socket.create_connection((host, port)) as trickling, httpx.Client(base_url=url, timeout=10) as client:
            # Headers and 8 bytes of a body: not in flight until the body is complete.
            trickling.sendall(b"POST /v1/label HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                              b"authorization: Bearer label-token\r\ncontent-length: 31\r\n\r\n{\"path\":")
            assert client.post("/v1/label", json={"path": "/"}, headers=auth("label-token")).status_code == 200
            held: dict[str, int] = {}
            forwarder = threading.Thread(target=lambda: held.update(status=client.post(
                "/v1/traces", content=spans, headers={**auth("label-token"), "content-type": "application/json"}).status_code))
            forwarder.start()
            next_hop, _ = stalled.accept()  # the export is now in flight, waiting on us
            with httpx.Client(base_url=url, timeout=10) as other:
                shed = other.post("/v1/label", json={"path": "/"}, headers=auth("label-token"))
                assert shed.status_code == 503
                assert shed.headers["retry-after"] == "1"
                assert shed.json()["error"]["code"] == "overloaded"
                assert other.get("/healthz").status_code == 200
                next_hop.close()  # the next hop fails: the export is answered and leaves
                forwarder.join(30)
                assert held["status"] == 502
                assert other.post("/v1/label", json={"path": "/"}, headers=auth("label-token")).status_code == 200
    stalled.close()


def test_unknown_paths_and_methods_get_json_errors(client):
    """An unknown endpoint is a JSON 404 and a wrong method a JSON 405, like every other error."""
    r = client.get("/v2/label", headers=auth("label-token"))
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = client.delete("/v1/policy", headers=auth("label-token"))
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
