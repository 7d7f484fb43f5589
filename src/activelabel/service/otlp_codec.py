"""OTLP/HTTP payloads in and out: protobuf and OTLP JSON.

OTLP JSON is protobuf's JSON mapping with two differences that matter here
(OTLP spec, "JSON Protobuf Encoding"): trace and span ids are hex strings rather
than base64, and enums are integers. Both are converted at this boundary.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, TypeVar

import orjson
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from activelabel.service._http import HttpError

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
MEDIA_TYPES = (PROTOBUF, JSON)

_ID_FIELDS = frozenset({"traceId", "spanId", "parentSpanId"})

M = TypeVar("M", bound=Message)


def _convert_ids(node: Any, convert: Any) -> Any:
    if isinstance(node, dict):
        return {k: (convert(v) if k in _ID_FIELDS and isinstance(v, str) else _convert_ids(v, convert)) for k, v in node.items()}
    if isinstance(node, list):
        return [_convert_ids(v, convert) for v in node]
    return node


def _hex_to_b64(value: str) -> str:
    try:
        return base64.b64encode(bytes.fromhex(value)).decode("ascii")
    except ValueError:
        raise HttpError(400, "bad_otlp", "trace/span ids in OTLP JSON must be hex strings") from None


def _b64_to_hex(value: str) -> str:
    return binascii.hexlify(base64.b64decode(value)).decode("ascii")


def decode(body: bytes, media: str, message_type: type[M]) -> M:
    """Parse an OTLP export request; 400 with the reason when it does not parse."""
    message: M = message_type()
    if media == PROTOBUF:
        try:
            message.ParseFromString(body)
        except (DecodeError, RuntimeWarning, ValueError) as exc:
            raise HttpError(400, "bad_protobuf", f"body is not a valid {message_type.__name__} protobuf: {exc}") from None
        return message
    try:
        raw = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise HttpError(400, "bad_json", f"body is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None
    if not isinstance(raw, dict):
        raise HttpError(400, "bad_otlp", f"OTLP JSON body must be a {message_type.__name__} object")
    try:
        json_format.ParseDict(_convert_ids(raw, _hex_to_b64), message, ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        # ParseError names the field path, not the content.
        raise HttpError(400, "bad_otlp", f"body is not a valid OTLP JSON {message_type.__name__}: {exc}") from None
    return message


def encode(message: Message, media: str) -> bytes:
    """Serialize in the same encoding the sender used."""
    if media == PROTOBUF:
        data: bytes = message.SerializeToString()
        return data
    as_dict = json_format.MessageToDict(message, use_integers_for_enums=True)
    return orjson.dumps(_convert_ids(as_dict, _b64_to_hex))


def decode_traces(body: bytes, media: str) -> ExportTraceServiceRequest:
    return decode(body, media, ExportTraceServiceRequest)


def decode_logs(body: bytes, media: str) -> ExportLogsServiceRequest:
    return decode(body, media, ExportLogsServiceRequest)


def empty_response(signal: str, media: str) -> bytes:
    """The OTLP success answer (no partial rejection) for ``signal`` ``traces`` or ``logs``."""
    message: Message = ExportTraceServiceResponse() if signal == "traces" else ExportLogsServiceResponse()
    return encode(message, media)
