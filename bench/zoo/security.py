"""Security threat enrichment (seed: "security threat enrichment"): CIDR zones, JSON IOC intel, a vote.

Synthetic firewall/IDS events. Messy shares: source IP not a valid address 3%
(CIDR miss) or missing 3%, IP not in the IOC table ~85% (most traffic is clean:
the intel join misses), IOC severity a double (so `severity * 10` errors) ~15% of
IOC rows, dst_port a string 5% / missing 5%, signature missing 40%, action
missing 5%. `attacker` is guarded (20 per 300 s window).
"""

from __future__ import annotations

import ipaddress
import json
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.zoo._common import Guard, is_num, key, no_guard, read_csv, vote, write_csv

HERE = Path(__file__).resolve().parent
NETS = [("10.0.0.0/8", "corp"), ("10.9.0.0/16", "lab"), ("192.168.0.0/16", "corp"), ("172.16.5.0/24", "dmz"),
        ("172.16.0.0/12", "corp"), ("198.51.100.0/24", "dmz")]
LATERAL = frozenset((23, 2323, 445, 3389))


def _bad_ips() -> list[str]:
    return [f"203.0.113.{i}" for i in range(1, 60)] + [f"10.9.0.{i}" for i in range(1, 6)]


def materialize(d: Path) -> Path:
    write_csv(d / "nets.csv", ["network", "zone"], NETS)
    iocs = {}
    for i, ip in enumerate(_bad_ips()):
        sev: Any = (i * 3) % 11
        if i % 7 == 0:
            sev = float(sev) + 0.5
        iocs[ip] = {"family": f"fam{i % 9}", "severity": sev}
    (d / "iocs.json").write_text(json.dumps(iocs))
    shutil.copy(HERE / "security.yaml", d / "policy.yaml")
    return d / "policy.yaml"


def make_labeler(d: Path, *, guards: bool = True, clock: Callable[[], float] = time.monotonic,
                 **_: Any) -> Callable[[dict], dict]:
    nets = sorted(((ipaddress.ip_network(n), row["zone"]) for n, row in read_csv(d / "nets.csv").items()),
                  key=lambda nz: -nz[0].prefixlen)
    iocs = json.loads((d / "iocs.json").read_text())
    empty: dict = {}
    fam_guard = Guard(5, "other_family") if guards else no_guard
    att_guard = Guard(20, "__other__", 300, clock) if guards else no_guard
    cache: dict[str, str | None] = {}

    def zone_of(ip: Any) -> str | None:
        if ip.__class__ is not str:
            return None
        if ip in cache:
            return cache[ip]
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            z = None
        else:
            if addr.version == 6 and addr.ipv4_mapped is not None:
                addr = addr.ipv4_mapped
            z = next((zone for net, zone in nets if addr.version == net.version and addr in net), None)
        cache[ip] = z
        return z

    def label(e: dict) -> dict:
        out: dict = {}
        ip = e.get("src_ip")
        zone = zone_of(ip)
        zone = zone if zone in ("corp", "dmz", "lab", "external") else "external"
        out["zone"] = zone
        ioc = iocs.get(key(ip), empty)
        fam = ioc.get("family", ioc)
        has_fam = fam is not ioc
        if has_fam and fam.__class__ is str:
            out["ioc_family"] = fam_guard(fam)
        sev = ioc.get("severity")
        port = e.get("dst_port", e)
        action = e.get("action", e)
        sig = e.get("signature")
        cands = []
        if is_num(sev) and sev >= 7:
            cands.append(("malicious", 0.9))
        if has_fam:
            cands.append(("suspicious", 0.5))
        if port is not e and zone == "external" and port.__class__ is not bool and port in LATERAL:
            cands.append(("suspicious", 0.6))
        if sig.__class__ is str and "exploit" in sig:
            cands.append(("malicious", 0.4))
        if action == "deny" and zone == "external":
            cands.append(("suspicious", 0.3))
        if zone == "corp" and action == "allow":
            cands.append(("benign", 0.7))
        threat = vote(cands) or "benign"
        out["threat"] = threat
        if threat == "malicious" and ip.__class__ is str:
            out["attacker"] = att_guard(ip)
        if sev.__class__ is int and action is not e:
            out["severity_score"] = sev * 10 + (0 if action == "deny" else 5)
        return out

    return label


def events(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    bad = _bad_ips()
    out = []
    for _ in range(n):
        r = rng.random()
        e: dict = {}
        if r < 0.03:
            e["src_ip"] = rng.choice(("unknown", "-", "10.0.0.256"))
        elif r < 0.06:
            pass
        elif r < 0.21:
            e["src_ip"] = rng.choice(bad)
        elif r < 0.55:
            e["src_ip"] = f"10.{rng.choice((1, 9, 20))}.{rng.randrange(256)}.{rng.randrange(256)}"
        elif r < 0.60:
            e["src_ip"] = f"172.16.{rng.choice((5, 6))}.{rng.randrange(256)}"
        else:
            e["src_ip"] = f"{rng.randrange(1, 223)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}"
        r = rng.random()
        if r < 0.05:
            e["dst_port"] = str(rng.choice((445, 80)))
        elif r > 0.10:
            e["dst_port"] = rng.choice((22, 23, 80, 443, 445, 3389, 8080, 2323))
        if rng.random() > 0.05:
            e["action"] = rng.choice(("allow", "allow", "deny"))
        if rng.random() > 0.40:
            e["signature"] = rng.choice(("ET SCAN nmap", "ET exploit CVE-2021-44228", "GPL ICMP ping", "none"))
        out.append(e)
    return out
