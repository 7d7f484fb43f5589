"""Test doubles that ship with the service: a real server in a thread, a real OTLP receiver.

    with serve_in_thread(create_app("policy.yaml", no_auth=True)) as base_url:
        httpx.post(base_url + "/v1/label", json={...})

    with OtlpReceiver() as receiver:          # the "next hop" of the OTLP stage
        ... receiver.endpoint ...             # give this as otlp.forward_endpoint
        receiver.wait_for(lambda r: r.spans())
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import uvicorn
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from activelabel.service.otlp_codec import JSON, PROTOBUF, decode


@contextmanager
def serve_in_thread(app: Any, *, host: str = "127.0.0.1", startup_timeout_s: float = 10.0) -> Iterator[str]:
    """Run ``app`` on uvicorn on a free loopback port; yields the base URL, stops cleanly on exit."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="activelabel-test-server")
    thread.start()
    deadline = time.monotonic() + startup_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError("test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=startup_timeout_s)
        sock.close()


class OtlpReceiver:
    """A minimal OTLP/HTTP receiver on loopback that records every export it gets."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.requests: list[tuple[str, str, bytes]] = []  # (path, content type, body)
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                media = (self.headers.get("content-type") or "").split(";")[0].strip()
                with receiver._lock:
                    receiver.requests.append((self.path, media, body))
                answer: Any = ExportTraceServiceResponse() if self.path.endswith("traces") else ExportLogsServiceResponse()
                payload = answer.SerializeToString() if media == PROTOBUF else orjson.dumps(json_format.MessageToDict(answer))
                self.send_response(200)
                self.send_header("content-type", media or PROTOBUF)
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
                return

        self._server = ThreadingHTTPServer((host, 0), Handler)
        self.endpoint = f"http://{host}:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="otlp-receiver")

    def __enter__(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _decoded(self, suffix: str, message_type: Any) -> list[Any]:
        with self._lock:
            received = [(m, b) for p, m, b in self.requests if p.endswith(suffix)]
        return [decode(body, media if media in (PROTOBUF, JSON) else PROTOBUF, message_type) for media, body in received]

    def trace_requests(self) -> list[ExportTraceServiceRequest]:
        return self._decoded("/v1/traces", ExportTraceServiceRequest)

    def log_requests(self) -> list[ExportLogsServiceRequest]:
        return self._decoded("/v1/logs", ExportLogsServiceRequest)

    def spans(self) -> list[Any]:
        return [s for r in self.trace_requests() for rs in r.resource_spans for ss in rs.scope_spans for s in ss.spans]

    def log_records(self) -> list[Any]:
        return [x for r in self.log_requests() for rl in r.resource_logs for sl in rl.scope_logs for x in sl.log_records]

    def wait_for(self, predicate: Callable[[OtlpReceiver], Any], timeout_s: float = 10.0) -> Any:
        """Poll until ``predicate(self)`` is truthy; returns its value (raises ``TimeoutError``)."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = predicate(self)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError("the OTLP receiver did not get the expected data")
            time.sleep(0.02)
