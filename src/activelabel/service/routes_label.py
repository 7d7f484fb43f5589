"""``POST /v1/label``: the hot path, as a plain ASGI handler.

It skips Starlette's routing, request and response objects (``LabelService``
dispatches it directly): at tens of microseconds per labeling, the framework
otherwise costs more than the work.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

import orjson
from starlette.types import Receive, Scope, Send

from activelabel.errors import ActiveLabelError, InputError
from activelabel.service._http import (
    HttpError,
    decode_json,
    receive_body,
    require_media_type,
)
from activelabel.service.auth import Caller
from activelabel.service.label_output import visible_explain, visible_labels
from activelabel.service.policy_runtime import PolicySnapshot
from activelabel.service.recording import record_decisions
from activelabel.service.state import (
    ServiceState,
    Stopwatch,
    internal_error,
    label_many,
    label_one,
)

VERSION_HEADER = "activelabel-policy-version"
ARM_HEADER = "activelabel-arm"
STABLE_ARM = "stable"
_JSON = (b"content-type", b"application/json")


async def label_asgi(state: ServiceState, scope: Scope, receive: Receive, send: Send) -> None:
    """Label one event (the JSON object) or a batch ``{"events": [...]}``; always answers."""
    extra: list[tuple[bytes, bytes]] = []
    try:
        if scope["method"] != "POST":
            error = HttpError(405, "method_not_allowed", "use POST with a JSON event or {\"events\": [...]}")
            error.headers["allow"] = "POST"
            raise error
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        payload, version, arm, elapsed = await _label_request(state, headers, scope.get("query_string", b""), receive)
        status, body = 200, orjson.dumps(payload)
        extra = [(b"activelabel-policy-version", version.encode()), (b"activelabel-arm", arm.encode()),
                 (b"server-timing", f"label;dur={elapsed * 1000:.3f}".encode())]
    except HttpError as exc:
        state.metrics.observe_error("label", exc.code)
        status, body = exc.status, exc.body()
        extra = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in exc.headers.items()]
    except Exception as exc:  # noqa: BLE001 - the last line of defence keeps the worker alive
        error = internal_error(state, "label", exc)
        status, body = error.status, error.body()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [_JSON, (b"content-length", str(len(body)).encode()), *extra],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _wants_explain(query_string: bytes) -> bool:
    if not query_string:
        return False
    values = parse_qs(query_string.decode("latin-1")).get("explain", [])
    return any(v.lower() in ("1", "true", "yes") for v in values)


def _is_batch(body: Any) -> bool:
    return isinstance(body, dict) and len(body) == 1 and isinstance(body.get("events"), list)


async def _label_request(
    state: ServiceState, headers: dict[str, str], query_string: bytes, receive: Receive
) -> tuple[dict[str, Any], str, str, float]:
    """The answer, the policy version(s) and arm(s) that made it (for the headers), and the labeling time."""
    caller = state.auth.caller(headers, "label")
    require_media_type(headers, ("application/json",))
    body = decode_json(await receive_body(receive, headers, state.config.max_body_bytes))
    explain = _wants_explain(query_string)
    snapshot = state.snapshot()
    watch = Stopwatch()
    rollout = state.rollouts.active() if state.rollouts is not None else None
    if rollout is not None:
        answer, version, arm, served, failed = _label_in_rollout(state, rollout, body, caller, explain)
        elapsed = watch.seconds()
        # M1 per arm: a batch served by both versions is timed once, as `mixed`.
        state.metrics.observe_labeled("label", elapsed, served, failed, cpu_seconds=watch.cpu_seconds(),
                                      arm=arm if "," not in arm else "mixed")
        return answer, version, arm, elapsed

    if _is_batch(body):
        events = body["events"]
        if len(events) > state.config.max_batch_events:
            raise HttpError(
                413,
                "batch_too_large",
                f"batch has {len(events)} events; the limit is {state.config.max_batch_events}, split it",
                limit_events=state.config.max_batch_events,
            )
        results, labeled, dead, pairs = _label_batch(snapshot, events, caller, explain)
        state.metrics.observe_decisions(snapshot, (d.labels for _, (_, d) in pairs))
        state.metrics.tap.offer_many("label", snapshot, [d for _, (_, d) in pairs])
        ids: list[str | None] = [None] * len(pairs)
        if state.store is not None:
            ids = record_decisions(state, [(e, d) for _, (e, d) in pairs])
            for (result, _), record_id in zip(pairs, ids, strict=True):
                result["id"] = record_id
        if state.audit is not None:
            _audit(state, snapshot, [(e, d, STABLE_ARM, i) for (_, (e, d)), i in zip(pairs, ids, strict=True)])
        payload: dict[str, Any] = {"results": results, "policy_version": snapshot.version}
    elif isinstance(body, dict):
        try:
            decision = label_one(snapshot, body)
        except InputError as exc:
            raise HttpError(422, "unlabelable_event", f"event cannot be labeled: {exc.reason}") from None
        payload = _result(decision, caller, snapshot, explain)
        if state.store is not None:
            payload["id"] = record_decisions(state, [(body, decision)])[0]
        if state.audit is not None:
            _audit(state, snapshot, [(body, decision, STABLE_ARM, payload.get("id"))])
        payload["policy_version"] = snapshot.version
        labeled, dead = 1, {}
        state.metrics.observe_decisions(snapshot, (decision.labels,))
        state.metrics.tap.offer("label", snapshot, decision)
    else:
        raise HttpError(
            400,
            "not_an_object",
            f"body is a JSON {type(body).__name__}; send one event as a JSON object or a batch as {{\"events\": [...]}}",
        )
    elapsed = watch.seconds()
    state.metrics.observe_labeled("label", elapsed, labeled, dead, cpu_seconds=watch.cpu_seconds())
    return payload, snapshot.version, STABLE_ARM, elapsed


def _result(decision: Any, caller: Caller, snapshot: PolicySnapshot, explain: bool,
            arm: str = STABLE_ARM) -> dict[str, Any]:
    out: dict[str, Any] = {"labels": visible_labels(decision.labels, snapshot, caller)}
    if explain:
        meta = visible_explain(decision.explain(), snapshot, caller)
        meta["arm"] = arm
        meta.setdefault("policy_version", decision.policy_version)
        out["label_meta"] = meta
    return out


def _audit(state: ServiceState, snapshot: PolicySnapshot, items: list[tuple[Any, Any, str, str | None]]) -> None:
    """Each served decision into the audit log (its level policy decides what is written)."""
    state.audit.log_decisions([(d, record_id, e, arm) for e, d, arm, record_id in items], door="http",
                              policy_name=snapshot.name)


def _label_in_rollout(
    state: ServiceState, rollout: Any, body: Any, caller: Caller, explain: bool
) -> tuple[dict[str, Any], str, str, int, dict[str, int]]:
    """Each event through the rollout: served by its sticky arm, compared with the other version.

    Results are the same shape as outside a rollout; a batch's results also name their arm.
    """
    from activelabel.quality.store import record_id_for

    manager = state.rollouts
    id_field = state.config.store.id_field
    batch = _is_batch(body)
    if not batch and not isinstance(body, dict):
        raise HttpError(400, "not_an_object",
                        f"body is a JSON {type(body).__name__}; send one event as a JSON object or a batch as {{\"events\": [...]}}")
    events: list[Any] = body["events"] if batch else [body]
    if len(events) > state.config.max_batch_events:
        raise HttpError(413, "batch_too_large", f"batch has {len(events)} events; the limit is "
                        f"{state.config.max_batch_events}, split it", limit_events=state.config.max_batch_events)
    results: list[dict[str, Any]] = []
    served: list[tuple[Any, Any, str, str | None]] = []
    dead: dict[str, int] = {}
    for position, event in enumerate(events):
        if not isinstance(event, dict):
            dead["not_an_object"] = dead.get("not_an_object", 0) + 1
            results.append({"error": {"code": "not_an_object",
                                      "message": f"event {position} is a JSON {type(event).__name__}, expected an object"}})
            continue
        try:
            record_id: str | None = record_id_for(event, id_field)
        except ActiveLabelError:
            record_id = None
        try:
            decision, arm = manager.label(rollout, event, record_id)
        except InputError as exc:
            if not batch:
                raise HttpError(422, "unlabelable_event", f"event cannot be labeled: {exc.reason}") from None
            rollout.record_dlq("serving")
            dead["unlabelable_event"] = dead.get("unlabelable_event", 0) + 1
            results.append({"error": {"code": "unlabelable_event", "message": f"event cannot be labeled: {exc.reason}"}})
            continue
        snapshot = manager.snapshot_of(arm) or state.snapshot()
        result = _result(decision, caller, snapshot, explain, arm)
        if batch:
            result["arm"] = arm
            result["policy_version"] = decision.policy_version
        results.append(result)
        served.append((event, decision, arm, record_id))
    for arm in ("serving", "candidate"):
        snapshot = manager.snapshot_of(arm)
        if snapshot is not None:
            state.metrics.observe_decisions(snapshot, (d.labels for _, d, a, _ in served if a == arm))
    if state.store is not None and served:
        ids = record_decisions(state, [(e, d) for e, d, _, _ in served], arms=[a for _, _, a, _ in served],
                               ids_known=[i for _, _, _, i in served])
        with_ids = [r for r in results if "error" not in r]
        for result, record_id in zip(with_ids, ids, strict=True):
            result["id"] = record_id
    if state.audit is not None:
        _audit(state, manager.serving or state.snapshot(), served)
    versions = sorted({d.policy_version for _, d, _, _ in served}) or [state.snapshot().version]
    arms = sorted({a for _, _, a, _ in served}) or ["serving"]
    if batch:
        payload: dict[str, Any] = {"results": results, "policy_version": ",".join(versions)}
    else:
        payload = results[0]
        payload["policy_version"] = versions[0]
    return payload, ",".join(versions), ",".join(arms), len(events) - sum(dead.values()), dead


def _label_batch(
    snapshot: PolicySnapshot, events: list[Any], caller: Caller, explain: bool
) -> tuple[list[dict[str, Any]], int, dict[str, int], list[tuple[dict[str, Any], tuple[Any, Any]]]]:
    """Label the objects of a batch in one engine call; non-objects come back as per-item errors.

    Also returns the dead letters by reason code, and (result, (event, decision)) for each labeled event, for recording.
    """
    objects = [e for e in events if isinstance(e, dict)]
    failed: dict[int, str] = {}
    try:
        decisions = label_many(snapshot, objects)
    except InputError:
        # One bad event must not sink the batch: fall back to per-event labeling.
        decisions = []
        for i, event in enumerate(objects):
            try:
                decisions.append(label_one(snapshot, event))
            except InputError as exc:
                failed[i] = f"event cannot be labeled: {exc.reason}"
                decisions.append(None)
    results: list[dict[str, Any]] = []
    pairs: list[tuple[dict[str, Any], tuple[Any, Any]]] = []
    dead: dict[str, int] = {}
    next_object = 0
    for position, event in enumerate(events):
        if not isinstance(event, dict):
            dead["not_an_object"] = dead.get("not_an_object", 0) + 1
            results.append({"error": {"code": "not_an_object", "message": f"event {position} is a JSON {type(event).__name__}, expected an object"}})
            continue
        if next_object in failed:
            dead["unlabelable_event"] = dead.get("unlabelable_event", 0) + 1
            results.append({"error": {"code": "unlabelable_event", "message": failed[next_object]}})
        else:
            result = _result(decisions[next_object], caller, snapshot, explain)
            results.append(result)
            pairs.append((result, (event, decisions[next_object])))
        next_object += 1
    return results, len(events) - sum(dead.values()), dead, pairs
