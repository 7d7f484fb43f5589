"""The generated fast path agrees with the exact CEL path on any event, including hostile ones."""

from __future__ import annotations

import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from activelabel import Labeler, load_policy
from activelabel.cel.emit import MISSING
from activelabel.errors import PolicyError
from activelabel.policy import load_policy_text

POLICY = """
apiVersion: activelabel/v1
kind: Policy
metadata: {name: diff}
labels:
  tier: {type: enum, values: [gold, silver, bronze, none], default: none}
  code: {type: enum, values: [ok, moved, missing, broken, other]}
  family: {type: enum, values: [chrome, firefox, bot, tool]}
  band: {type: bucket, from: event.ms, bounds: [10, 100.5]}
  tag: {type: string}
  score: {type: float, resolve: max_confidence}
  flag: {type: bool, default: false}
  level: {type: enum, values: [high, low], resolve: vote}
  pair: {type: enum, values: [p1, p2, p3]}
  combo: {type: enum, values: [a, b, c], default: c}
  owner: {type: string}
enrichers:
  - {name: org, type: lookup, file: orgs.csv, key: event.tenant}
rules:
  - {id: o1, label: owner, value_expr: org.team, when: 'has(org.team)'}
  - {id: o2, label: owner, value: nobody, when: 'org.size() == 0 && event.status == 200'}
  - {id: k1, label: combo, value: a, when: 'event.ms + 1 > event.status'}
  - {id: k2, label: combo, value: b, when: '!(labels.code == "ok") && event.flag'}
  - {id: k3, label: combo, value: b, when: 'labels.code == "ok"' }
  - {id: p1, label: pair, value: p1, when: 'event.tenant == "acme" && event.status == 200'}
  - {id: p2, label: pair, value: p2, when: 'event.status in [1, 404] && event.tenant == "b"'}
  - {id: p3, label: pair, value: p3, when: 'event.tenant in ["c", "d"] && event.status == 500'}
  - {id: t1, label: tier, value: gold, when: 'event.tenant == "acme"'}
  - {id: t2, label: tier, value: silver, when: 'event.tenant in ["b", "c", "acme"]'}
  - {id: t3, label: tier, value: bronze, when: '"d" == event.tenant'}
  - {id: t4, label: tier, value: gold, when: 'event.tenant == "e"'}
  - {id: t5, label: tier, value: silver, when: 'event.tenant.startsWith("x")'}
  - {id: c0, label: code, value: other, when: 'event.status == 1'}
  - {id: c1, label: code, value: ok, when: 'event.status == 200'}
  - {id: c2, label: code, value: moved, when: 'event.status in [301, 302]'}
  - {id: c3, label: code, value: missing, when: 'event.status == 404'}
  - {id: c4, label: code, value: broken, when: 'event.status == 500'}
  - {id: c5, label: code, value: other, when: 'event.status >= 0'}
  - {id: f1, label: family, value: bot, when: 'event.ua.matches("(?i)bot")'}
  - {id: f2, label: family, value: chrome, when: 'event.ua.matches("Chrome/[0-9]+")'}
  - {id: f3, label: family, value: firefox, when: 'event.ua.matches("Firefox")'}
  - {id: f4, label: family, value: tool, when: 'event.ua.matches("^curl/")'}
  - {id: g1, label: tag, value_expr: event.tenant, when: 'size(event.tenant) < 3'}
  - {id: g2, label: tag, value_expr: '"t-" + string(event.status)'}
  - {id: s1, label: score, value_expr: event.ms, when: 'event.ms > 1', confidence: 0.4}
  - {id: s2, label: score, value: 0.5, when: 'event.flag || event.ms > 50', confidence: 0.6}
  - {id: b1, label: flag, value: true, when: event.flag}
  - {id: l1, label: level, value: high, when: 'labels.code == "broken"', confidence: 0.5}
  - {id: l2, label: level, value: low, when: 'labels.tier == "gold"', confidence: 0.3}
  - {id: l3, label: level, value: low, when: 'has(labels.tag)', confidence: 0.3}
"""

SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 600), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["acme", "b", "c", "d", "e", "x1", "", "Chrome/12", "curl/8", "GoogleBot", "Firefox"]),
)
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=2), st.dictionaries(st.sampled_from(["a", "b"]), SCALARS, max_size=2))
EVENTS = st.fixed_dictionaries({}, optional={k: VALUES for k in ("tenant", "status", "ua", "ms", "flag")})


def _labeler(tmp_path_factory) -> Labeler:
    directory = tmp_path_factory.mktemp("diff")
    (directory / "orgs.csv").write_text("tenant,team\nacme,payments\nb,search\n")
    path = directory / "p.yaml"
    path.write_text(POLICY)
    return Labeler(load_policy(path))


def test_fast_path_equals_exact_path_on_generated_events(tmp_path_factory):
    """On generated events (missing fields, wrong types, NaN, bools as ints) the fast path gives the exact labels."""
    labeler = _labeler(tmp_path_factory)

    @settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
    @given(EVENTS)
    def check(event):
        fast = labeler.label(event).labels
        exact = labeler.label_exact(event)
        assert _same(fast, exact), (event, fast, exact)

    check()


def test_rule_runs_on_one_field_are_folded_into_lookups(tmp_path_factory):
    """Runs of equality and regex rules on one field compile to one lookup each (rule indexing)."""
    src = _labeler(tmp_path_factory).generated_source
    assert "_D" in src and ".get(" in src  # tier and code runs
    assert "_RS" in src  # the family regex run
    assert src.count(".get((") >= 1  # the pair run: one lookup on (status, tenant)


def _same(a: dict, b: dict) -> bool:
    if a.keys() != b.keys():
        return False
    for k in a:
        x, y = a[k], b[k]
        if x.__class__ is not y.__class__:
            return False
        if x != y and not (x != x and y != y):
            return False
    return True


# ---- generated policies using every per-event feature --------------------------------

_FIELDS = ["event.s", "event.n", "event.f", "event.flag", "event.obj.x", "event.obj.name", "event.nope",
           'event["s"]', 'event.obj["x"]', "event.obj.nope.deeper", "org.tier", "org.nope"]
_LITS = ["0", "3", "500", "0.5", '"a"', '"ab"', '""', "true", "false", "null", '"gold"']
_LABEL_READS = ['labels.l0 == "v0"', 'labels.l1 != "v1"', 'has(labels.l0)', 'labels.l0 in ["v0", "v2"]',
                "labels.b0 > 1.0", 'labels.s0.startsWith("a")',
                # labels that may have a default (always set): read without an absent test
                "labels.k0", "!labels.k0 || event.flag", "labels.k0 == (event.n > 3)", "labels.l0 >= \"v1\""]
_L1_READS = ['labels.l1 == "v2"', 'labels.l1 + "x" == "v2x"', '(labels.l1 == "v0") && event.n > 3']  # f0's rules only


@st.composite
def _leaf(draw, depth_labels: list[str]) -> str:
    kind = draw(st.sampled_from(["cmp", "cmp", "in", "str", "has", "bare", "label", "other"]))
    path = draw(st.sampled_from(_FIELDS))
    lit = draw(st.sampled_from(_LITS))
    if kind == "cmp":
        op = draw(st.sampled_from(["==", "!=", "<", ">="]))
        return f"{path} {op} {lit}"
    if kind == "in":
        return f"{path} in [{', '.join(draw(st.lists(st.sampled_from(_LITS), max_size=3)))}]"
    if kind == "str":
        return f'{path}.{draw(st.sampled_from(["startsWith", "contains", "matches"]))}("a")'
    if kind == "has":
        return f"has({path})" if "[" not in path else "has(event.obj)"
    if kind == "bare":
        return draw(st.sampled_from(["event.flag", "event.s", "org.vip"]))
    if kind == "label" and depth_labels:
        return draw(st.sampled_from(depth_labels))
    return draw(st.sampled_from(["size(event.s) > 1", "event.n + 1 > 3", "event.n * 3 - 7 >= event.obj.x", "event.s == org.tier",
                                 "[1, 2].exists(x, x == event.n)", 'event.obj.exists(k, k == "x")', "(event.n > 1 ? event.flag : event.s == \"a\")"]))


@st.composite
def _cond(draw, depth: int, labels_ok: list[str]) -> str:
    if depth == 0 or draw(st.integers(0, 2)) == 0:
        return draw(_leaf(labels_ok))
    op = draw(st.sampled_from(["&&", "||", "!", "?:"]))
    if op == "!":
        return f"!({draw(_cond(depth - 1, labels_ok))})"
    if op == "?:":
        return (f"({draw(_cond(depth - 1, labels_ok))}) ? ({draw(_cond(depth - 1, labels_ok))}) : "
                f"({draw(_cond(depth - 1, labels_ok))})")
    return f"({draw(_cond(depth - 1, labels_ok))}) {op} ({draw(_cond(depth - 1, labels_ok))})"


_VALUE_EXPRS = {
    "enum": ['org.tier', '"v" + string(event.n)', "event.s", '(size(event.s) > 1 ? event.s : org.tier)'],
    "string": ['event.s + "-" + string(event.n)', "org.tier", 'event.obj.name + "/" + event.s', "event.n",
               'event.s + "-"', '(event.flag ? event.s : event.obj.name) + string(size(event.obj))'],
    "float": ["event.f", "event.n", "double(event.n) * 0.5", "event.f * 0.5 + 1.0", "event.n * 2 - event.obj.x",
              "org.size_n * 1.5", "event.n * 40000000000 * 300000000",
              '(event.s == "a" ? event.f : 2.5) * 2.0 + (event.flag ? event.n : 1.0)'],
}


@st.composite
def _feature_policies(draw) -> str:
    labels: dict[str, dict] = {
        "l0": {"type": "enum", "values": ["v0", "v1", "v2", "gold"], "resolve": draw(st.sampled_from(["first_match", "max_confidence", "vote"]))},
        "b0": {"type": "bucket", "from": draw(st.sampled_from(["event.f", "event.n", "org.size_n", "event.obj.x"])),
               "bounds": [0.5, 100]},
        "k0": {"type": "bool", "default": False},
        "s0": {"type": "string", "max_cardinality": 1000, "overflow": "__other__"},
        "l1": {"type": "enum", "values": ["v0", "v1", "v2", "gold"],
               "resolve": draw(st.sampled_from(["first_match", "max_confidence", "vote"]))},
        "f0": {"type": "float", "resolve": draw(st.sampled_from(["first_match", "max_confidence"]))},
    }
    if draw(st.booleans()):
        labels["l1"]["default"] = "v2"
    if draw(st.booleans()):
        labels["l0"]["default"] = "v1"
    if draw(st.booleans()):
        del labels["k0"]["default"]
    rules: list[dict] = []
    for name, spec in labels.items():
        if spec["type"] == "bucket":
            continue
        later = {"l1": _LABEL_READS, "f0": _LABEL_READS + _L1_READS}.get(name, [])  # labels decided before it
        for ri in range(draw(st.integers(0, 4))):
            rule: dict = {"id": f"{name}-r{ri}", "label": name}
            kind = spec["type"]
            if kind == "bool":
                rule["value"] = draw(st.booleans())
            elif kind != "enum" or draw(st.integers(0, 3)) == 0:
                rule["value_expr"] = draw(st.sampled_from(_VALUE_EXPRS["enum" if kind == "enum" else kind]))
            else:
                rule["value"] = draw(st.sampled_from(["v0", "v1", "v2"]))
            if kind == "float" and "value_expr" not in rule:
                rule["value_expr"] = "event.f"
            if draw(st.integers(0, 5)):
                rule["when"] = draw(_cond(2, later))
            rule["confidence"] = draw(st.sampled_from([0.2, 0.5, 0.5, 0.9]))
            rules.append(rule)
    doc = {"apiVersion": "activelabel/v1", "kind": "Policy", "metadata": {"name": "features"},
           "labels": labels, "rules": rules,
           "enrichers": [{"name": "org", "type": "lookup", "file": "orgs.csv", "key": "event.tenant"}]}
    return yaml.safe_dump(doc, sort_keys=False)


_ANY_VALUE = st.one_of(st.none(), st.booleans(), st.integers(-3, 600), st.sampled_from([0.5, 3.0, 1e300, -0.0]),
                       st.sampled_from(["a", "ab", "", "gold", "xa"]), st.lists(st.integers(0, 2), max_size=2))


def _typed(value: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(value, value, value, _ANY_VALUE)


_FEATURE_EVENTS = st.fixed_dictionaries({}, optional={
    "tenant": st.sampled_from(["acme", "b", "zz", "", "nope"]),  # "zz", "nope", "": enrichment misses
    "s": _typed(st.sampled_from(["a", "ab", "", "ba"])),
    "n": _typed(st.integers(-3, 600)),
    "f": _typed(st.sampled_from([0.25, 3.0, 700.5])),
    "flag": _typed(st.booleans()),
    "obj": st.one_of(st.fixed_dictionaries({}, optional={"x": _typed(st.integers(0, 3)),
                                                         "name": _typed(st.sampled_from(["a", "q"]))}),
                     st.none(), st.just("str")),
})


def _expected_counts(labeler: Labeler, events: list[dict]) -> tuple[dict[str, int], dict[str, int]]:
    """(errors, absent) per source, counted by the exact path over the same events."""
    from activelabel.engine.exact import decide_label, failure, is_absent_error

    compiled = labeler.compiled
    plan = compiled.plan
    table = plan.source_table
    errors: dict[str, int] = {}
    absent: dict[str, int] = {}

    def count(idx: int, msg: str) -> None:
        src = table[idx][0].removeprefix("rule:")
        errors[src] = errors.get(src, 0) + 1
        if is_absent_error(msg):
            absent[src] = absent.get(src, 0) + 1

    for event in events:
        for ep in plan.enrichers:
            try:
                ep.key_prog.evaluate({"event": event, "labels": {}})
            except Exception as exc:  # noqa: BLE001 - a key CEL cannot compute is counted as the key's error
                count(ep.source_idx, failure(str(exc), ep.key_prog, {"event": event}))
        bindings = compiled.base_bindings(event)
        for lp in plan.labels:
            outcome = decide_label(plan, lp, bindings, every_rule=False)
            for idx, msg in outcome.errors:
                count(idx, msg)
            if outcome.value is not MISSING:
                bindings["labels"][lp.spec.name] = outcome.value
    return errors, absent


def test_every_feature_fast_path_equals_exact_path(tmp_path_factory):
    """Generated policies with lookups that miss, labels read before they are set, max_confidence, vote, buckets,
    value_expr and a guard give the exact labels, and the same error and absent-read counts, on hostile events."""
    directory = tmp_path_factory.mktemp("features")
    (directory / "orgs.csv").write_text("tenant,tier,vip,size_n\nacme,gold,true,40\nb,silver,false,x\n")

    @settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
    @given(_feature_policies(), st.lists(_FEATURE_EVENTS, min_size=1, max_size=12))
    def check(text, events):
        path = directory / "p.yaml"
        path.write_text(text)
        try:
            policy = load_policy(path)
        except PolicyError:
            assume(False)
        labeler = Labeler(policy)
        for event in events:
            fast = labeler.label(event).labels
            exact = labeler.label_exact(event)
            assert _same(fast, exact), (text, event, fast, exact)
        errors, absent = _expected_counts(Labeler(policy), events)
        stats = labeler.stats()
        assert {k: v for k, v in stats.rule_errors.items() if v} == errors, text
        assert {k: v for k, v in stats.rule_absent.items() if v} == absent, text

    check()


_PREFIXES = ["/api/", "/api/v1/", "/api/v1/users", "/", "", "/static", "/api/v2/"]


@st.composite
def _route_policies(draw) -> str:
    rules = []
    for ri in range(draw(st.integers(3, 9))):
        prefix = draw(st.sampled_from(_PREFIXES))
        when = f'event.path.startsWith("{prefix}")'
        if draw(st.booleans()):
            method = f'event.method == "{draw(st.sampled_from(["GET", "POST"]))}"'
            when = f"{when} && {method}" if draw(st.booleans()) else f"{method} && {when}"
        rules.append({"id": f"r{ri}", "label": "owner", "value": draw(st.sampled_from(["t0", "t1", "t2"])), "when": when})
    doc = {"apiVersion": "activelabel/v1", "kind": "Policy", "metadata": {"name": "routes"},
           "labels": {"owner": {"type": "enum", "values": ["t0", "t1", "t2"]}}, "rules": rules}
    return yaml.safe_dump(doc, sort_keys=False)


_ROUTE_EVENTS = st.fixed_dictionaries({}, optional={
    "path": st.one_of(st.sampled_from(["/api/v1/users/7", "/api/v2/x", "/", "", "/static/a.css", "/apix"]),
                      st.none(), st.integers(0, 2)),
    "method": st.one_of(st.sampled_from(["GET", "POST", "PUT"]), st.none(), st.booleans()),
})


def test_prefix_routes_fold_into_one_table_and_stay_exact():
    """Runs of `path.startsWith(..)` rules, refined by a method, give the exact labels and counts on any event."""

    @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
    @given(_route_policies(), st.lists(_ROUTE_EVENTS, min_size=1, max_size=10))
    def check(text, events):
        policy = load_policy_text(text)
        labeler = Labeler(policy)
        for event in events:
            assert labeler.label(event).labels == labeler.label_exact(event), (text, event)
        errors, absent = _expected_counts(Labeler(policy), events)
        stats = labeler.stats()
        assert {k: v for k, v in stats.rule_errors.items() if v} == errors, text
        assert {k: v for k, v in stats.rule_absent.items() if v} == absent, text

    check()
    three = yaml.safe_dump({"apiVersion": "activelabel/v1", "kind": "Policy", "metadata": {"name": "r"},
                            "labels": {"owner": {"type": "enum", "values": ["a"]}},
                            "rules": [{"id": f"r{i}", "label": "owner", "value": "a",
                                       "when": f'event.path.startsWith("/{i}")'} for i in range(3)]})
    assert "prefix table" in Labeler(load_policy_text(three)).generated_source
