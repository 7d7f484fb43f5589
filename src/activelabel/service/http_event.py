"""The event a rule sees for an HTTP request (ext_authz door and ASGI middleware).

    {"method": "POST", "path": "/pay/1", "query": {"debug": "1"},
     "host": "shop.example", "client_ip": "203.0.113.7",
     "user_agent": "curl/8.5", "referrer": null,
     "headers": {"user-agent": "curl/8.5", ...}}

Header names are lower-case; repeated headers are joined with ``,`` (RFC 9110).
Query parameters keep their last value. ``client_ip``, ``user_agent`` and
``referrer`` use the names of a parsed access-log line, so a policy written for
access logs (like examples/edge) also labels live requests.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl


def headers_dict(raw: Iterable[tuple[bytes, bytes]], drop: frozenset[str] = frozenset()) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name_b, value_b in raw:
        name = name_b.decode("latin-1").lower()
        if name in drop:
            continue
        value = value_b.decode("latin-1")
        headers[name] = f"{headers[name]},{value}" if name in headers else value
    return headers


def client_ip_of(headers: dict[str, str], peer: str | None) -> str | None:
    # Envoy states the real client in x-envoy-external-address; otherwise the
    # left-most x-forwarded-for entry is the original client.
    external = headers.get("x-envoy-external-address")
    if external:
        return external.strip()
    forwarded = headers.get("x-forwarded-for")
    if forwarded:
        return forwarded.split(",", 1)[0].strip()
    return peer


def http_request_event(
    method: str, path: str, query_string: str, headers: dict[str, str], peer: str | None = None
) -> dict[str, Any]:
    return {
        "method": method.upper(),
        "path": path or "/",
        "query": dict(parse_qsl(query_string, keep_blank_values=True)),
        "host": headers.get("host") or headers.get(":authority") or "",
        "client_ip": client_ip_of(headers, peer),
        # Same names as a parsed access-log line, so one policy labels both.
        "user_agent": headers.get("user-agent"),
        "referrer": headers.get("referer"),
        "headers": headers,
    }


def event_from_asgi_scope(scope: MutableMapping[str, Any], drop_headers: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Event of an ASGI HTTP request scope (used by ``LabelingMiddleware``)."""
    headers = headers_dict(scope.get("headers") or (), drop_headers)
    client = scope.get("client")
    return http_request_event(
        scope.get("method", "GET"),
        scope.get("path", "/"),
        (scope.get("query_string") or b"").decode("latin-1"),
        headers,
        client[0] if client else None,
    )
