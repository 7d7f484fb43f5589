"""Trace-sampling priority (seed: "trace-sampling priority"): `now`, a bucket, max_confidence, a guard.

Synthetic OTLP-like spans. Messy shares: duration_ms missing 5% / a string 5%,
start_time missing 5% / unparsable 5% / in the future 5% / over 30 days old 20%,
http missing 40% / not a map 3%, name missing 5%, service missing 5% / an int
2% (40 distinct names, so the 12-value guard overflows), attributes missing 30%
/ a list 10% / an int 3%.
"""

from __future__ import annotations

import random
import shutil
from bisect import bisect_right
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.zoo._common import Guard, is_num, max_confidence, no_guard

HERE = Path(__file__).resolve().parent
BOUNDS = (1, 10, 100, 1000)
BANDS = ("<1", "1-10", "10-100", "100-1000", ">=1000")
MONEY = frozenset(("checkout", "payments"))
MONTH = timedelta(hours=720)


def materialize(d: Path) -> Path:
    shutil.copy(HERE / "tracing.yaml", d / "policy.yaml")
    return d / "policy.yaml"


def _ts(s: Any) -> datetime | None:
    """RFC 3339 as the span exporters write it: YYYY-MM-DDTHH:MM:SS[.ffffff]Z."""
    if s.__class__ is not str or len(s) < 20 or s[10] != "T" or not s.endswith("Z"):
        return None
    try:
        return datetime.fromisoformat(s[:-1]).replace(tzinfo=UTC)
    except ValueError:
        return None


def make_labeler(d: Path, *, guards: bool = True, now: datetime | None = None, **_: Any) -> Callable[[dict], dict]:
    svc_guard = Guard(12, "other_service") if guards else no_guard

    def label(e: dict) -> dict:
        out: dict = {}
        t_now = now or datetime.now(UTC)
        dur = e.get("duration_ms")
        band = BANDS[bisect_right(BOUNDS, dur)] if is_num(dur) else None
        if band is not None:
            out["duration_band"] = band
        ts = _ts(e.get("start_time"))
        skew = ts is not None and ts > t_now
        out["clock_skew"] = skew
        out["stale"] = ts is not None and t_now - ts > MONTH
        http = e.get("http")
        hs = http.get("status_code") if http.__class__ is dict else None
        name = e.get("name")
        svc = e.get("service", e)
        cands = []
        if e.get("status_code") == "ERROR":
            cands.append(("always", 0.95))
        if is_num(hs) and hs >= 500:
            cands.append(("always", 0.9))
        if band == ">=1000":
            cands.append(("high", 0.8))
        if name.__class__ is str and name.startswith("health"):
            cands.append(("drop", 0.85))
        if skew:
            cands.append(("drop", 0.5))
        if svc.__class__ is str and svc in MONEY:
            cands.append(("high", 0.6))
        keep = max_confidence(cands) or "normal"
        out["keep"] = keep
        if keep == "always":
            out["sample_rate"] = 1.0
        elif keep == "high":
            out["sample_rate"] = 0.5
        elif keep == "drop":
            out["sample_rate"] = 0.0
        elif svc.__class__ is str:
            out["sample_rate"] = 1.0 / float(len(svc) + 1)
        else:
            out["sample_rate"] = 0.1
        if svc.__class__ is str:
            out["service"] = svc_guard(svc)
        attrs = e.get("attributes")
        if attrs.__class__ in (dict, list, str):
            out["attr_count"] = len(attrs)
        return out

    return label


def events(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    services = ["checkout", "payments", "api", "search", "auth"] + [f"svc-{i}" for i in range(35)]
    base = datetime(2026, 11, 30, tzinfo=UTC)
    out = []
    for i in range(n):
        e: dict = {"trace_id": f"{seed:04x}{i:012x}"}
        r = rng.random()
        if r < 0.05:
            pass
        elif r < 0.10:
            e["duration_ms"] = "12ms"
        else:
            e["duration_ms"] = round(rng.lognormvariate(3, 2), 3)
        r = rng.random()
        if r < 0.05:
            pass
        elif r < 0.10:
            e["start_time"] = rng.choice(("yesterday", "1732924800", "2026-11-30 10:00:00"))
        elif r < 0.15:
            e["start_time"] = "2099-01-01T00:00:00Z"
        elif r < 0.35:
            e["start_time"] = (base - timedelta(days=rng.randrange(40, 400))).strftime("%Y-%m-%dT%H:%M:%SZ")
        else:
            e["start_time"] = (base - timedelta(seconds=rng.randrange(86400))).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        r = rng.random()
        if r < 0.03:
            e["http"] = "n/a"
        elif r > 0.40:
            e["http"] = {"status_code": rng.choice((200, 200, 201, 404, 500, 503))}
        if rng.random() > 0.05:
            e["name"] = rng.choice(("GET /api/items", "healthz", "POST /pay", "db.query", "health-check"))
        r = rng.random()
        if r < 0.05:
            pass
        elif r < 0.07:
            e["service"] = 7
        else:
            e["service"] = rng.choice(services[:5] * 6 + services)
        e["status_code"] = rng.choice(("OK", "OK", "UNSET", "ERROR"))
        r = rng.random()
        if r < 0.30:
            pass
        elif r < 0.40:
            e["attributes"] = ["a", "b"]
        elif r < 0.43:
            e["attributes"] = 3
        else:
            e["attributes"] = {f"k{j}": j for j in range(rng.randrange(6))}
        out.append(e)
    return out
