"""Recording decisions (for ground truth later) and taking ground truth back.

With ``store.path`` set, every event labeled on ``POST /v1/label`` is recorded
in the decision store under an id (``store.id_field`` or a content hash) that
the answer carries as ``"id"``. ``POST /v1/feedback`` (scope ``feedback``)
then accepts true values for those ids::

    {"id": "order-17", "label": "priority", "value": "high"}
    {"items": [{"id": ..., "label": ..., "value": ..., "who": "ana"}, ...]}

and answers ``{"accepted": n, "rejected": [{"index": i, "reason": "..."}]}``.
Each accepted true value (and each one ``activelabel feedback import`` writes
into the same store) is compared with the recorded label, feeding the accuracy
SLI (M2) ``activelabel_label_accuracy_ratio{label}`` over a sliding window and
the feedback-loop latency (M8); see ``observability.windows``.
Refusal reasons never quote a value of a ``pii`` or ``secret`` label.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response

from activelabel.errors import ActiveLabelError, FeedbackError
from activelabel.service._http import (
    HttpError,
    decode_json,
    json_response,
    read_body,
    require_media_type,
)
from activelabel.service.state import ServiceState, state_of

log = logging.getLogger("activelabel.service.store")


def open_store(path: str, policy: Any, protector: Any = None, pii_metrics: Any = None) -> Any:
    """The decision store; with ``protector``, labels above the policy's outputs clearance are stored protected.

    ``pii_metrics`` (`PiiLeakMetrics`): the store guard's M9 counts (declared leaks, undeclared PII
    found in what is recorded, sampled by the policy's ``pii.undeclared_sample``) go to /metrics.
    """
    from activelabel.quality.store import DecisionStore  # only needed when recording

    guard = None
    if protector is not None:
        from activelabel.governance import OutputGuard, PrivacyCounters

        guard = OutputGuard.of(policy, door="store", protector=protector, counters=PrivacyCounters(metrics=pii_metrics),
                               scan_undeclared=pii_metrics is not None)
    return DecisionStore(path, policy=policy, guard=guard)


def record_decisions(state: ServiceState, items: list[tuple[Any, Any]], arms: list[str] | None = None,
                     ids_known: list[str | None] | None = None) -> list[str | None]:
    """Record (event, decision) pairs; the id of each, or ``None`` where it could not be recorded.

    The stored explanation carries the decision's rollout ``arm`` (``stable`` outside a rollout)
    beside its ``policy_version``.
    """
    from activelabel.quality.store import record_id_for

    ids: list[str | None] = []
    rows = []
    for position, (event, decision) in enumerate(items):
        arm = arms[position] if arms is not None else "stable"
        if ids_known is not None and ids_known[position] is not None:
            ids.append(ids_known[position])
            rows.append((ids_known[position], event, _with_arm(decision, arm)))
            continue
        try:
            record_id = record_id_for(event, state.config.store.id_field)
        except ActiveLabelError:
            ids.append(None)
            continue
        ids.append(record_id)
        rows.append((record_id, event, _with_arm(decision, arm)))
    try:
        if rows:
            state.store.record_many(rows)
    except ActiveLabelError as exc:
        log.error("cannot record %d decision(s): %s", len(rows), type(exc).__name__)
        return [None] * len(items)
    missing = ids.count(None)
    if missing:
        state.metrics.record_errors.inc(missing)
    return ids


def _with_arm(decision: Any, arm: str) -> dict[str, Any]:
    """The decision as the store keeps it, its explanation saying which arm served it."""
    explain = dict(decision.explain())
    explain["arm"] = arm
    return {"labels": decision.labels, "confidences": decision.confidences, "sources": decision.sources,
            "policy_version": decision.policy_version, "explain": explain}


async def feedback_route(request: Request) -> Response:
    """Accept ground truth for recorded decisions."""
    state = state_of(request)
    try:
        caller = state.auth.caller(request.headers, "feedback")
        if state.store is None:
            raise HttpError(
                501, "no_store", "this server records no decisions; start it with --record PATH to accept feedback"
            )
        require_media_type(request.headers, ("application/json",))
        body = decode_json(await read_body(request, state.config.max_body_bytes))
    except HttpError as exc:
        return exc.response()
    items = body["items"] if isinstance(body, dict) and isinstance(body.get("items"), list) else [body]
    if len(items) > state.config.max_batch_events:
        return HttpError(413, "batch_too_large", f"{len(items)} items; the limit is {state.config.max_batch_events}").response()
    protected = state.runtime.current.protected_labels
    labels = dict(state.runtime.current.labeler.policy.labels)
    accepted, rejected = await anyio.to_thread.run_sync(_apply, state.store, items, caller.name, protected, labels)
    if state.audit is not None:
        state.audit.log_admin("feedback import", actor=caller.name, accepted=accepted, rejected=len(rejected))
    state.metrics.feedback_items.labels("accepted").inc(accepted)
    state.metrics.feedback_items.labels("rejected").inc(len(rejected))
    # Agreement (M2) and feedback delay (M8) are read from the store, where imports land too.
    state.metrics.sync_ground_truth()
    body = {"accepted": accepted, "rejected": rejected}
    if rejected and not accepted:  # nothing stored: say so in the status too, so a client cannot miss it
        first = rejected[0]["reason"]
        body["error"] = {"code": "feedback_refused", "message": f"no item accepted; first reason: {first}"}
        return json_response(body, status=422)
    return json_response(body)


def _value_problem(labels: dict[str, Any], label: str, value: Any) -> str | None:
    """Why a JSON ``value`` cannot be a true value of ``label`` by its JSON type alone, else None.

    No label type takes a list or an object, and a string label takes only a
    string (the store would otherwise keep a Python repr such as ``"[1, 2]"``).
    Everything finer (enum values, int text) is the store's check.
    """
    if isinstance(value, (list, dict)):
        return f"label {label!r} takes a single value, not a JSON {'array' if isinstance(value, list) else 'object'}"
    spec = labels.get(label)
    kind = str(getattr(getattr(spec, "type", None), "value", getattr(spec, "type", ""))) if spec is not None else ""
    if kind == "string" and not isinstance(value, str):
        return f"label {label!r} is a string label: send the value as a JSON string, not {_json_kind(value)}"
    return None


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number" if isinstance(value, (int, float)) else type(value).__name__


def _apply(
    store: Any, items: list[Any], who: str, protected: frozenset[str], labels: dict[str, Any] | None = None,
) -> tuple[int, list[dict[str, Any]]]:
    accepted = 0
    rejected: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict) or not {"id", "label", "value"} <= set(item):
            rejected.append({"index": index, "reason": "an item is an object with id, label and value"})
            continue
        label = str(item["label"])
        problem = _value_problem(labels or {}, label, item["value"])
        if problem is not None:
            store.record_rejection(problem, record_id=str(item["id"]), label=label, how="api")
            rejected.append({"index": index, "reason": problem})
            continue
        try:
            store.add_ground_truth(str(item["id"]), label, item["value"], who=str(item.get("who") or who), how="api")
        except FeedbackError as exc:
            reason = str(exc) if label not in protected else f"value refused for sensitive label {label!r} (not shown)"
            rejected.append({"index": index, "reason": reason})
            continue
        accepted += 1
    return accepted, rejected
