"""Seeded generator of realistic HTTP-request events (~590 bytes of JSON each).

The shape is what an edge proxy or ingress controller logs: a nested ``http``
object (method, path, status, latency, sizes), ``client`` (ip, country, ASN),
``headers`` and, when the request reached a backend, ``upstream``. The mix has
what makes labeling policies interesting: bots and crawlers, scanners probing
``/.env``, 5xx bursts, upstream timeouts, big payloads, and fields that are
missing on some events (no user-agent, unknown ASN, anonymous tenant, no
upstream on cached responses).

The pools (tenants, services, resources, ASNs, browser versions) are fixed
module constants, so every policy size in ``bench.policies`` tests the same
population and the events are the same for a given seed on every machine.

    >>> from bench.events import generate_events
    >>> events = generate_events(1000, seed=7)
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import orjson

# --- fixed pools shared with bench.policies -------------------------------------

N_TENANTS = 2000
TENANTS = [f"t-{i:04d}" for i in range(N_TENANTS)]

SERVICES = [
    f"{area}-{kind}"
    for area in (
        "orders", "cart", "catalog", "search", "users", "payments", "billing", "shipping",
        "reviews", "media", "auth", "notify", "inventory", "pricing", "promo",
    )
    for kind in ("api", "svc", "worker", "gw")
]  # 60 services

RESOURCES = [
    "orders", "carts", "products", "prices", "users", "sessions", "invoices", "refunds",
    "shipments", "addresses", "reviews", "images", "videos", "coupons", "wishlists",
    "stores", "inventory", "warehouses", "suppliers", "categories", "brands", "tags",
    "notifications", "webhooks", "tokens", "keys", "audits", "reports", "exports", "imports",
    "subscriptions", "plans", "payouts", "disputes", "ledgers", "accounts", "teams",
    "roles", "permissions", "settings", "feeds", "recommendations", "events", "metrics",
    "campaigns", "segments", "experiments", "flags", "quotes", "returns",
]  # 50 resources
API_VERSIONS = ("v1", "v2", "v3")

HOSTING_ASNS = [16509, 15169, 8075, 14061, 24940, 16276, 63949, 20473, 45102, 396982]
ISP_ASNS = [7922, 701, 7018, 3320, 3215, 2856, 5089, 1221, 4134, 4837, 9808, 17676,
            2516, 4766, 9498, 7545, 6830, 3352, 12322, 6805]
ASNS = HOSTING_ASNS + ISP_ASNS + [64512 + i for i in range(270)]  # 300 ASNs

COUNTRIES = ["US", "US", "US", "DE", "GB", "FR", "IN", "BR", "JP", "CA", "NL", "ES", "IT",
             "AU", "SG", "KR", "MX", "SE", "PL", "CN", "RU", "NG", "ZA", "AE", "TR", "ID",
             "VN", "AR", "CL", "CO", "ZZ"]

BROWSER_UAS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v}.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:{v}.0) Gecko/20100101 Firefox/{v}.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v}.0.0.0 Mobile Safari/537.36",
]
BOT_UAS = [
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
    "Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)",
    "Baiduspider+(+http://www.baidu.com/search/spider.htm)",
    "curl/8.4.0",
    "Wget/1.21.4",
    "python-requests/2.31.0",
    "Go-http-client/2.0",
    "okhttp/4.12.0",
    "k6/0.47.0 (https://k6.io/)",
    "kube-probe/1.28",
    "Prometheus/2.48.0",
    "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
]
SCANNER_PATHS = ["/wp-login.php", "/.env", "/.git/config", "/phpmyadmin/index.php", "/admin/.env"]
METHODS = ["GET"] * 70 + ["POST"] * 18 + ["PUT"] * 5 + ["DELETE"] * 3 + ["PATCH"] * 2 + ["HEAD", "OPTIONS"]
OK_STATUSES = [200] * 80 + [201] * 5 + [204] * 4 + [301, 302, 304, 304, 304]
CLIENT_ERRORS = [400, 401, 401, 403, 404, 404, 404, 404, 409, 422, 429, 429]
SERVER_ERRORS = [500, 500, 502, 503, 503, 504]


def _path(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.60:
        res = RESOURCES[min(int(rng.paretovariate(1.2)) - 1, len(RESOURCES) - 1)] if rng.random() < 0.5 \
            else rng.choice(RESOURCES)
        tail = f"/{rng.randrange(1, 99999)}" if rng.random() < 0.6 else ""
        return f"/api/{rng.choice(API_VERSIONS)}/{res}{tail}"
    if r < 0.66:
        return f"/api/v2/checkout/{rng.randrange(1, 99999)}"
    if r < 0.76:
        return f"/static/{rng.choice(('js', 'css', 'img'))}/{rng.randrange(1000)}.{rng.choice(('js', 'css', 'png'))}"
    if r < 0.81:
        return rng.choice(("/healthz", "/readyz", "/metrics"))
    if r < 0.86:
        return f"/pay/{rng.choice(('authorize', 'capture', 'refund'))}/{rng.randrange(1, 99999)}"
    if r < 0.90:
        return rng.choice(("/auth/login", "/auth/token", "/auth/logout", "/auth/mfa"))
    if r < 0.93:
        return f"/admin/{rng.choice(('users', 'flags', 'billing', 'audit'))}"
    if r < 0.96:
        return "/graphql"
    if r < 0.98:
        return rng.choice(SCANNER_PATHS)
    return f"/app/{rng.choice(('home', 'cart', 'account', 'search'))}.js"


def make_event(rng: random.Random, i: int) -> dict:
    """One request event; `i` only seeds the request id so ids are unique."""
    is_bot = rng.random() < 0.12
    path = _path(rng)
    method = rng.choice(METHODS)
    r = rng.random()
    timeout = False
    if r < 0.015:
        timeout = True
        status = 504
    elif r < 0.045:
        status = rng.choice(SERVER_ERRORS)
    elif r < 0.14:
        status = rng.choice(CLIENT_ERRORS)
    else:
        status = rng.choice(OK_STATUSES)
    if timeout:
        latency = 30000.0 + round(rng.random() * 50, 3)
    else:
        latency = round(min(rng.lognormvariate(3.3, 1.3), 29000.0), 3)
    r = rng.random()
    if r < 0.01:
        bytes_out = rng.randrange(10_485_760, 80_000_000)       # huge download
    elif r < 0.05:
        bytes_out = rng.randrange(1_048_576, 10_485_760)
    elif status in (204, 304) or method == "HEAD":
        bytes_out = 0
    else:
        bytes_out = int(rng.lognormvariate(8, 1.5))
    bytes_in = rng.randrange(1_048_576, 20_000_000) if method in ("POST", "PUT") and rng.random() < 0.04 \
        else (rng.randrange(64, 4096) if method in ("POST", "PUT", "PATCH") else 0)
    if is_bot:
        ua = rng.choice(BOT_UAS)
    else:
        ua = rng.choice(BROWSER_UAS).format(v=rng.randrange(100, 125))
    ip = f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
    client: dict = {"ip": ip}
    if rng.random() > 0.02:
        client["country"] = rng.choice(COUNTRIES)
    if rng.random() > 0.08:
        client["asn"] = rng.choice(HOSTING_ASNS) if is_bot and rng.random() < 0.6 else rng.choice(ASNS)
    client["tls"] = "TLSv1.3" if rng.random() < 0.85 else "TLSv1.2"
    headers: dict = {}
    if rng.random() > 0.03:
        headers["user-agent"] = ua
    headers["accept"] = "application/json" if path.startswith("/api") else "*/*"
    if rng.random() < 0.5:
        headers["accept-language"] = "en-US,en;q=0.9"
    headers["x-forwarded-for"] = f"{ip}, 10.0.{rng.randrange(256)}.{rng.randrange(1, 255)}"
    event: dict = {
        "ts": f"2026-11-27T{rng.randrange(24):02d}:{rng.randrange(60):02d}:{rng.randrange(60):02d}."
              f"{rng.randrange(1000):03d}Z",
        "request_id": f"{rng.getrandbits(48):012x}{i:08d}",
        "service": rng.choice(SERVICES),
        "env": "prod" if rng.random() < 0.9 else "staging",
    }
    if rng.random() > 0.15:
        event["tenant_id"] = TENANTS[min(int(rng.paretovariate(0.6)), N_TENANTS) - 1] \
            if rng.random() < 0.5 else rng.choice(TENANTS)
    event["http"] = {
        "method": method,
        "path": path,
        "status": status,
        "latency_ms": latency,
        "bytes_in": bytes_in,
        "bytes_out": bytes_out,
        "protocol": "HTTP/2" if rng.random() < 0.7 else "HTTP/1.1",
    }
    event["client"] = client
    event["headers"] = headers
    if status != 304 and not path.startswith("/static/"):
        event["upstream"] = {
            "name": event["service"],
            "timeout": timeout,
            "retries": (rng.randrange(1, 3) if timeout else 0),
        }
    return event


def generate_events(n: int, seed: int = 1) -> list[dict]:
    """`n` events, the same list for the same seed."""
    rng = random.Random(seed)
    return [make_event(rng, i) for i in range(n)]


def iter_events(n: int, seed: int = 1) -> Iterator[dict]:
    """Like `generate_events` without holding them all (for big JSONL files)."""
    rng = random.Random(seed)
    for i in range(n):
        yield make_event(rng, i)


def write_jsonl(path: Path, n: int, seed: int = 1, pool: int = 50_000) -> int:
    """Write `n` events as JSONL and return the byte size.

    Events past `pool` repeat the first `pool` with a fresh request id, which
    keeps generating a 1M-record file to a few seconds without changing the mix.
    """
    base = [orjson.dumps(e) for e in generate_events(min(n, pool), seed)]
    size = 0
    with open(path, "wb") as f:
        buf = []
        for i in range(n):
            line = base[i % len(base)]
            if i >= len(base):
                # request_id ends with the index of the id; make it unique again.
                line = line.replace(b'"request_id":"', b'"request_id":"r', 1)
            buf.append(line)
            if len(buf) >= 10_000:
                chunk = b"\n".join(buf) + b"\n"
                f.write(chunk)
                size += len(chunk)
                buf.clear()
        if buf:
            chunk = b"\n".join(buf) + b"\n"
            f.write(chunk)
            size += len(chunk)
    return size


if __name__ == "__main__":
    import statistics

    evs = generate_events(20_000, seed=1)
    sizes = [len(orjson.dumps(e)) for e in evs]
    print("mean bytes", statistics.mean(sizes), "median", statistics.median(sizes))
    print(orjson.dumps(evs[0], option=orjson.OPT_INDENT_2).decode())
