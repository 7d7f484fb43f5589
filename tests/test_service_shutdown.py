"""SIGTERM ends `activelabel serve --record` promptly, even with a trickling request body and a tap stream open."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "service"))
from harness import POLICY

SERVE = [sys.executable, "-m", "activelabel", "serve"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(url: str, proc: subprocess.Popen, deadline_s: float = 60.0) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, "serve exited early"
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError("serve did not become ready")


def test_sigterm_exits_within_the_deadline_with_slow_clients_and_closes_the_store(tmp_path):
    """With a body trickling in (30 s body timeout) and a tap stream open, SIGTERM still ends serve well within 10 s; the store is intact."""
    port = _free_port()
    store = tmp_path / "store.db"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([*SERVE, "--policy", str(POLICY), "--no-auth", "--port", str(port), "--record", str(store)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    url = f"http://127.0.0.1:{port}"
    held: list[socket.socket] = []
    try:
        _wait_ready(url, proc)
        assert httpx.post(url + "/v1/label", json={"path": "/pay/1", "status": 500}).status_code == 200
        slow = socket.create_connection(("127.0.0.1", port))
        slow.sendall(b"POST /v1/label HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"pa")
        held.append(slow)
        tap = socket.create_connection(("127.0.0.1", port))
        tap.sendall(b"GET /v1/tap HTTP/1.1\r\nHost: x\r\n\r\n")
        tap.settimeout(30)
        assert tap.recv(64).startswith(b"HTTP/1.1 200")  # the stream is open and stays open
        held.append(tap)
        proc.send_signal(signal.SIGTERM)
        try:
            output, _ = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError("serve was still running 10 s after SIGTERM") from None
    finally:
        for s in held:
            s.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Application shutdown complete" in output and "Traceback" not in output
    with sqlite3.connect(store) as db:
        assert db.execute("pragma integrity_check").fetchone() == ("ok",)
        tables = [r[0] for r in db.execute("select name from sqlite_master where type = 'table'")]
        assert any(db.execute(f'select count(*) from "{t}"').fetchone()[0] for t in tables)  # the decision was kept
