"""Running the service on uvicorn, with the connection limits uvicorn does not have.

uvicorn (0.3x–0.5x) times out idle keep-alive connections only: a client that
sends half a request line, or headers without their blank line, holds its
connection forever, and nothing stops one address from opening thousands. The
protocol class here adds, per connection:

- a **header deadline** (``header_timeout_s``): the request line and headers must
  be complete this long after the connection opens (or after the previous
  response); otherwise 408 and close;
- a **per-address limit** (``max_connections_per_client``): connections from one
  client address beyond it get 503 and are closed at once.

Reading the body is bounded by the app (``LabelService``, ``body_timeout_s``),
since the body arrives through ASGI ``receive``.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import Counter
from typing import Any

import orjson
import uvicorn
from uvicorn.protocols.http.auto import AutoHTTPProtocol

log = logging.getLogger("activelabel.service")


def _raw_response(status: bytes, code: str, message: str, extra: bytes = b"") -> bytes:
    body = orjson.dumps({"error": {"code": code, "message": message}})
    return (b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\nconnection: close\r\n" + extra
            + b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


#: Seconds SIGTERM/SIGINT waits for requests in flight before closing their connections. Without
#: a bound uvicorn waits for every connection: a client trickling a body holds the exit for the
#: whole body timeout (30 s), a `/v1/tap` stream for ever. Labeling requests take milliseconds.
SHUTDOWN_GRACE_S = 2.0


def guarded_protocol(*, header_timeout_s: float, max_connections_per_client: int,
                     shutdown_grace_s: float = SHUTDOWN_GRACE_S) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol class (httptools or h11) with a header deadline and a per-address limit.

    ``max_connections_per_client`` 0 means no limit. The class keeps its own count
    of open connections per address, shared by the server it is given to. On shutdown
    a connection still busy after ``shutdown_grace_s`` is closed: the app sees a client
    disconnect (its body read or tap stream ends cleanly) and the process can exit.
    """
    per_address: Counter[str] = Counter()
    base: Any = AutoHTTPProtocol
    timeout_response = _raw_response(
        b"408 Request Timeout", "request_timeout",
        f"the request line and headers did not arrive within {header_timeout_s:g}s; send the whole request at once",
    )
    busy_response = _raw_response(
        b"503 Service Unavailable", "too_many_connections",
        f"more than {max_connections_per_client} open connections from your address; reuse connections or retry shortly",
        b"retry-after: 1\r\n",
    )

    class GuardedHTTPProtocol(base):  # type: ignore[misc]
        _address: str | None = None
        _deadline: asyncio.TimerHandle | None = None
        _started: bool = False  # bytes of a new request arrived since the last response

        def connection_made(self, transport: asyncio.Transport) -> None:
            super().connection_made(transport)
            address = self.client[0] if self.client else ""
            if max_connections_per_client and per_address[address] >= max_connections_per_client:
                transport.write(busy_response)
                transport.close()
                return
            per_address[address] += 1
            self._address = address
            self._arm()

        def shutdown(self) -> None:
            super().shutdown()  # idle: closed now; mid-request: closed after its response
            if not self.transport.is_closing():
                self.loop.call_later(shutdown_grace_s, self._close_at_shutdown)

        def _close_at_shutdown(self) -> None:
            if not self.transport.is_closing():
                self.transport.close()

        def data_received(self, data: bytes) -> None:
            self._started = True
            super().data_received(data)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()  # the next request on this keep-alive connection gets its own deadline

        def connection_lost(self, exc: Exception | None) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            if self._address is not None:
                per_address[self._address] -= 1
                if per_address[self._address] <= 0:
                    del per_address[self._address]
                self._address = None
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            self._started = False
            if not self.transport.is_closing():
                self._deadline = self.loop.call_later(header_timeout_s, self._header_deadline)

        def _header_deadline(self) -> None:
            self._deadline = None
            if self.transport.is_closing():
                return
            if self.cycle is not None and not self.cycle.response_complete:
                return  # headers are in; the app bounds the body and the response
            if self._started:
                self.transport.write(timeout_response)
            self.transport.close()

    return GuardedHTTPProtocol


def run_server(app: Any, *, host: str, port: int, log_level: str, header_timeout_s: float,
               max_connections_per_client: int, ssl_certfile: str | None = None,
               ssl_keyfile: str | None = None, shutdown_grace_s: float = SHUTDOWN_GRACE_S) -> None:
    """Serve ``app`` on uvicorn until SIGINT/SIGTERM, with the guards above.

    On the signal it stops accepting, gives requests in flight ``shutdown_grace_s`` to
    finish, closes the connections still open, then runs the app's shutdown (the decision
    store closes). uvicorn's own graceful timeout, a little later, cancels whatever the
    app still runs after its client is gone.
    """
    uvicorn.run(
        app,
        host=host,
        port=port,
        http=guarded_protocol(header_timeout_s=header_timeout_s, max_connections_per_client=max_connections_per_client,
                              shutdown_grace_s=shutdown_grace_s),
        log_level=log_level,
        # No access log: request lines (ext_authz paths, query strings) can carry
        # the very personal data a pii label is derived from.
        access_log=False,
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
        # Enough for the held-open connections the per-address limit allows from many clients.
        backlog=4096,
        timeout_graceful_shutdown=math.ceil(shutdown_grace_s) + 1,
    )
