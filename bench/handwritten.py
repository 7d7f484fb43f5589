"""The hand-written Python baseline: what a competent engineer writes instead of a policy.

`label_base` is the 40-rule policy of `bench.policies` written by hand as
if/elif chains over fields read once, with regexes compiled at import and
membership tests on frozensets. It assumes what the engineer knows about their
own logs: `http`, `client` and `headers` are always present and typed; only the
fields `bench.policies.MAY_BE_MISSING` names can be absent.

`make_labeler(spec)` adds the taxonomy labels of the 200/1,000-rule policies the
way that engineer would: the rule tables become dicts (tenant → tier, ASN →
class, service → team, status → detail), route prefixes a dict keyed on the
first three path segments, user-agent patterns a list of compiled regexes tried
in order. The tables are built from the spec's rules (the constants), the code
is hand-written.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from bench.policies import PolicySpec

_SCANNER = re.compile(r"^/(wp-login[.]php|[.]env|[.]git/|phpmyadmin)").search
_CRAWLER = re.compile(r"(?i)(googlebot|bingbot|yandexbot|baiduspider|duckduckbot)").search
_TOOL = re.compile(r"^(curl|Wget|python-requests|Go-http-client|okhttp)/").search
_BOTLIKE = re.compile(r"(?i)(bot|spider|crawl)").search
_API = re.compile(r"^/api/v[0-9]+/").search
_HEALTH = frozenset(("/healthz", "/readyz", "/metrics"))
_AMERICAS = frozenset(("US", "CA", "BR", "MX", "AR", "CL", "CO"))
_EMEA = frozenset(("GB", "DE", "FR", "NL", "ES", "IT", "SE", "PL", "NG", "ZA", "AE", "RU", "TR"))
_APAC = frozenset(("JP", "CN", "IN", "SG", "AU", "KR", "ID", "VN"))
_KNOWN = _AMERICAS | _EMEA | _APAC
_HOME = frozenset(("US", "DE"))
_HOSTING = frozenset((16509, 15169, 8075, 14061, 24940, 16276, 63949, 20473, 45102, 396982))
_WRITES = frozenset(("POST", "PUT", "DELETE", "PATCH"))
_UPLOADS = frozenset(("POST", "PUT", "PATCH"))


def label_base(event: dict) -> dict:
    """Labels of the 40-rule base policy for one parsed event."""
    http = event["http"]
    path = http["path"]
    status = http["status"]
    method = http["method"]
    latency = http["latency_ms"]
    bytes_out = http["bytes_out"]
    ua = event["headers"].get("user-agent")
    client = event["client"]
    country = client.get("country")
    upstream = event.get("upstream")

    if (ua is not None and (ua.startswith("kube-probe") or ua.startswith("Prometheus"))) or path in _HEALTH:
        traffic = "monitor"
    elif _SCANNER(path):
        traffic = "scanner"
    elif ua is None:
        traffic = "human"
    elif _CRAWLER(ua):
        traffic = "crawler"
    elif _TOOL(ua) or _BOTLIKE(ua):
        traffic = "bot"
    else:
        traffic = "human"

    if (upstream is not None and upstream.get("timeout") is True) or status == 504:
        error = "timeout"
    elif status >= 500:
        error = "server_error"
    elif status == 429:
        error = "rate_limited"
    elif status >= 400:
        error = "client_error"
    elif status >= 300:
        error = "redirect"
    else:
        error = "ok"

    if (path.startswith("/pay") and status >= 500) or (path.startswith("/api/v2/checkout") and latency > 2000.0):
        priority = "critical"
    elif (path.startswith("/auth") and (status == 401 or status == 403) and method == "POST") or path.startswith("/admin"):
        priority = "high"
    elif path in _HEALTH or path.startswith("/static/"):
        priority = "low"
    else:
        priority = "normal"

    if latency >= 30000.0:
        latency_class = "timeout"
    elif latency >= 5000.0:
        latency_class = "very_slow"
    elif latency >= 1000.0:
        latency_class = "slow"
    elif latency < 50.0:
        latency_class = "fast"
    else:
        latency_class = "ok"

    if bytes_out >= 10_485_760:
        payload = "huge"
    elif bytes_out >= 1_048_576:
        payload = "big"
    elif method in _UPLOADS and http["bytes_in"] >= 1_048_576:
        payload = "upload"
    elif bytes_out == 0:
        payload = "empty"
    else:
        payload = "normal"

    if path in _HEALTH:
        endpoint = "health"
    elif path.startswith("/pay"):
        endpoint = "payment"
    elif path.startswith("/auth/"):
        endpoint = "auth"
    elif path.startswith("/admin"):
        endpoint = "admin"
    elif path == "/graphql":
        endpoint = "graphql"
    elif _API(path):
        endpoint = "api"
    elif path.startswith("/static/") or path.endswith(".js"):
        endpoint = "static"
    else:
        endpoint = "other"

    if _SCANNER(path) or (path.startswith("/admin") and country in _KNOWN and country not in _HOME):
        risk = "high"
    elif (client.get("asn") in _HOSTING and method in _WRITES) or (path.startswith("/auth/") and status == 401):
        risk = "medium"
    else:
        risk = "low"

    labels = {
        "traffic_class": traffic,
        "error_class": error,
        "priority": priority,
        "latency_class": latency_class,
        "payload": payload,
    }
    if country in _AMERICAS:
        labels["region"] = "americas"
    elif country in _EMEA:
        labels["region"] = "emea"
    elif country in _APAC:
        labels["region"] = "apac"
    labels["endpoint"] = endpoint
    labels["risk"] = risk
    return labels


def _table(spec: PolicySpec, label: str) -> dict:
    """constant -> value for a label whose rules are all `eq`/`in` on one field (first rule wins)."""
    table: dict = {}
    for r in spec.rules:
        if r.label != label:
            continue
        kind, _path, arg = r.when
        for const in (arg if kind == "in" else (arg,)):
            table.setdefault(const, r.value)
    return table


def make_labeler(spec: PolicySpec) -> Callable[[dict], dict]:
    """The hand-written labeler for `spec` (the base policy plus its taxonomy labels)."""
    names = {lab.name for lab in spec.labels}
    if names == {"traffic_class", "error_class", "priority", "latency_class", "payload", "region",
                 "endpoint", "risk"}:
        return label_base

    tiers = _table(spec, "tenant_tier")
    networks = _table(spec, "network_class")
    details = _table(spec, "status_detail")
    services: dict = {}
    staging: dict = {}
    routes: dict[str, list[tuple[str | None, str]]] = {}
    agents: list[tuple[Callable, str]] = []
    for r in spec.rules:
        if r.label == "service_owner":
            if r.when[0] == "eq":
                services.setdefault(r.when[2], r.value)
            else:  # ("and", env == staging, service == x): only reached when x has no plain rule
                staging.setdefault(r.when[2][2], r.value)
        elif r.label == "route_owner":
            if r.when[0] == "prefix":
                routes.setdefault(r.when[2], []).append((None, r.value))
            else:  # ("and", prefix, method == m)
                routes.setdefault(r.when[1][2], []).append((r.when[2][2], r.value))
        elif r.label == "client_family":
            agents.append((re.compile(r.when[2]).search, r.value))
    for svc in services:
        staging.pop(svc, None)

    def label(event: dict) -> dict:
        labels = label_base(event)
        tier = tiers.get(event.get("tenant_id"))
        if tier is not None:
            labels["tenant_tier"] = tier
        net = networks.get(event["client"].get("asn"))
        if net is not None:
            labels["network_class"] = net
        http = event["http"]
        # Every route prefix is "/api/<version>/<resource>", so its first three
        # segments find the candidate rules; the method decides among them.
        path = http["path"]
        if path.startswith("/api/"):
            key = "/".join(path.split("/", 4)[:4])
            candidates = routes.get(key)
            if candidates is not None:
                method = http["method"]
                for want, team in candidates:
                    if want is None or want == method:
                        labels["route_owner"] = team
                        break
        svc = event["service"]
        team = services.get(svc)
        if team is None and event["env"] == "staging":
            team = staging.get(svc)
        if team is not None:
            labels["service_owner"] = team
        ua = event["headers"].get("user-agent")
        if ua is not None:
            for search, family in agents:
                if search(ua):
                    labels["client_family"] = family
                    break
        detail = details.get(http["status"])
        if detail is not None:
            labels["status_detail"] = detail
        return labels

    return label
