"""OTLP/HTTP pipeline stage: ``POST /v1/traces`` and ``POST /v1/logs``.

Each span / log record is labeled (see ``otlp_mapping`` for the event a rule
sees), the labels are written back as attributes, and the export request is
forwarded to ``otlp.forward_endpoint`` in the encoding it arrived in — or,
with no endpoint configured, returned in the response body.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import Response

from activelabel.errors import InputError
from activelabel.service import otlp_codec
from activelabel.service._http import HttpError, read_body, require_media_type
from activelabel.service.auth import Caller
from activelabel.service.label_output import visible_labels
from activelabel.service.otlp_mapping import (
    attributes_dict,
    log_event_from_proto,
    scope_dict,
    span_event_from_proto,
    write_labels,
)
from activelabel.service.policy_runtime import PolicySnapshot
from activelabel.service.state import (
    ServiceState,
    Stopwatch,
    front_door,
    label_many,
    label_one,
    state_of,
)

# (record, its event) pairs in document order; the record is what labels are written onto.
Collected = list[tuple[Any, dict[str, Any]]]


def _collect_spans(message: Any) -> Collected:
    out: Collected = []
    for resource_spans in message.resource_spans:
        resource = attributes_dict(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            scope = scope_dict(scope_spans.scope)
            out.extend((span, span_event_from_proto(span, resource, scope)) for span in scope_spans.spans)
    return out


def _collect_logs(message: Any) -> Collected:
    out: Collected = []
    for resource_logs in message.resource_logs:
        resource = attributes_dict(resource_logs.resource.attributes)
        for scope_logs in resource_logs.scope_logs:
            scope = scope_dict(scope_logs.scope)
            out.extend((record, log_event_from_proto(record, resource, scope)) for record in scope_logs.log_records)
    return out


def _label_records(snapshot: PolicySnapshot, collected: Collected, caller: Caller, prefix: str) -> int:
    """Label every record in place; returns how many could not be labeled (passed on unlabeled)."""
    events = [event for _, event in collected]
    try:
        decisions: list[Any] = label_many(snapshot, events)
    except InputError:
        # One unlabelable record must not sink the export: label one by one.
        decisions = []
        for event in events:
            try:
                decisions.append(label_one(snapshot, event))
            except InputError:
                decisions.append(None)
    for (record, _), decision in zip(collected, decisions, strict=True):
        if decision is not None:
            visible = visible_labels(decision.labels, snapshot, caller)
            write_labels(record.attributes, visible, prefix, snapshot.label_names)
    return decisions.count(None)


async def _forward(state: ServiceState, signal: str, body: bytes, media: str) -> None:
    assert state.forward_client is not None and state.config.otlp.forward_endpoint is not None
    url = state.config.otlp.forward_endpoint.rstrip("/") + f"/v1/{signal}"
    try:
        answer = await state.forward_client.post(url, content=body, headers={"content-type": media})
    except httpx.HTTPError as exc:
        raise HttpError(502, "forward_failed", f"next OTLP receiver {url} unreachable: {type(exc).__name__}") from None
    if answer.status_code >= 300:
        # 502 tells an OTLP exporter to retry later, as the spec asks for upstream trouble.
        raise HttpError(502, "forward_failed", f"next OTLP receiver {url} answered HTTP {answer.status_code}")


def _otlp_route(signal: str, door: str, decode: Callable[[bytes, str], Any], collect: Callable[[Any], Collected]) -> Any:
    @front_door(door)
    async def route(request: Request) -> Response:
        state = state_of(request)
        caller = state.auth.caller(request.headers, "label")
        media = require_media_type(request.headers, otlp_codec.MEDIA_TYPES)
        message = decode(await read_body(request, state.config.max_body_bytes), media)
        snapshot = state.snapshot()
        watch = Stopwatch()
        collected = collect(message)
        unlabeled = _label_records(snapshot, collected, caller, state.config.otlp.attribute_prefix)
        labeled_body = otlp_codec.encode(message, media)
        elapsed, cpu = watch.seconds(), watch.cpu_seconds()
        labeled = len(collected) - unlabeled
        if state.config.otlp.forward_endpoint is None:
            state.metrics.observe_labeled(door, elapsed, labeled, unlabeled, cpu_seconds=cpu)
            return Response(labeled_body, media_type=media)
        await _forward(state, signal, labeled_body, media)
        state.metrics.observe_labeled(door, elapsed, labeled, unlabeled, cpu_seconds=cpu)
        return Response(otlp_codec.empty_response(signal, media), media_type=media)

    route.__name__ = f"otlp_{signal}_route"
    return route


otlp_traces_route = _otlp_route("traces", "otlp_traces", otlp_codec.decode_traces, _collect_spans)
otlp_logs_route = _otlp_route("logs", "otlp_logs", otlp_codec.decode_logs, _collect_logs)
