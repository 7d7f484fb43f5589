"""What a rule sees for a span or a log record, and how labels go back on it.

Span event::

    {"signal": "span", "name": "GET /pay", "kind": "SERVER",
     "status": {"code": "ERROR", "message": "..."}, "duration_ms": 12.5,
     "attributes": {"http.route": "/pay", ...}, "resource": {"service.name": "shop", ...},
     "scope": {"name": "...", "version": "..."}, "trace_id": "<hex>", "span_id": "<hex>"}

Log-record event::

    {"signal": "log", "body": "payment failed", "severity": "ERROR", "severity_number": 17,
     "severity_text": "error", "attributes": {...}, "resource": {...}, "scope": {...},
     "trace_id": "<hex>", "span_id": "<hex>"}

Attribute keys keep their dots: ``event.attributes["http.route"]``. ``kind`` and
``status.code`` are the OTLP enum names without prefix. ``severity`` is derived
from ``severity_number`` (``TRACE`` … ``FATAL``) and falls back to the upper-cased
``severity_text``. Labels are written back as attributes ``<prefix><label>``;
incoming attributes under the prefix for the policy's labels are replaced.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

SPAN_KINDS = {0: "UNSPECIFIED", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
STATUS_CODES = {0: "UNSET", 1: "OK", 2: "ERROR"}
_SEVERITY_NAMES = ("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL")


def severity_name(number: int, text: str) -> str:
    if 1 <= number <= 24:
        return _SEVERITY_NAMES[(number - 1) // 4]
    return text.upper()


def from_any_value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [from_any_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return attributes_dict(value.kvlist_value.values)
    return getattr(value, which)


def attributes_dict(pairs: Iterable[KeyValue]) -> dict[str, Any]:
    return {kv.key: from_any_value(kv.value) for kv in pairs}


def to_any_value(value: Any) -> AnyValue:
    # bool before int: bool is an int subclass in Python.
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, str):
        return AnyValue(string_value=value)
    return AnyValue(string_value=orjson.dumps(value, default=str).decode())


def span_event(
    *,
    name: str,
    kind: str,
    status_code: str,
    status_message: str,
    attributes: Mapping[str, Any],
    resource: Mapping[str, Any],
    scope: Mapping[str, Any],
    start_ns: int,
    end_ns: int,
    trace_id: str,
    span_id: str,
) -> dict[str, Any]:
    return {
        "signal": "span",
        "name": name,
        "kind": kind,
        "status": {"code": status_code, "message": status_message},
        "duration_ms": (end_ns - start_ns) / 1e6 if end_ns and start_ns else 0.0,
        "attributes": dict(attributes),
        "resource": dict(resource),
        "scope": dict(scope),
        "trace_id": trace_id,
        "span_id": span_id,
    }


def span_event_from_proto(span: Any, resource: Mapping[str, Any], scope: Mapping[str, Any]) -> dict[str, Any]:
    return span_event(
        name=span.name,
        kind=SPAN_KINDS.get(span.kind, "UNSPECIFIED"),
        status_code=STATUS_CODES.get(span.status.code, "UNSET"),
        status_message=span.status.message,
        attributes=attributes_dict(span.attributes),
        resource=resource,
        scope=scope,
        start_ns=span.start_time_unix_nano,
        end_ns=span.end_time_unix_nano,
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
    )


def log_event_from_proto(record: Any, resource: Mapping[str, Any], scope: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "signal": "log",
        "body": from_any_value(record.body),
        "severity": severity_name(record.severity_number, record.severity_text),
        "severity_number": int(record.severity_number),
        "severity_text": record.severity_text,
        "attributes": attributes_dict(record.attributes),
        "resource": dict(resource),
        "scope": dict(scope),
        "trace_id": record.trace_id.hex(),
        "span_id": record.span_id.hex(),
    }


def scope_dict(scope: Any) -> dict[str, Any]:
    return {"name": scope.name, "version": scope.version, "attributes": attributes_dict(scope.attributes)}


def write_labels(attributes: Any, labels: Mapping[str, Any], prefix: str, declared: Iterable[str] = ()) -> None:
    """Set ``<prefix><label>`` attributes on a repeated ``KeyValue`` field.

    Older attributes under the prefix for the ``declared`` labels are dropped
    first, so a sender cannot pass off its own value for a label this stage owns.
    """
    owned = {prefix + name for name in declared} | {prefix + name for name in labels}
    if not owned:
        return
    kept = [kv for kv in attributes if kv.key not in owned]
    if len(kept) != len(attributes):
        del attributes[:]
        attributes.extend(kept)
    attributes.extend(KeyValue(key=prefix + name, value=to_any_value(value)) for name, value in labels.items())
