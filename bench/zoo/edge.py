"""Edge requests over the real Apache log (seed: "edge requests"): CIDR + JSON lookups, a bucket with a default, a vote.

Events are the 10,000 parsed lines of ../shared/data/http_access_log, cycled.
Messy shares: bytes null (Apache "-") as the data has it (~1-2%) plus a string
injected 3% (the bucket falls back to its default), status null in the one
unparsed line plus removed 2% / a string 2% (rules error, `error_class` stays
unset), user_agent missing 3%, client not in the JSON table ~99% (miss), client
in a named network ~15%.
"""

from __future__ import annotations

import ipaddress
import json
import random
import re
import shutil
from bisect import bisect_right
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from bench.zoo._common import is_num, key, read_csv, vote, write_csv

HERE = Path(__file__).resolve().parent
DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "http_access_log" / "apache_logs.parsed.jsonl"
BOT = re.compile(r"(?i)(bot|spider|crawl|slurp|feed)").search
STATIC = re.compile(r"[.](png|jpg|gif|css|js|ico)$").search
BOUNDS = (1024, 102400, 1048576)
BANDS = ("<1024", "1024-102400", "102400-1048576", ">=1048576")
NETWORKS = [("66.249.0.0/16", "google"), ("83.149.9.0/24", "campus"), ("207.241.0.0/16", "archive"),
            ("208.115.0.0/16", "hosting"), ("46.105.0.0/16", "ovh"), ("46.105.14.0/24", "ovh-fr")]


def materialize(d: Path) -> Path:
    write_csv(d / "networks.csv", ["network", "name"], NETWORKS)
    (d / "clients.json").write_text(json.dumps([{"ip": "66.249.73.135", "kind": "crawler"},
                                                {"ip": "83.149.9.216", "kind": "campus"}]))
    shutil.copy(HERE / "edge.yaml", d / "policy.yaml")
    return d / "policy.yaml"


def make_labeler(d: Path, **_: Any) -> Callable[[dict], dict]:
    nets = sorted(((ipaddress.ip_network(n), r["name"]) for n, r in read_csv(d / "networks.csv").items()),
                  key=lambda t: -t[0].prefixlen)
    clients = {r["ip"]: r for r in json.loads((d / "clients.json").read_text())}
    empty: dict = {}
    cache: dict[str, str | None] = {}

    def net_of(ip: Any) -> str | None:
        if ip.__class__ is not str:
            return None
        if ip in cache:
            return cache[ip]
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            name = None
        else:
            if addr.version == 6 and addr.ipv4_mapped is not None:
                addr = addr.ipv4_mapped
            name = next((nm for net, nm in nets if net.version == addr.version and addr in net), None)
        cache[ip] = name
        return name

    def label(e: dict) -> dict:
        out: dict = {}
        status = e.get("status", e)
        if status is e or status is None:
            out["error_class"] = "unparsed"
        elif is_num(status):
            if status >= 500:
                out["error_class"] = "server_error"
            elif status >= 400:
                out["error_class"] = "client_error"
            elif status >= 300:
                out["error_class"] = "redirect"
            elif status >= 200:
                out["error_class"] = "ok"
        b = e.get("bytes")
        band = BANDS[bisect_right(BOUNDS, b)] if is_num(b) else "<1024"
        out["size_band"] = band
        ip = e.get("client_ip")
        ua = e.get("user_agent")
        bot = (ua.__class__ is str and BOT(ua) is not None) or clients.get(key(ip), empty).get("kind") == "crawler"
        out["bot"] = bot
        network = net_of(ip) or "internet"
        out["network"] = network
        path = e.get("path")
        p = path.__class__ is str
        cands = []
        if out.get("error_class") == "server_error":
            cands.append(("high", 0.7))
        if bot:
            cands.append(("low", 0.6))
        if p and STATIC(path):
            cands.append(("low", 0.3))
        if band == ">=1048576":
            cands.append(("high", 0.4))
        if network != "internet":
            cands.append(("normal", 0.5))
        out["priority"] = vote(cands) or "normal"
        if p and path.startswith("/"):
            parts = path.split("/")
            if len(parts) > 2:
                out["path_kind"] = parts[1]
        return out

    return label


def events(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    lines = []
    for line in DATA.read_bytes().splitlines():
        rec = orjson.loads(line)
        rec.pop("raw", None)
        lines.append(rec)
    out = []
    for i in range(n):
        e = dict(lines[(i + seed * 101) % len(lines)])
        r = rng.random()
        if r < 0.02:
            e.pop("status", None)
        elif r < 0.04:
            e["status"] = str(e.get("status"))
        elif r < 0.07:
            e["bytes"] = "-"
        elif r < 0.10:
            e.pop("user_agent", None)
        out.append(e)
    return out
