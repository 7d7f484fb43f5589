"""Edge front doors on a real server: Envoy ext_authz (HTTP service) and the Kubernetes admission webhook."""

from __future__ import annotations

import base64
import copy
import re
import sys
from pathlib import Path

import httpx
import orjson
import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "service"))
from harness import SHARED_DATA, auth, build_app

from activelabel.service.label_output import k8s_label_value
from activelabel.service.testing import serve_in_thread

ADMISSION = SHARED_DATA / "k8s_admission"
K8S_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


@pytest.fixture(scope="module")
def client():
    with serve_in_thread(build_app()) as url, httpx.Client(base_url=url, timeout=10) as c:
        yield c


def envoy_check(client: httpx.Client, method: str, path: str, headers: dict[str, str], token: str | None = "label-token"):
    """Send what Envoy's ext_authz http_service sends: same method, path_prefix + path, no body."""
    sent = {"content-length": "0", "x-forwarded-proto": "https", "x-request-id": "5f0a1c2e-1d9b-4b8e-9d6a-3c1e2b7a9f00", **headers}
    if token is not None:
        sent["x-activelabel-token"] = token
    return client.request(method, "/v1/extauthz" + path, headers=sent)


def test_ext_authz_allows_and_returns_labels_as_headers(client):
    """An Envoy check request is answered 200 with x-label-* headers Envoy can add upstream."""
    r = envoy_check(client, "POST", "/pay/checkout?step=2", {"host": "shop.example.com", "x-tenant": "acme", "authorization": "Bearer client-jwt"})
    assert r.status_code == 200
    assert r.headers["x-label-priority"] == "high"
    assert r.headers["x-label-tier"] == "gold"
    assert r.headers["activelabel-policy-version"].startswith("sha256:")


def test_ext_authz_labels_other_methods_and_root_path(client):
    """GET and DELETE checks on any path, including the bare prefix, are labeled too."""
    assert envoy_check(client, "GET", "/", {"host": "a"}).headers["x-label-priority"] == "normal"
    assert envoy_check(client, "DELETE", "/pay/1", {"host": "a"}).headers["x-label-priority"] == "high"
    r = client.get("/v1/extauthz", headers={"x-activelabel-token": "label-token"})
    assert r.headers["x-label-priority"] == "normal"


def test_ext_authz_header_names_use_dashes_and_hide_secrets(client):
    """Label names become dashed header names; a secret label is not sent to an uncleared token."""
    r = envoy_check(client, "GET", "/", {"host": "a"})
    assert "x-label-api-key-owner" not in r.headers
    assert all("_" not in name for name in r.headers)


def test_ext_authz_token_comes_from_envoy_header_not_client_authorization(client):
    """The client's own Authorization header does not authenticate the check; the Envoy token header does."""
    r = envoy_check(client, "GET", "/", {"host": "a", "authorization": "Bearer label-token"}, token=None)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthenticated"
    assert envoy_check(client, "GET", "/", {"host": "a"}, token="feedback-token").status_code == 403


def _review(name: str) -> dict:
    return orjson.loads((ADMISSION / name).read_bytes())


def _apply_patch(obj: dict, patch: list[dict]) -> dict:
    """Apply RFC 6902 'add' and 'remove' operations (all the webhook emits)."""
    out = copy.deepcopy(obj)
    for op in patch:
        *parents, last = [t.replace("~1", "/").replace("~0", "~") for t in op["path"].split("/")[1:]]
        target = out
        for token in parents:
            target = target[token]
        if op["op"] == "add":
            target[last] = op["value"]
        else:
            assert op["op"] == "remove"
            del target[last]
    return out


def test_admission_adds_policy_labels_to_privileged_pod(client):
    """A real AdmissionReview for a privileged Pod is allowed with a JSONPatch adding the policy's labels."""
    review = _review("pod_with_privileged_containers.json")
    r = client.post("/v1/admission", json=review, headers=auth("label-token"))
    assert r.status_code == 200
    body = r.json()
    assert body["apiVersion"] == "admission.k8s.io/v1" and body["kind"] == "AdmissionReview"
    response = body["response"]
    assert response["uid"] == review["request"]["uid"]
    assert response["allowed"] is True
    assert response["patchType"] == "JSONPatch"
    patched = _apply_patch(review["request"]["object"], orjson.loads(base64.b64decode(response["patch"])))
    labels = patched["metadata"]["labels"]
    assert labels["env"] == "test"
    assert labels["activelabel.io/privileged"] == "true"
    assert labels["activelabel.io/priority"] == "normal"
    assert all(K8S_VALUE.match(v) and len(v) <= 63 for v in labels.values())


def test_admission_unprivileged_pod_has_no_privileged_label(client):
    """The non-privileged Pod of the same dataset gets the default labels but not privileged."""
    review = _review("pod_without_privileged_containers.json")
    response = client.post("/v1/admission", json=review, headers=auth("label-token")).json()["response"]
    patched = _apply_patch(review["request"]["object"], orjson.loads(base64.b64decode(response["patch"])))
    assert "activelabel.io/privileged" not in patched["metadata"]["labels"]
    assert patched["metadata"]["labels"]["activelabel.io/priority"] == "normal"


def test_admission_object_without_labels_gets_the_whole_map(client):
    """An object with no metadata.labels is patched by adding the labels map in one operation."""
    review = _review("pod_with_privileged_containers.json")
    del review["request"]["object"]["metadata"]["labels"]
    response = client.post("/v1/admission", json=review, headers=auth("label-token")).json()["response"]
    patch = orjson.loads(base64.b64decode(response["patch"]))
    assert patch == [{"op": "add", "path": "/metadata/labels", "value": patch[0]["value"]}]
    assert patch[0]["value"]["activelabel.io/privileged"] == "true"


def test_admission_delete_without_object_is_allowed_without_patch(client):
    """A DELETE review (object null) is allowed with no patch."""
    review = _review("pod_with_privileged_containers.json")
    review["request"].update(operation="DELETE", object=None)
    response = client.post("/v1/admission", json=review, headers=auth("label-token")).json()["response"]
    assert response["allowed"] is True and "patch" not in response


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r.update(apiVersion="admission.k8s.io/v1beta1"), "admissionReviewVersions"),
        (lambda r: r.pop("request"), "uid"),
        (lambda r: r.update(kind="Pod"), "AdmissionReview"),
    ],
)
def test_admission_refuses_malformed_reviews(client, mutate, message):
    """A review of the wrong version or shape gets a 400 saying what to fix."""
    review = _review("pod_with_privileged_containers.json")
    mutate(review)
    r = client.post("/v1/admission", json=review, headers=auth("label-token"))
    assert r.status_code == 400
    assert message in r.json()["error"]["message"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("gold", "gold"),
        (True, "true"),
        ("<100", "lt-100"),
        (">=1000", "ge-1000"),
        ("100-500", "100-500"),
        ("__other__", "other"),
        ("ann@example.com", "ann-example.com"),
        ("x" * 80, "x" * 63),
        ("///", None),
    ],
)
def test_kubernetes_label_values_are_made_valid(value, expected):
    """Label values are turned into valid Kubernetes label values (or dropped when nothing valid remains)."""
    assert k8s_label_value(value) == expected


def test_ext_authz_header_prefix_and_admission_key_prefix_are_configurable():
    """The ext_authz header prefix and the Kubernetes label key prefix come from the service config."""
    from activelabel.service import ServiceConfig
    from activelabel.service.config import AdmissionConfig, ExtAuthzConfig

    config = ServiceConfig(
        ext_authz=ExtAuthzConfig(header_prefix="X-Tag-", path_prefix="/authz"),
        admission=AdmissionConfig(label_key_prefix="labels.example.com/"),
    )
    with serve_in_thread(build_app(config=config)) as url, httpx.Client(base_url=url) as c:
        r = c.get("/authz/pay/1", headers={"x-activelabel-token": "label-token", "host": "a"})
        assert r.headers["x-tag-priority"] == "high"
        review = _review("pod_with_privileged_containers.json")
        response = c.post("/v1/admission", json=review, headers=auth("label-token")).json()["response"]
    keys = [op["path"] for op in orjson.loads(base64.b64decode(response["patch"]))]
    assert "/metadata/labels/labels.example.com~1privileged" in keys


def test_ext_authz_tells_envoy_to_drop_spoofed_label_headers(client):
    """Label headers the service did not set are listed in x-envoy-auth-headers-to-remove, so a client cannot spoof them."""
    r = envoy_check(client, "GET", "/pay/1", {"host": "a", "x-label-privileged": "true", "x-label-api-key-owner": "me"})
    to_remove = {h.strip() for h in r.headers["x-envoy-auth-headers-to-remove"].split(",")}
    assert {"x-label-privileged", "x-label-api-key-owner", "x-label-tier"} <= to_remove
    assert "x-label-priority" not in to_remove
    assert r.headers["x-label-priority"] == "high"


def test_admission_removes_policy_labels_the_creator_set_itself(client):
    """A Pod that arrives already carrying one of the policy's label keys has it removed unless the policy sets it."""
    review = _review("pod_without_privileged_containers.json")
    review["request"]["object"]["metadata"]["labels"]["activelabel.io/privileged"] = "false"
    review["request"]["object"]["metadata"]["labels"]["activelabel.io/unrelated"] = "kept"
    response = client.post("/v1/admission", json=review, headers=auth("label-token")).json()["response"]
    patched = _apply_patch(review["request"]["object"], orjson.loads(base64.b64decode(response["patch"])))
    assert "activelabel.io/privileged" not in patched["metadata"]["labels"]
    assert patched["metadata"]["labels"]["activelabel.io/unrelated"] == "kept"


def test_ext_authz_with_the_edge_example_policy_labels_live_requests():
    """The access-log edge policy labels Envoy checks too: user agent and path reach its rules under the same names."""
    policy = Path(__file__).resolve().parents[1] / "examples" / "edge" / "policy.yaml"
    with serve_in_thread(build_app(policy)) as url, httpx.Client(base_url=url) as c:
        bot = envoy_check(c, "GET", "/robots.txt", {"host": "a", "user-agent": "Googlebot/2.1", "x-forwarded-for": "66.249.73.135"})
        human = envoy_check(c, "GET", "/images/logo.png", {"host": "a", "user-agent": "Mozilla/5.0 (X11; Linux x86_64)"})
    assert bot.status_code == 200 and bot.headers["x-label-bot"] == "true"
    assert human.headers["x-label-bot"] == "false"
    assert human.headers["x-label-static-asset"] == "true"
