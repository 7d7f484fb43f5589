"""``activelabel serve`` under slow clients: held-open sockets cannot stop ``/v1/label`` for anyone else.

The slow clients are real TCP sockets on loopback that send part of a request and
then stall; the normal requests come from another loopback address, as another
host's would.
"""

from __future__ import annotations

import os
import select
import selectors
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "service"))
from harness import POLICY

SERVE = [sys.executable, "-m", "activelabel", "serve"]
WAIT_S = 60.0
HEADERS_ONLY = b"POST /v1/label HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"  # no blank line: headers never end
HEADERS_AND_SOME_BODY = b"POST /v1/label HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 200\r\n\r\n{\"path\""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def serve(tmp_path):
    """Start `activelabel serve --no-auth` with the given service config; yield its URL and port."""
    procs: list[subprocess.Popen] = []

    def start(**settings: object) -> tuple[str, int]:
        cfg = tmp_path / "service.yaml"
        cfg.write_text(yaml.safe_dump(settings))
        port = _free_port()
        env = {k: v for k, v in os.environ.items() if k != "ACTIVELABEL_TOKENS"}
        proc = subprocess.Popen([*SERVE, "--policy", str(POLICY), "--no-auth", "--port", str(port), "--config", str(cfg)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + WAIT_S
        while True:
            assert proc.poll() is None, f"serve exited: {proc.stderr.read() if proc.stderr else ''}"
            try:
                if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                    return url, port
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "serve did not become ready"
            time.sleep(0.05)

    yield start
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def _slow_sockets(port: int, addresses: list[str], per_address: int) -> list[socket.socket]:
    """Open ``per_address`` sockets from each loopback source address; half send headers only, half headers and 7 body bytes."""
    socks = []
    for address in addresses:
        for i in range(per_address):
            s = socket.socket()
            s.bind((address, 0))
            s.connect(("127.0.0.1", port))
            s.sendall(HEADERS_ONLY if i % 2 else HEADERS_AND_SOME_BODY)
            socks.append(s)
    return socks


def _normal_requests_are_served(url: str, n: int = 24) -> None:
    # Each on its own connection, as independent clients' would be.
    for i in range(n):
        r = httpx.post(url + "/v1/label", json={"path": "/pay/1", "status": 503, "n": i}, timeout=10)
        assert r.status_code == 200, r.text
        assert r.json()["labels"]["priority"] == "critical"


def _read_until_closed(socks: list[socket.socket]) -> dict[int, bytes]:
    """Wait (with a deadline) until the server has closed every socket; return what each received."""
    received = {s.fileno(): b"" for s in socks}
    sel = selectors.DefaultSelector()
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    open_left = len(socks)
    deadline = time.monotonic() + WAIT_S
    while open_left:
        assert time.monotonic() < deadline, f"{open_left} of {len(socks)} slow sockets still open after {WAIT_S}s"
        for key, _ in sel.select(timeout=0.5):
            sock = key.fileobj
            try:
                data = sock.recv(65536)  # type: ignore[union-attr]
            except ConnectionResetError:
                data = b""
            if data:
                received[key.fd] += data
            else:
                sel.unregister(sock)
                open_left -= 1
    sel.close()
    return received


def test_a_thousand_slow_sockets_do_not_stop_label_requests_and_are_closed(serve):
    """With 1,000 sockets holding headers (or headers and 7 body bytes) open, normal /v1/label requests get 200 and labels, and every slow socket is closed by the timeouts."""
    url, port = serve(max_in_flight=64, header_timeout_s=3, body_timeout_s=3, max_connections_per_client=60)
    addresses = [f"127.0.1.{i}" for i in range(1, 21)]  # 20 clients x 50 sockets, each under the per-address limit
    socks = _slow_sockets(port, addresses, per_address=50)
    try:
        assert len(socks) == 1000
        _normal_requests_are_served(url)
        received = _read_until_closed(socks)
    finally:
        for s in socks:
            s.close()
    answers = list(received.values())
    assert all(a == b"" or a.startswith(b"HTTP/1.1 408") for a in answers)
    assert sum(a.startswith(b"HTTP/1.1 408") for a in answers) == 1000  # each was told why
    _normal_requests_are_served(url, 4)


def test_one_address_cannot_take_every_connection(serve):
    """Connections from one address beyond max_connections_per_client are closed at once, while the others stay open and other clients are served."""
    url, port = serve(header_timeout_s=30, body_timeout_s=30, max_connections_per_client=50)
    socks = _slow_sockets(port, ["127.0.2.1"], per_address=120)
    try:
        _normal_requests_are_served(url)
        closed = _closed_sockets(socks, expect=70)
        assert len(closed) == 70
        # The 50 within the limit are still held open by the server (no EOF waiting for them).
        held = [s for s in socks if s not in closed]
        ready, _, _ = select.select(held, [], [], 0)
        assert len(held) == 50 and ready == []
        # A refused client that reads before writing more learns why (the answer and close come at once).
        probe = socket.create_connection(("127.0.0.1", port), source_address=("127.0.2.1", 0))
        probe.settimeout(10)
        data = b""
        while chunk := probe.recv(65536):
            data += chunk
        probe.close()
        assert data.startswith(b"HTTP/1.1 503") and b"too_many_connections" in data
    finally:
        for s in socks:
            s.close()


def _closed_sockets(socks: list[socket.socket], expect: int) -> list[socket.socket]:
    """The sockets the server has closed, waiting (with a deadline) until ``expect`` of them are."""
    closed: list[socket.socket] = []
    sel = selectors.DefaultSelector()
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    deadline = time.monotonic() + WAIT_S
    while len(closed) < expect:
        assert time.monotonic() < deadline, f"only {len(closed)} of the {expect} excess connections were closed"
        for key, _ in sel.select(timeout=0.5):
            sock = key.fileobj
            try:
                while sock.recv(65536):  # type: ignore[union-attr]
                    pass
            except BlockingIOError:
                continue
            except ConnectionResetError:
                pass  # the 503 raced our request bytes: the kernel resets a closed socket that is written to
            sel.unregister(sock)
            closed.append(sock)  # type: ignore[arg-type]
    sel.close()
    return closed
