"""Load generator for ``activelabel serve``: single-event POST /v1/label on loopback.

Two phases against one server process:

* **fixed rate** (default 1,000 req/s): open loop — request *i* is due at
  ``t0 + i / rate`` whatever happened before, and client latency is measured
  from that due time, so a stalled server shows up as latency instead of
  silently lowering the offered load (no coordinated omission).
* **saturation**: closed loop, ``--connections`` keep-alive connections each
  sending back-to-back; throughput is completed requests / wall time.

Server-side latency is the ``server-timing: label;dur=<ms>`` the service puts on
every /v1/label answer (request decoded → labeled response built). The client
is a minimal HTTP/1.1 keep-alive client on asyncio streams (requests encoded
once) so the generator, which shares the 2 cores with the server, stays cheap.

    .venv/bin/python bench/serve_load.py                   # edge policy, 1,000 req/s for 10 s, then saturation
    .venv/bin/python bench/serve_load.py --rate 500 --duration 5 --saturation-duration 5
    .venv/bin/python bench/serve_load.py --door ext_authz        # Envoy's checks for the same requests

Prints a table and writes bench/results/serve_<timestamp>.json. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from time import perf_counter
from typing import Any

import orjson

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is a dependency on Linux/macOS
    uvloop = None  # type: ignore[assignment]

REPO = Path(__file__).resolve().parents[1]
EDGE_POLICY = REPO / "examples" / "edge" / "policy.yaml"
EDGE_EVENTS = REPO / "examples" / "edge" / "requests.jsonl"
FIXTURE_POLICY = REPO / "tests" / "fixtures" / "service" / "policy.yaml"
TOKEN = "bench-token"
MAX_REQUESTS = 200_000  # hard bound whatever the options say


def load_events(path: Path, limit: int = 2000) -> list[bytes]:
    events = []
    with path.open("rb") as f:
        for line in f:
            if len(events) >= limit:
                break
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # the example ends with deliberately malformed lines (for the DLQ demo)
            if not isinstance(record, dict):
                continue
            record.pop("raw", None)  # the parsed fields are what a sidecar would be sent
            events.append(orjson.dumps(record))
    return events


def encode_ext_authz_checks(host: str, port: int, bodies: list[bytes]) -> list[bytes]:
    """The checks Envoy's ext_authz would send for the same requests (method, path, client headers, no body)."""
    checks = []
    for body in bodies:
        event = orjson.loads(body)
        path = str(event.get("path") or "/").replace(" ", "%20")
        checks.append(
            (
                f"{event.get('method') or 'GET'} /v1/extauthz{path} HTTP/1.1\r\nhost: {host}:{port}\r\n"
                f"x-activelabel-token: {TOKEN}\r\nuser-agent: {event.get('user_agent') or '-'}\r\n"
                f"x-forwarded-for: {event.get('client_ip') or '127.0.0.1'}\r\ncontent-length: 0\r\n\r\n"
            ).encode("latin-1", "replace")
        )
    return checks


def encode_requests(host: str, port: int, bodies: list[bytes]) -> list[bytes]:
    head = (
        f"POST /v1/label HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-type: application/json\r\n"
        f"authorization: Bearer {TOKEN}\r\n"
    )
    return [(head + f"content-length: {len(b)}\r\n\r\n").encode() + b for b in bodies]


class Connection:
    """One keep-alive HTTP/1.1 connection; ``send`` returns (status, server ms)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(host, port)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer)

    async def send(self, request: bytes) -> tuple[int, float | None]:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        server_ms = None
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"server-timing":
                server_ms = float(value.split(b"dur=")[1].split(b",")[0])
        if length:
            await self.reader.readexactly(length)
        return status, server_ms

    def close(self) -> None:
        self.writer.close()


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {"p50": at(0.50), "p95": at(0.95), "p99": at(0.99), "max": ordered[-1]}


async def fixed_rate(host: str, port: int, requests: list[bytes], rate: float, duration: float, connections: int) -> dict[str, Any]:
    total = min(int(rate * duration), MAX_REQUESTS)
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(await Connection.open(host, port))
    client_ms: list[float] = []
    sent_ms: list[float] = []
    server_ms: list[float] = []
    errors = 0
    start = perf_counter() + 0.05

    async def one(i: int, due: float) -> None:
        nonlocal errors
        conn = await pool.get()
        sent = perf_counter()
        try:
            status, server = await conn.send(requests[i % len(requests)])
        finally:
            pool.put_nowait(conn)
        done = perf_counter()
        client_ms.append((done - due) * 1000)
        sent_ms.append((done - sent) * 1000)
        if status != 200:
            errors += 1
        elif server is not None:
            server_ms.append(server)

    tasks = []
    for i in range(total):
        due = start + i / rate
        delay = due - perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, due)))
    await asyncio.gather(*tasks)
    elapsed = perf_counter() - start
    while not pool.empty():
        pool.get_nowait().close()
    return {
        "phase": f"fixed {rate:g} req/s",
        "offered_rps": rate,
        "requests": total,
        "errors": errors,
        "throughput_rps": total / elapsed,
        "client_ms": percentiles(client_ms),
        "client_from_send_ms": percentiles(sent_ms),
        "server_ms": percentiles(server_ms),
    }


async def saturation(host: str, port: int, requests: list[bytes], duration: float, connections: int) -> dict[str, Any]:
    client_ms: list[float] = []
    server_ms: list[float] = []
    errors = 0
    stop_at = perf_counter() + duration
    counter = 0

    async def worker(offset: int) -> None:
        nonlocal errors, counter
        conn = await Connection.open(host, port)
        i = offset
        try:
            while perf_counter() < stop_at and counter < MAX_REQUESTS:
                t = perf_counter()
                status, server = await conn.send(requests[i % len(requests)])
                client_ms.append((perf_counter() - t) * 1000)
                counter += 1
                i += connections
                if status != 200:
                    errors += 1
                elif server is not None:
                    server_ms.append(server)
        finally:
            conn.close()

    start = perf_counter()
    await asyncio.gather(*(worker(k) for k in range(connections)))
    elapsed = perf_counter() - start
    return {
        "phase": f"saturation ({connections} conns)",
        "offered_rps": None,
        "requests": len(client_ms),
        "errors": errors,
        "throughput_rps": len(client_ms) / elapsed,
        "client_ms": percentiles(client_ms),
        "client_from_send_ms": percentiles(client_ms),
        "server_ms": percentiles(server_ms),
    }


def start_server(policy: Path, port: int, tokens_file: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "activelabel", "serve", "--policy", str(policy), "--port", str(port),
           "--tokens", str(tokens_file), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"serve exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("serve did not start within 60 s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def print_table(results: list[dict[str, Any]]) -> None:
    header = (
        f"{'phase':<26}{'req':>7}{'err':>5}{'rps':>7}  {'server p50/p95/p99 ms':<24}"
        f"{'client* p50/p95/p99 ms':<26}{'client p50/p95/p99 ms (from due time)'}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        s, c, d = r["server_ms"], r["client_from_send_ms"], r["client_ms"]
        print(
            f"{r['phase']:<26}{r['requests']:>7}{r['errors']:>5}{r['throughput_rps']:>7.0f}  "
            f"{fmt(s['p50'])}/{fmt(s['p95'])}/{fmt(s['p99']):<12}"
            f"{fmt(c['p50'])}/{fmt(c['p95'])}/{fmt(c['p99']):<14}"
            f"{fmt(d['p50'])}/{fmt(d['p95'])}/{fmt(d['p99'])}"
        )
    print("client* = from the moment the request was written; 'from due time' adds any lag of the")
    print("open-loop scheduler (client or machine stalls included), which is what a user would see.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", type=Path, default=EDGE_POLICY if EDGE_POLICY.exists() else FIXTURE_POLICY)
    parser.add_argument("--events", type=Path, default=EDGE_EVENTS)
    parser.add_argument("--rate", type=float, default=1000.0, help="offered load of the fixed-rate phase, req/s")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of the fixed-rate phase")
    parser.add_argument("--saturation-duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=8, help="keep-alive connections")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds at the fixed rate before measuring")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument(
        "--door", choices=["label", "ext_authz"], default="label",
        help="label: single-event POST /v1/label; ext_authz: the checks Envoy sends for the same requests",
    )
    args = parser.parse_args()

    bodies = load_events(args.events) if args.events.exists() else [b'{"path": "/pay/1", "status": 503}']
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        tokens_file = Path(tmp) / "tokens.yaml"
        tokens_file.write_text(json.dumps({TOKEN: {"scopes": ["label"]}}))
        server = start_server(args.policy, port, tokens_file)
        try:
            encode = encode_requests if args.door == "label" else encode_ext_authz_checks
            requests = encode("127.0.0.1", port, bodies)
            if uvloop is not None:
                asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
            # The generator's own GC pauses would show up as server latency.
            gc.collect()
            gc.freeze()
            gc.disable()
            asyncio.run(fixed_rate("127.0.0.1", port, requests, args.rate, args.warmup, args.connections))
            results = [
                asyncio.run(fixed_rate("127.0.0.1", port, requests, args.rate, args.duration, args.connections)),
                asyncio.run(saturation("127.0.0.1", port, requests, args.saturation_duration, args.connections)),
            ]
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
    print_table(results)
    report = {
        "benchmark": "serve_load",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "policy": str(args.policy.relative_to(REPO)) if args.policy.is_relative_to(REPO) else str(args.policy),
        "events": len(bodies),
        "door": args.door,
        "connections": args.connections,
        "server_latency": "server-timing header: request decoded -> labeled response built",
        "client_latency": "client_ms: fixed rate from the request's due time (open loop), saturation from send; client_from_send_ms: from the moment the request was written",
        "load_average_at_end": os.getloadavg(),
        "results": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.door == "label" else f"_{args.door}"
    path = args.out / f"serve{suffix}_{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")


if __name__ == "__main__":
    main()
