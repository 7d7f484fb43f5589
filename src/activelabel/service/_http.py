"""HTTP plumbing shared by the front doors: JSON errors, bounded bodies, auth.

Every refusal is an ``HttpError`` carrying a status, a fixed reason code (safe to
use as a metric label) and a message that says what was wrong and what to do.
Messages never quote request content: it may carry sensitive values.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive

from activelabel.service.auth import ANONYMOUS, Caller, TokenTable, bearer_token


class HttpError(Exception):
    """A request refused with a JSON error body."""

    def __init__(self, status: int, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers: dict[str, str] = {}

    def body(self) -> bytes:
        return orjson.dumps({"error": {"code": self.code, "message": self.message, **self.details}})

    def response(self) -> Response:
        return Response(self.body(), status_code=self.status, media_type="application/json", headers=self.headers)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def media_type(headers: Mapping[str, str]) -> str:
    return headers.get("content-type", "").split(";", 1)[0].strip().lower()


def require_media_type(headers: Mapping[str, str], allowed: tuple[str, ...]) -> str:
    """The request's media type if it is one of ``allowed``; 415 otherwise."""
    found = media_type(headers)
    if found not in allowed:
        raise HttpError(
            415,
            "unsupported_media_type",
            f"content-type {found or '(none)'!r} is not accepted here; send one of: {', '.join(allowed)}",
        )
    return found


def too_large(limit: int) -> HttpError:
    """The 413 refusal of a body over ``limit`` bytes."""
    return HttpError(
        413,
        "body_too_large",
        f"request body exceeds the limit of {limit} bytes; split it or raise max_body_bytes in the service config",
        limit_bytes=limit,
    )


async def read_body(request: Request, limit: int) -> bytes:
    """The body of a Starlette request (see ``receive_body``)."""
    return await receive_body(request.receive, request.headers, limit)


async def receive_body(receive: Receive, headers: Mapping[str, str], limit: int) -> bytes:
    """The request body, decompressed, refusing (413) anything over ``limit`` bytes.

    Reads incrementally so an oversized upload is refused without buffering it.
    """
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise HttpError(400, "client_disconnected", "the client went away before sending the whole body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    encoding = headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise HttpError(415, "unsupported_encoding", f"content-encoding {encoding!r} is not supported; use gzip or none")
    return _inflate(body, encoding, limit)


def _inflate(body: bytes, encoding: str, limit: int) -> bytes:
    # Bounded decompression: a small gzip bomb must hit the same limit as a big body.
    inflater = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error:
        raise HttpError(400, "bad_encoding", f"body is not valid {encoding} data") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise too_large(limit)
    return out


def decode_json(body: bytes) -> Any:
    """Parse a JSON body; 400 with orjson's position (never the content) when malformed."""
    if not body:
        raise HttpError(400, "bad_json", "request body is empty; send a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise HttpError(400, "bad_json", f"request body is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None


class Authenticator:
    """Turns a request into a ``Caller``; ``tokens=None`` means auth is off (``--no-auth``)."""

    def __init__(self, tokens: TokenTable | None) -> None:
        self._tokens = tokens

    @property
    def enabled(self) -> bool:
        return self._tokens is not None

    def replace_tokens(self, tokens: TokenTable) -> None:
        """Swap in a new token table (rotation); auth can be changed, never switched off, this way."""
        if self._tokens is not None:
            self._tokens = tokens

    def caller(self, headers: Mapping[str, str], scope: str, *, token_header: str | None = None) -> Caller:
        """The caller (from lower-case request ``headers``) holding ``scope``; 401 / 403 otherwise."""
        if self._tokens is None:
            return ANONYMOUS
        if token_header is not None:
            raw = headers.get(token_header)
            token = bearer_token(raw) or (raw.strip() if raw else None)
            how = f"a {token_header} header"
        else:
            token = bearer_token(headers.get("authorization"))
            how = "an 'Authorization: Bearer <token>' header"
        if token is None:
            error = HttpError(401, "unauthenticated", f"this endpoint needs a token: send {how}")
            error.headers["www-authenticate"] = 'Bearer realm="activelabel"'
            raise error
        caller = self._tokens.caller_for(token)
        if caller is None:
            error = HttpError(401, "unauthenticated", "the token is not known to this server")
            error.headers["www-authenticate"] = 'Bearer realm="activelabel", error="invalid_token"'
            raise error
        if not caller.may(scope):
            raise HttpError(
                403, "forbidden", f"the token lacks the {scope!r} scope needed here", required_scope=scope
            )
        return caller
