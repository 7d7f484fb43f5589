"""Core routes: the policy registry and reload, health, metrics (``POST /v1/label`` is in ``routes_label``)."""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response

from activelabel.service._http import HttpError, json_response
from activelabel.service.routes_label import VERSION_HEADER
from activelabel.service.state import state_of


async def policy_route(request: Request) -> Response:
    """The label registry of the serving policy."""
    state = state_of(request)
    try:
        state.auth.caller(request.headers, "label")
        snapshot = state.snapshot()
    except HttpError as exc:
        return exc.response()
    policy = snapshot.labeler.policy
    labels = {name: _label_entry(spec) for name, spec in (getattr(policy, "labels", {}) or {}).items()}
    return json_response(
        {"name": snapshot.name, "version": snapshot.version, "labels": labels},
        headers={VERSION_HEADER: snapshot.version},
    )


_REGISTRY_FIELDS = ("type", "values", "bounds", "default", "resolve", "owner", "description", "sensitivity", "max_cardinality", "overflow")


def _label_entry(spec: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {}
    for field_name in _REGISTRY_FIELDS:
        value = getattr(spec, field_name, None)
        if value is None or value == () or value == []:
            continue
        if field_name == "overflow" and getattr(spec, "max_cardinality", None) is None:
            continue  # only meaningful under a cardinality limit
        value = getattr(value, "value", value)  # enums → their spelling
        if isinstance(value, tuple):
            value = list(value)
        entry[field_name] = value
    return entry


async def reload_route(request: Request) -> Response:
    """Reload the policy file; a refused policy leaves the serving one in place."""
    state = state_of(request)
    try:
        caller = state.auth.caller(request.headers, "admin")
    except HttpError as exc:
        return exc.response()
    outcome = await anyio.to_thread.run_sync(lambda: state.runtime.reload("api", who=caller.name))
    body = outcome.as_json()
    if outcome.accepted:
        return json_response(body)
    body["error"] = {
        "code": "policy_refused",
        "message": f"the new policy was refused with {len(outcome.errors)} error(s); still serving {outcome.old_version}",
    }
    return json_response(body, status=422)


async def healthz_route(request: Request) -> Response:
    """The process is up."""
    return json_response({"status": "ok"})


async def readyz_route(request: Request) -> Response:
    """A policy is loaded and compiled."""
    runtime = state_of(request).runtime
    if not runtime.ready:
        return json_response({"status": "not ready", "reason": "no policy loaded"}, status=503)
    return json_response({"status": "ready", "policy_version": runtime.current.version})


async def metrics_route(request: Request) -> Response:
    """Prometheus exposition of the service's registry."""
    registry = state_of(request).metrics.registry
    # Off the event loop: drift scores (M7) and the ground-truth read (M2) take milliseconds.
    body = await anyio.to_thread.run_sync(generate_latest, registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
