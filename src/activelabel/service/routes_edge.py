"""Edge front doors: Envoy ``ext_authz`` (HTTP service) and the Kubernetes admission webhook."""

from __future__ import annotations

import base64
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from activelabel.service._http import (
    HttpError,
    decode_json,
    json_response,
    read_body,
    require_media_type,
)
from activelabel.service.http_event import headers_dict, http_request_event
from activelabel.service.label_output import (
    header_name,
    header_value,
    json_pointer_token,
    k8s_label_value,
    visible_labels,
)
from activelabel.service.routes_label import VERSION_HEADER
from activelabel.service.state import (
    ServiceState,
    Stopwatch,
    front_door,
    internal_error,
    label_one,
    state_of,
)

# Envoy removes the request headers named here before sending the request upstream.
ENVOY_HEADERS_TO_REMOVE = "x-envoy-auth-headers-to-remove"

async def ext_authz_asgi(state: ServiceState, scope: Scope, receive: Receive, send: Send) -> None:
    """Label the request Envoy forwards and allow it, with the labels as response headers.

    Envoy (``http_service`` with ``path_prefix``) sends the client's method, the
    prefix + original path and the allowed headers, no body by default. A 200
    means *allow*; headers matched by ``allowed_upstream_headers`` are added to
    the request Envoy sends upstream. A plain ASGI handler (``LabelService``
    dispatches it directly): Envoy calls it for every request at the edge.
    """
    try:
        out = _check(state, scope)
        status, body = 200, b""
    except HttpError as exc:
        state.metrics.observe_error("ext_authz", exc.code)
        status, body, out = exc.status, exc.body(), {"content-type": "application/json", **exc.headers}
    except Exception as exc:  # noqa: BLE001 - the last line of defence keeps the worker alive
        error = internal_error(state, "ext_authz", exc)
        status, body, out = error.status, error.body(), {"content-type": "application/json"}
    out["content-length"] = str(len(body))
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in out.items()],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _check(state: ServiceState, scope: Scope) -> dict[str, str]:
    config = state.config.ext_authz
    headers = headers_dict(scope["headers"])
    caller = state.auth.caller(headers, "label", token_header=config.token_header)
    # Our own token header is Envoy→us plumbing, not part of the client's request.
    headers.pop(config.token_header, None)
    snapshot = state.snapshot()
    watch = Stopwatch()
    path = scope["path"][len(config.path_prefix.rstrip("/")):] or "/"
    query = scope.get("query_string", b"").decode("latin-1")
    decision = label_one(snapshot, http_request_event(scope["method"], path, query, headers))
    labels = visible_labels(decision.labels, snapshot, caller)
    out = {header_name(config.header_prefix, name): header_value(value) for name, value in labels.items()}
    # A client could send its own x-label-* headers; Envoy removes the ones we list
    # here, so upstream only ever sees labels this service set.
    unset = sorted(header_name(config.header_prefix, n) for n in snapshot.label_names if n not in labels)
    if unset:
        out[ENVOY_HEADERS_TO_REMOVE] = ", ".join(unset)
    out[VERSION_HEADER] = snapshot.version
    elapsed = watch.seconds()
    out["server-timing"] = f"label;dur={elapsed * 1000:.3f}"
    state.metrics.observe_labeled("ext_authz", elapsed, 1, cpu_seconds=watch.cpu_seconds())
    state.metrics.tap.offer("ext_authz", snapshot, decision)
    return out


@front_door("admission")
async def admission_route(request: Request) -> Response:
    """Answer an ``AdmissionReview`` (admission.k8s.io/v1) with a JSONPatch adding the labels."""
    state = state_of(request)
    caller = state.auth.caller(request.headers, "label")
    require_media_type(request.headers, ("application/json",))
    review = decode_json(await read_body(request, state.config.max_body_bytes))
    admission_request = _admission_request(review)
    snapshot = state.snapshot()
    watch = Stopwatch()
    decision = label_one(snapshot, admission_request)
    labels = visible_labels(decision.labels, snapshot, caller)
    response: dict[str, Any] = {"uid": admission_request["uid"], "allowed": True}
    patch = admission_patch(
        admission_request.get("object"), labels, state.config.admission.label_key_prefix, snapshot.label_names
    )
    if patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(orjson.dumps(patch)).decode("ascii")
    state.metrics.observe_labeled("admission", watch.seconds(), 1, cpu_seconds=watch.cpu_seconds())
    state.metrics.tap.offer("admission", snapshot, decision)
    return json_response(
        {"apiVersion": review["apiVersion"], "kind": "AdmissionReview", "response": response},
        headers={VERSION_HEADER: snapshot.version},
    )


def _admission_request(review: Any) -> dict[str, Any]:
    if not isinstance(review, dict) or review.get("kind") != "AdmissionReview":
        raise HttpError(400, "bad_admission_review", "body must be an AdmissionReview object (kind: AdmissionReview)")
    if review.get("apiVersion") != "admission.k8s.io/v1":
        raise HttpError(
            400,
            "bad_admission_review",
            "only admission.k8s.io/v1 is supported; set admissionReviewVersions: [v1] in the webhook configuration",
        )
    admission_request = review.get("request")
    if not isinstance(admission_request, dict) or not isinstance(admission_request.get("uid"), str):
        raise HttpError(400, "bad_admission_review", "AdmissionReview.request with a string uid is required")
    return admission_request


def admission_patch(
    obj: Any, labels: dict[str, Any], key_prefix: str, declared: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """JSONPatch (RFC 6902) ops putting ``labels`` into ``obj.metadata.labels`` as valid Kubernetes labels.

    Labels whose value has no valid Kubernetes spelling are left out. Keys of
    ``declared`` labels that the object already carries but this answer does not
    set are removed: whoever creates the object must not be able to claim them.
    A DELETE (no object) gets no patch.
    """
    if not isinstance(obj, dict):
        return []
    k8s_labels = {}
    for name, value in labels.items():
        k8s_value = k8s_label_value(value)
        if k8s_value is not None:
            k8s_labels[key_prefix + name] = k8s_value
    metadata = obj.get("metadata")
    existing = metadata.get("labels") if isinstance(metadata, dict) else None
    if not isinstance(existing, dict):
        if not k8s_labels:
            return []
        if not isinstance(metadata, dict):
            return [{"op": "add", "path": "/metadata", "value": {"labels": k8s_labels}}]
        return [{"op": "add", "path": "/metadata/labels", "value": k8s_labels}]
    # "add" on an existing member replaces it, so re-labeling is idempotent.
    ops = [
        {"op": "add", "path": "/metadata/labels/" + json_pointer_token(key), "value": value}
        for key, value in k8s_labels.items()
    ]
    stale = [key_prefix + n for n in declared if key_prefix + n in existing and key_prefix + n not in k8s_labels]
    ops.extend({"op": "remove", "path": "/metadata/labels/" + json_pointer_token(key)} for key in stale)
    return ops
