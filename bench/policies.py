"""One labeling policy, rendered for every engine the benchmark compares.

A policy is described once as data (`PolicySpec`: labels in evaluation order,
rules in file order, each rule's condition a small tree of predicates) and
rendered into each engine's own form:

- `to_yaml`          the activelabel policy file (CEL `when:` expressions);
- `to_cel`           CEL text, for cel-python and the Rust `common-expression-language`;
- `to_rule_engine`   rule-engine expressions (`=~~` is its regex *search*, like CEL `matches`);
- `to_simpleeval`    Python-syntax expressions for simpleeval (with a `matches` function).

The hand-written baseline is *not* generated from this tree: it lives in
`bench.handwritten`, written the way an engineer would write it by hand, and the
benchmark checks it agrees with every engine before timing anything.

Predicate tree (tuples, so specs are hashable and cheap to build)::

    ("eq", path, const)   ("in", path, (c1, c2, ...))
    ("ge"|"gt"|"le"|"lt", path, number)
    ("prefix"|"suffix"|"contains"|"regex", path, text)
    ("and", p1, p2, ...)  ("or", p1, p2, ...)  ("not", p)

`path` is a tuple of keys under the event, e.g. ``("headers", "user-agent")``.
Conditions are written so that a missing field makes a rule *not match* in
every engine: CEL turns the error into "no match", the Python peers raise and
the benchmark's first-match loop treats an exception as "no match". That only
agrees when no `||` or `!` sits above a field that may be missing, which the
generators respect (see `MAY_BE_MISSING`).

Sizes: `policy_spec(40)` is the base policy (8 labels, 40 rules);
`policy_spec(200)` and `policy_spec(1000)` add six taxonomy labels whose rules
test the same fields against many constants (tenant → tier, ASN → network
class, route prefix → owning team, service → team, user-agent regex →
client family, status → detail), as real taxonomies do.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.events import API_VERSIONS, ASNS, HOSTING_ASNS, RESOURCES, SERVICES, TENANTS

Pred = tuple

# Fields absent from some generated events; no `!`/`||` may sit above them.
MAY_BE_MISSING = {("headers", "user-agent"), ("client", "asn"), ("client", "country"),
                  ("tenant_id",), ("upstream", "timeout")}


@dataclass(frozen=True)
class LabelSpec:
    name: str
    values: tuple[str, ...]
    default: str | None = None


@dataclass(frozen=True)
class RuleSpec:
    id: str
    label: str
    value: str
    when: Pred


@dataclass
class PolicySpec:
    name: str
    labels: list[LabelSpec]
    rules: list[RuleSpec] = field(default_factory=list)

    def rules_by_label(self) -> dict[str, list[RuleSpec]]:
        out: dict[str, list[RuleSpec]] = {lab.name: [] for lab in self.labels}
        for r in self.rules:
            out[r.label].append(r)
        return out


# --- the base policy: 8 labels, 40 rules -----------------------------------------

UA = ("headers", "user-agent")
PATH = ("http", "path")
STATUS = ("http", "status")
METHOD = ("http", "method")
LAT = ("http", "latency_ms")
BYTES_OUT = ("http", "bytes_out")
BYTES_IN = ("http", "bytes_in")
COUNTRY = ("client", "country")
ASN = ("client", "asn")

HEALTH_PATHS = ("/healthz", "/readyz", "/metrics")
SCANNER_RE = "^/(wp-login[.]php|[.]env|[.]git/|phpmyadmin)"
CRAWLER_RE = "(?i)(googlebot|bingbot|yandexbot|baiduspider|duckduckbot)"
TOOL_RE = "^(curl|Wget|python-requests|Go-http-client|okhttp)/"
BOTLIKE_RE = "(?i)(bot|spider|crawl)"
API_RE = "^/api/v[0-9]+/"
AMERICAS = ("US", "CA", "BR", "MX", "AR", "CL", "CO")
EMEA = ("GB", "DE", "FR", "NL", "ES", "IT", "SE", "PL", "NG", "ZA", "AE", "RU", "TR")
APAC = ("JP", "CN", "IN", "SG", "AU", "KR", "ID", "VN")
HOME_COUNTRIES = ("US", "DE")
WRITE_METHODS = ("POST", "PUT", "DELETE", "PATCH")

BASE_LABELS = [
    LabelSpec("traffic_class", ("monitor", "scanner", "crawler", "bot", "human"), "human"),
    LabelSpec("error_class", ("timeout", "server_error", "rate_limited", "client_error", "redirect", "ok"), "ok"),
    LabelSpec("priority", ("critical", "high", "normal", "low"), "normal"),
    LabelSpec("latency_class", ("timeout", "very_slow", "slow", "ok", "fast"), "ok"),
    LabelSpec("payload", ("huge", "big", "upload", "empty", "normal"), "normal"),
    LabelSpec("region", ("americas", "emea", "apac")),  # no default: absent when unknown
    LabelSpec("endpoint", ("health", "payment", "auth", "admin", "graphql", "api", "static", "other"), "other"),
    LabelSpec("risk", ("high", "medium", "low"), "low"),
]

BASE_RULES = [
    RuleSpec("tc-monitor-agent", "traffic_class", "monitor",
             ("or", ("prefix", UA, "kube-probe"), ("prefix", UA, "Prometheus"))),
    RuleSpec("tc-health-path", "traffic_class", "monitor", ("in", PATH, HEALTH_PATHS)),
    RuleSpec("tc-scanner", "traffic_class", "scanner", ("regex", PATH, SCANNER_RE)),
    RuleSpec("tc-crawler", "traffic_class", "crawler", ("regex", UA, CRAWLER_RE)),
    RuleSpec("tc-http-tool", "traffic_class", "bot", ("regex", UA, TOOL_RE)),
    RuleSpec("tc-botlike", "traffic_class", "bot", ("regex", UA, BOTLIKE_RE)),

    RuleSpec("ec-upstream-timeout", "error_class", "timeout", ("eq", ("upstream", "timeout"), True)),
    RuleSpec("ec-504", "error_class", "timeout", ("eq", STATUS, 504)),
    RuleSpec("ec-5xx", "error_class", "server_error", ("ge", STATUS, 500)),
    RuleSpec("ec-429", "error_class", "rate_limited", ("eq", STATUS, 429)),
    RuleSpec("ec-4xx", "error_class", "client_error", ("ge", STATUS, 400)),
    RuleSpec("ec-3xx", "error_class", "redirect", ("ge", STATUS, 300)),

    RuleSpec("pr-pay-5xx", "priority", "critical", ("and", ("prefix", PATH, "/pay"), ("ge", STATUS, 500))),
    RuleSpec("pr-checkout-slow", "priority", "critical",
             ("and", ("prefix", PATH, "/api/v2/checkout"), ("gt", LAT, 2000.0))),
    RuleSpec("pr-auth-fail", "priority", "high",
             ("and", ("prefix", PATH, "/auth"), ("in", STATUS, (401, 403)), ("eq", METHOD, "POST"))),
    RuleSpec("pr-admin", "priority", "high", ("prefix", PATH, "/admin")),
    RuleSpec("pr-monitor", "priority", "low", ("in", PATH, HEALTH_PATHS)),
    RuleSpec("pr-static", "priority", "low", ("prefix", PATH, "/static/")),

    RuleSpec("lt-timeout", "latency_class", "timeout", ("ge", LAT, 30000.0)),
    RuleSpec("lt-very-slow", "latency_class", "very_slow", ("ge", LAT, 5000.0)),
    RuleSpec("lt-slow", "latency_class", "slow", ("ge", LAT, 1000.0)),
    RuleSpec("lt-fast", "latency_class", "fast", ("lt", LAT, 50.0)),

    RuleSpec("pl-huge", "payload", "huge", ("ge", BYTES_OUT, 10_485_760)),
    RuleSpec("pl-big", "payload", "big", ("ge", BYTES_OUT, 1_048_576)),
    RuleSpec("pl-upload", "payload", "upload",
             ("and", ("in", METHOD, ("POST", "PUT", "PATCH")), ("ge", BYTES_IN, 1_048_576))),
    RuleSpec("pl-empty", "payload", "empty", ("eq", BYTES_OUT, 0)),

    RuleSpec("rg-americas", "region", "americas", ("in", COUNTRY, AMERICAS)),
    RuleSpec("rg-emea", "region", "emea", ("in", COUNTRY, EMEA)),
    RuleSpec("rg-apac", "region", "apac", ("in", COUNTRY, APAC)),

    RuleSpec("ep-health", "endpoint", "health", ("in", PATH, HEALTH_PATHS)),
    RuleSpec("ep-payment", "endpoint", "payment", ("prefix", PATH, "/pay")),
    RuleSpec("ep-auth", "endpoint", "auth", ("prefix", PATH, "/auth/")),
    RuleSpec("ep-admin", "endpoint", "admin", ("prefix", PATH, "/admin")),
    RuleSpec("ep-graphql", "endpoint", "graphql", ("eq", PATH, "/graphql")),
    RuleSpec("ep-api", "endpoint", "api", ("regex", PATH, API_RE)),
    RuleSpec("ep-static", "endpoint", "static", ("or", ("prefix", PATH, "/static/"), ("suffix", PATH, ".js"))),

    RuleSpec("rk-scanner", "risk", "high", ("regex", PATH, SCANNER_RE)),
    RuleSpec("rk-admin-abroad", "risk", "high",
             ("and", ("prefix", PATH, "/admin"), ("in", COUNTRY, AMERICAS + EMEA + APAC),
              ("not", ("in", COUNTRY, HOME_COUNTRIES)))),
    RuleSpec("rk-hosting-write", "risk", "medium",
             ("and", ("in", ASN, tuple(HOSTING_ASNS)), ("in", METHOD, WRITE_METHODS))),
    RuleSpec("rk-auth-401", "risk", "medium", ("and", ("prefix", PATH, "/auth/"), ("eq", STATUS, 401))),
]

# --- taxonomy labels for the 200- and 1,000-rule policies ------------------------

TIERS = ("enterprise", "gold", "silver", "bronze", "trial")
NET_CLASSES = ("hosting", "isp", "mobile", "education", "government", "business")
TEAMS = tuple(f"team-{i:02d}" for i in range(20))
CLIENT_FAMILIES = ("chrome_new", "chrome_old", "firefox_new", "firefox_old", "mobile_android",
                   "crawler", "tool", "monitor", "chat")
STATUS_DETAILS = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                  409: "conflict", 422: "unprocessable", 429: "too_many", 500: "internal",
                  502: "bad_gateway", 503: "unavailable", 504: "gateway_timeout", 301: "moved",
                  302: "found", 304: "not_modified", 201: "created", 204: "no_content", 200: "ok"}

TAXONOMY_LABELS = [
    LabelSpec("tenant_tier", TIERS),
    LabelSpec("network_class", NET_CLASSES),
    LabelSpec("route_owner", TEAMS),
    LabelSpec("service_owner", TEAMS),
    LabelSpec("client_family", CLIENT_FAMILIES),
    LabelSpec("status_detail", tuple(sorted(set(STATUS_DETAILS.values())))),
]
# Share of the extra rules each taxonomy label gets.
TAXONOMY_SHARES = {"tenant_tier": 0.45, "network_class": 0.20, "route_owner": 0.20,
                   "service_owner": 0.08, "client_family": 0.05, "status_detail": 0.02}


def _ua_patterns() -> list[tuple[str, str]]:
    pats: list[tuple[str, str]] = []
    for v in range(124, 99, -1):
        fam = "chrome_new" if v >= 118 else "chrome_old"
        pats.append((f"Android.*Chrome/{v}[.]", "mobile_android"))
        pats.append((f"Chrome/{v}[.]", fam))
        pats.append((f"Firefox/{v}[.]", "firefox_new" if v >= 118 else "firefox_old"))
    for name in ("googlebot", "bingbot", "ahrefsbot", "yandexbot", "baiduspider"):
        pats.append((f"(?i){name}", "crawler"))
    for name in ("curl", "Wget", "python-requests", "Go-http-client", "okhttp", "k6"):
        pats.append((f"^{name}/", "tool"))
    pats += [("^kube-probe/", "monitor"), ("^Prometheus/", "monitor"), ("Slackbot", "chat")]
    return pats


def _taxonomy_rules(label: str, n: int, rng: random.Random) -> list[RuleSpec]:
    rules: list[RuleSpec] = []
    rid = 0

    def add(value: str, when: Pred) -> None:
        nonlocal rid
        rid += 1
        rules.append(RuleSpec(f"{label.replace('_', '-')}-{rid:04d}", label, value, when))

    if label == "tenant_tier":
        pool = TENANTS[:]
        rng.shuffle(pool)
        it = iter(pool)
        for _ in range(n):
            tier = rng.choices(TIERS, weights=(1, 3, 6, 8, 4))[0]
            if rng.random() < 0.2:
                add(tier, ("in", ("tenant_id",), tuple(next(it) for _ in range(rng.randrange(2, 7)))))
            else:
                add(tier, ("eq", ("tenant_id",), next(it)))
    elif label == "network_class":
        pool = ASNS[:]
        rng.shuffle(pool)
        it = iter(pool)
        for _ in range(n):
            cls = rng.choice(NET_CLASSES)
            if rng.random() < 0.15:
                add(cls, ("in", ASN, tuple(next(it) for _ in range(rng.randrange(2, 5)))))
            else:
                add(cls, ("eq", ASN, next(it)))
    elif label == "route_owner":
        # One rule per (version, resource) prefix, plus method-specific rules placed
        # before the plain prefix rule they refine (first match wins).
        prefixes = [f"/api/{v}/{r}" for v in API_VERSIONS for r in RESOURCES]
        rng.shuffle(prefixes)
        assert n <= 2 * len(prefixes), n
        count = 0
        for i, p in enumerate(prefixes):
            if count >= n:
                break
            refine = n - count > len(prefixes) - i or rng.random() < 0.25
            if refine and count + 1 < n:
                add(rng.choice(TEAMS), ("and", ("prefix", PATH, p), ("eq", METHOD, rng.choice(WRITE_METHODS))))
                count += 1
            add(rng.choice(TEAMS), ("prefix", PATH, p))
            count += 1
    elif label == "service_owner":
        pool = SERVICES[:]
        rng.shuffle(pool)
        for i in range(n):
            if i < len(pool):
                add(rng.choice(TEAMS), ("eq", ("service",), pool[i]))
            else:  # overrides by environment, placed after: realistic dead weight
                add(rng.choice(TEAMS), ("and", ("eq", ("env",), "staging"), ("eq", ("service",), rng.choice(SERVICES))))
    elif label == "client_family":
        pats = _ua_patterns()
        step = max(1, len(pats) // n) if n < len(pats) else 1
        chosen = pats[::step][:n]
        for pat, fam in chosen:
            add(fam, ("regex", UA, pat))
    elif label == "status_detail":
        codes = list(STATUS_DETAILS)
        for code in codes[:n]:
            add(STATUS_DETAILS[code], ("eq", STATUS, code))
    return rules


def policy_spec(n_rules: int = 40, seed: int = 3) -> PolicySpec:
    """The base 40-rule policy, or it plus taxonomy rules up to `n_rules`."""
    if n_rules < len(BASE_RULES):
        raise ValueError(f"at least {len(BASE_RULES)} rules")
    spec = PolicySpec(f"bench-{n_rules}", list(BASE_LABELS), list(BASE_RULES))
    extra = n_rules - len(BASE_RULES)
    if extra == 0:
        return spec
    rng = random.Random(seed)
    caps = {"client_family": len(_ua_patterns()), "status_detail": len(STATUS_DETAILS)}
    counts = {k: min(max(1, int(extra * s)), caps.get(k, extra)) for k, s in TAXONOMY_SHARES.items()}
    counts["tenant_tier"] += extra - sum(counts.values())
    spec.labels += TAXONOMY_LABELS
    for lab in TAXONOMY_LABELS:
        spec.rules += _taxonomy_rules(lab.name, counts[lab.name], rng)
    assert len(spec.rules) == n_rules, (len(spec.rules), n_rules)
    return spec


# --- renderers ---------------------------------------------------------------------

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _cel_lit(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        assert "\\" not in v and '"' not in v, v
        return f'"{v}"'
    return repr(v)


def _py_lit(v: Any) -> str:
    if isinstance(v, str):
        assert "\\" not in v and "'" not in v, v
        return f"'{v}'"
    return repr(v)


def _render(p: Pred, path_fn, lit, ops) -> str:
    kind = p[0]
    if kind in ("and", "or"):
        parts = []
        for q in p[1:]:
            text = _render(q, path_fn, lit, ops)
            parts.append(f"({text})" if q[0] in ("and", "or") else text)
        return f" {ops[kind]} ".join(parts)
    if kind == "not":
        return ops["not"](_render(p[1], path_fn, lit, ops))
    f = path_fn(p[1])
    arg = p[2]
    if kind == "in":
        return ops["in"](f, [lit(x) for x in arg])
    if kind in ("eq", "ge", "gt", "le", "lt"):
        return f"{f} {dict(eq='==', ge='>=', gt='>', le='<=', lt='<')[kind]} {lit(arg)}"
    return ops[kind](f, lit(arg))


_CEL_OPS = {
    "and": "&&", "or": "||",
    "not": lambda x: f"!({x})",
    "in": lambda f, xs: f"{f} in [{', '.join(xs)}]",
    "prefix": lambda f, s: f"{f}.startsWith({s})",
    "suffix": lambda f, s: f"{f}.endsWith({s})",
    "contains": lambda f, s: f"{f}.contains({s})",
    "regex": lambda f, s: f"{f}.matches({s})",
}
_RULE_ENGINE_OPS = {
    "and": "and", "or": "or",
    "not": lambda x: f"not ({x})",
    "in": lambda f, xs: f"{f} in [{', '.join(xs)}]",
    "prefix": lambda f, s: f"{f}.starts_with({s})",
    "suffix": lambda f, s: f"{f}.ends_with({s})",
    "contains": lambda f, s: f"{s} in {f}",
    "regex": lambda f, s: f"{f} =~~ {s}",
}
_SIMPLEEVAL_OPS = {
    "and": "and", "or": "or",
    "not": lambda x: f"not ({x})",
    "in": lambda f, xs: f"{f} in ({', '.join(xs)},)",
    "prefix": lambda f, s: f"{f}.startswith({s})",
    "suffix": lambda f, s: f"{f}.endswith({s})",
    "contains": lambda f, s: f"{s} in {f}",
    "regex": lambda f, s: f"matches({f}, {s})",
}


def _cel_path(path: tuple[str, ...]) -> str:
    return "event" + "".join(f".{k}" if _IDENT.match(k) else f'["{k}"]' for k in path)


def _sub_path(path: tuple[str, ...]) -> str:
    return path[0] + "".join(f"['{k}']" for k in path[1:])


def to_cel(p: Pred) -> str:
    """CEL text of a condition, over the variable `event`."""
    return _render(p, _cel_path, _cel_lit, _CEL_OPS)


def to_rule_engine(p: Pred) -> str:
    """rule-engine text of a condition; the event's top-level keys are its symbols."""
    return _render(p, _sub_path, _cel_lit, _RULE_ENGINE_OPS)


def to_simpleeval(p: Pred) -> str:
    """Python-syntax text for simpleeval; the event's top-level keys are its names."""
    return _render(p, _sub_path, _py_lit, _SIMPLEEVAL_OPS)


def to_policy_dict(spec: PolicySpec) -> dict:
    """The activelabel policy document (DESIGN.md §2) as plain data."""
    labels: dict[str, dict] = {}
    for lab in spec.labels:
        d: dict[str, Any] = {"type": "enum", "values": list(lab.values)}
        if lab.default is not None:
            d["default"] = lab.default
        d["resolve"] = "first_match"
        labels[lab.name] = d
    return {
        "apiVersion": "activelabel/v1",
        "kind": "Policy",
        "metadata": {"name": spec.name, "version": "1", "owner": "bench"},
        "labels": labels,
        "rules": [{"id": r.id, "label": r.label, "value": r.value, "when": to_cel(r.when)} for r in spec.rules],
    }


class _PolicyDumper(yaml.SafeDumper):
    """Block style, except lists of scalars (enum values) on one line."""


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    flow = all(not isinstance(x, (list, dict)) for x in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_PolicyDumper.add_representer(list, _represent_list)


def to_yaml(spec: PolicySpec) -> str:
    """The activelabel policy file text."""
    return yaml.dump(to_policy_dict(spec), Dumper=_PolicyDumper, sort_keys=False, width=200,
                     allow_unicode=True, default_flow_style=False)


def write_policy(spec: PolicySpec, directory: Path) -> Path:
    """Write `<directory>/<spec.name>.yaml` and return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{spec.name}.yaml"
    path.write_text(to_yaml(spec))
    return path


if __name__ == "__main__":
    import sys

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    print(to_yaml(policy_spec(n)))
