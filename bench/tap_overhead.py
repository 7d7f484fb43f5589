"""What the decision ring of `tap` and `/ui` costs on ``POST /v1/label`` when nobody taps.

Drives the service's ASGI app in-process (no sockets: the handler's own cost, where a
fraction of a microsecond shows), alternating runs with the real ``DecisionTap.offer``
and with it replaced by a no-op, 7 x 5,000 requests each, and prints the medians; then
times ``offer`` alone. Run:

    PYTHONPATH=src .venv/bin/python bench/tap_overhead.py

Numbers are machine-dependent; nothing asserts on them.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
import timeit
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "service"))
from harness import build_app  # the service tests' fixture policy and app factory

BODY = orjson.dumps({"path": "/pay/1", "status": 503, "tenant": "acme"})
SCOPE = {"type": "http", "method": "POST", "path": "/v1/label", "query_string": b"",
         "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]}


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": BODY, "more_body": False}


async def _send(_message: dict[str, Any]) -> None:
    return None


def main() -> None:
    app = build_app(no_auth=True)
    tap = app.state.metrics.tap
    real = tap.offer

    def noop(*_args: Any) -> None:
        return None

    async def run(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            await app(SCOPE, _receive, _send)
        return (time.perf_counter() - start) / n

    loop = asyncio.new_event_loop()
    loop.run_until_complete(run(2000))  # warm up
    with_ring, without = [], []
    for _ in range(7):
        tap.offer = real  # type: ignore[method-assign]
        with_ring.append(loop.run_until_complete(run(5000)))
        tap.offer = noop  # type: ignore[method-assign]
        without.append(loop.run_until_complete(run(5000)))
    tap.offer = real  # type: ignore[method-assign]
    print(f"POST /v1/label in-process, median of 7 x 5000: with the ring {statistics.median(with_ring) * 1e6:.2f} us, "
          f"offer() a no-op {statistics.median(without) * 1e6:.2f} us")
    snapshot = app.state.runtime.current
    decision = snapshot.labeler.label({"path": "/pay/1", "status": 503})
    n = 200_000
    cost = timeit.timeit(lambda: real("label", snapshot, decision), number=n) / n
    base = timeit.timeit(lambda: noop("label", snapshot, decision), number=n) / n
    print(f"offer() alone: {cost * 1e9:.0f} ns per call ({(cost - base) * 1e9:.0f} ns over an empty call)")


if __name__ == "__main__":
    main()
