"""Core routes: ``POST /v1/label``, the policy registry and reload, health, metrics."""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response

from activelabel.errors import InputError
from activelabel.service._http import HttpError, decode_json, json_response, read_body, require_media_type
from activelabel.service.label_output import visible_explain, visible_labels
from activelabel.service.state import Stopwatch, front_door, label_many, label_one, state_of

VERSION_HEADER = "activelabel-policy-version"


def _is_batch(body: Any) -> bool:
    return isinstance(body, dict) and len(body) == 1 and isinstance(body.get("events"), list)


@front_door("label")
async def label_route(request: Request) -> Response:
    """Label one event (the JSON object) or a batch ``{"events": [...]}``."""
    state = state_of(request)
    caller = state.auth.caller(request, "label")
    require_media_type(request, ("application/json",))
    body = decode_json(await read_body(request, state.config.max_body_bytes))
    explain = request.query_params.get("explain", "").lower() in ("1", "true", "yes")
    snapshot = state.snapshot()
    watch = Stopwatch()
    secret = snapshot.secret_labels

    if _is_batch(body):
        events = body["events"]
        if len(events) > state.config.max_batch_events:
            raise HttpError(
                413,
                "batch_too_large",
                f"batch has {len(events)} events; the limit is {state.config.max_batch_events}, split it",
                limit_events=state.config.max_batch_events,
            )
        results, labeled, dead = _label_batch(snapshot, events, caller, secret, explain)
        payload: dict[str, Any] = {"results": results, "policy_version": snapshot.version}
    elif isinstance(body, dict):
        try:
            decision = label_one(snapshot, body)
        except InputError as exc:
            raise HttpError(422, "unlabelable_event", f"event cannot be labeled: {exc.reason}") from None
        payload = _result(decision, caller, secret, explain)
        payload["policy_version"] = snapshot.version
        labeled, dead = 1, 0
    else:
        raise HttpError(
            400,
            "not_an_object",
            f"body is a JSON {type(body).__name__}; send one event as a JSON object or a batch as {{\"events\": [...]}}",
        )
    elapsed = watch.seconds()
    state.metrics.observe_labeled("label", elapsed, labeled, dead)
    return json_response(
        payload,
        headers={VERSION_HEADER: snapshot.version, "server-timing": f"label;dur={elapsed * 1000:.3f}"},
    )


def _result(decision: Any, caller: Any, secret: frozenset[str], explain: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"labels": visible_labels(decision.labels, secret, caller)}
    if explain:
        out["label_meta"] = visible_explain(decision.explain(), secret, caller)
    return out


def _label_batch(
    snapshot: Any, events: list[Any], caller: Any, secret: frozenset[str], explain: bool
) -> tuple[list[dict[str, Any]], int, int]:
    """Label the objects of a batch in one engine call; non-objects come back as per-item errors."""
    objects = [e for e in events if isinstance(e, dict)]
    try:
        decisions = iter(label_many(snapshot, objects))
        dead_items: set[int] = set()
    except InputError:
        # One bad event must not sink the batch: fall back to per-event labeling.
        decisions, dead_items = _label_one_by_one(snapshot, objects)
    results: list[dict[str, Any]] = []
    dead = 0
    index_in_objects = 0
    for position, event in enumerate(events):
        if not isinstance(event, dict):
            dead += 1
            results.append({"error": {"code": "not_an_object", "message": f"event {position} is a JSON {type(event).__name__}, expected an object"}})
            continue
        decision = next(decisions)
        if index_in_objects in dead_items:
            dead += 1
            results.append({"error": {"code": "unlabelable_event", "message": str(decision)}})
        else:
            results.append(_result(decision, caller, secret, explain))
        index_in_objects += 1
    return results, len(events) - dead, dead


def _label_one_by_one(snapshot: Any, objects: list[Any]) -> tuple[Any, set[int]]:
    out: list[Any] = []
    dead: set[int] = set()
    for i, event in enumerate(objects):
        try:
            out.append(label_one(snapshot, event))
        except InputError as exc:
            dead.add(i)
            out.append(f"event cannot be labeled: {exc.reason}")
    return iter(out), dead


async def policy_route(request: Request) -> Response:
    """The label registry of the serving policy."""
    state = state_of(request)
    try:
        state.auth.caller(request, "label")
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
        if value is None:
            continue
        value = getattr(value, "value", value)  # enums → their spelling
        if isinstance(value, tuple):
            value = list(value)
        entry[field_name] = value
    return entry


async def reload_route(request: Request) -> Response:
    """Reload the policy file; a refused policy leaves the serving one in place."""
    state = state_of(request)
    try:
        state.auth.caller(request, "admin")
    except HttpError as exc:
        return exc.response()
    outcome = await anyio.to_thread.run_sync(state.runtime.reload, "api")
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
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
