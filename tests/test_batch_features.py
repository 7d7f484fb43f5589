"""The columnar batch path decides every policy feature exactly as the per-event path does, counters included."""

from __future__ import annotations

import itertools
from collections import OrderedDict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from activelabel import Labeler, load_policy
from activelabel.engine import labeler as labeler_module
from activelabel.errors import PolicyError

NOW = datetime(2026, 1, 2, 12, 0, tzinfo=UTC)

# ---- generated policies: every feature, over fields that are often absent or of another type ----

_FIELDS = ["event.s", "event.n", "event.f", "event.flag", "event.obj.x", "event.obj.name", "event.nope",
           'event["s"]', "event.obj.nope.deeper", "org.tier", "org.nope", "org.size_n", "org.vip", "net.zone"]
_LITS = ["0", "3", "500", "0.5", "-0.0", '"a"', '"ab"', '""', "true", "false", "null", '"gold"',
         "9007199254740993", "1u", '"é"']
_PATTERNS = ["^a", "b$", "(?i)A", "[a-c]+", "\\\\d", "\\\\bab\\\\b", "x{2}", "a{,2}", "^é", "[^0-9]",
             "a\\\\sb", "[\\\\d/]+", "\\\\\\\\d", "\\\\Wb"]
_OTHER = [
    "size(event.s) > 1", "event.n + 1 > 3", "event.n * 3 == 9", "event.f / 0.0 > 1.0", "-event.n < 0",
    'event.s + "x" == "ax"', "int(event.f) == 3", 'string(event.n) == "3"', "[1, 2].exists(x, x == event.n)",
    'event.tags.exists(t, t == "a")', '(event.n > 1 ? event.flag : event.s == "a")', "timestamp(event.ts) > now",
    'now - timestamp(event.ts) > duration("1h")', "event.tags[0] == 1", "event.obj.x % 2 == 1", "size(event.tags) > 0",
    'event.s.split("/")[0] == "a"', "event.s == event.obj.name", "event.n < event.f", "event.obj == {}",
    "event.n / 2 >= 1", "event.f - 1.0 < event.n",
    "event.items.exists(i, has(i.x) && i.x > 1)", 'event.items.all(i, i.name.startsWith("a"))',
    "event.items.exists_one(i, i.x == event.n)", 'event.obj.exists(k, k == "x")', "event.tags.all(t, t != labels.l0)",
    "size(event.items) == 2 && event.items[1].x == 2", "event.items.exists(i, i.x == 1) || event.tags.exists(t, t == 1)",
]


def _label_reads(earlier: list[str]) -> list[str]:
    reads = {
        "l0": ['labels.l0 == "v0"', 'labels.l0 in ["v0", "v2"]', "has(labels.l0)"],
        "band": ['labels.band == "<0.5"', 'labels.band != ">=100"'],
        "s0": ['labels.s0.startsWith("a")', 'labels.s0 == "__other__"', "has(labels.s0)"],
        "l1": ['labels.l1 != "v1"'],
        "f0": ["labels.f0 > 1.0", "labels.f0 == 3"],
        "i0": ["labels.i0 >= 3"],
        "b0": ["labels.b0", "!labels.b0"],
    }
    out = [r for name in earlier for r in reads.get(name, [])]
    return [*out, "labels.zz == 1"]  # a label that does not exist: absent on every event


@st.composite
def _leaf(draw: Any, earlier: list[str]) -> str:
    kind = draw(st.sampled_from(["cmp", "cmp", "cmp2", "in", "str", "has", "bare", "label", "label", "other", "other"]))
    path = draw(st.sampled_from(_FIELDS))
    if kind == "cmp":
        op = draw(st.sampled_from(["==", "!=", "<", "<=", ">", ">="]))
        lit = draw(st.sampled_from(_LITS))
        return f"{path} {op} {lit}" if draw(st.booleans()) else f"{lit} {op} {path}"
    if kind == "cmp2":
        return f"{path} {draw(st.sampled_from(['==', '!=', '<', '>=']))} {draw(st.sampled_from(_FIELDS))}"
    if kind == "in":
        return f"{path} in [{', '.join(draw(st.lists(st.sampled_from(_LITS), max_size=4)))}]"
    if kind == "str":
        fn = draw(st.sampled_from(["startsWith", "endsWith", "contains", "matches"]))
        arg = draw(st.sampled_from(_PATTERNS)) if fn == "matches" else draw(st.sampled_from(["a", "/", "", "é"]))
        return f'{path}.{fn}("{arg}")'
    if kind == "has":
        return f"has({path})" if "[" not in path else "has(event.obj)"
    if kind == "bare":
        return draw(st.sampled_from(["event.flag", "event.s", "org.vip", "true"]))
    if kind == "label":
        return draw(st.sampled_from(_label_reads(earlier)))
    return draw(st.sampled_from(_OTHER))


@st.composite
def _cond(draw: Any, depth: int, earlier: list[str]) -> str:
    if depth == 0 or draw(st.integers(0, 2)) == 0:
        return draw(_leaf(earlier))
    op = draw(st.sampled_from(["&&", "||", "!", "?:"]))
    if op == "!":
        return f"!({draw(_cond(depth - 1, earlier))})"
    if op == "?:":
        return (f"({draw(_cond(depth - 1, earlier))}) ? ({draw(_cond(depth - 1, earlier))}) : "
                f"({draw(_cond(depth - 1, earlier))})")
    return f"({draw(_cond(depth - 1, earlier))}) {op} ({draw(_cond(depth - 1, earlier))})"


_VALUE_EXPRS = {
    "enum": ["org.tier", '"v" + string(event.n)', "event.s", '(event.flag ? "v0" : "v1")'],
    "string": ['event.s + "-" + string(event.n)', "org.tier", "event.obj.name", "event.n", "net.zone",
               'event.s.split("/")[0]', "labels.l0"],
    "float": ["event.f", "event.n", "double(event.n) * 0.5", "event.f * 2.0 + 1.0", "org.size_n", "labels.f0"],
    "int": ["event.n * 10 + (event.flag ? 1 : 0)", "event.n / 2", "size(event.s)", "org.size_n", "event.n - 1"],
    "bool": ["event.flag", "has(org.tier)", "event.n > 3"],
}
_BUCKET_FROM = ["event.f", "event.n", "org.size_n", "event.obj.x", "event.f * 2.0", "labels.f0", "event.s"]


@st.composite
def feature_policies(draw: Any) -> str:
    resolves = st.sampled_from(["first_match", "max_confidence", "vote"])
    labels: dict[str, dict[str, Any]] = {
        "l0": {"type": "enum", "values": ["v0", "v1", "v2", "gold"], "resolve": draw(resolves)},
        "band": {"type": "bucket", "from": draw(st.sampled_from(_BUCKET_FROM)), "bounds": [0.5, 100]},
        "s0": {"type": "string", "max_cardinality": draw(st.sampled_from([2, 3, 1000])), "overflow": "__other__"},
        "l1": {"type": "enum", "values": ["v0", "v1", "v2", "gold"], "resolve": draw(resolves)},
        "f0": {"type": "float", "resolve": draw(st.sampled_from(["first_match", "max_confidence"]))},
        "i0": {"type": "int"},
        "b0": {"type": "bool"},
    }
    if draw(st.booleans()):
        labels["s0"]["window"] = draw(st.sampled_from([2, 5]))
    for name in ("l0", "l1", "band", "b0"):
        if draw(st.booleans()):
            labels[name]["default"] = {"band": "<0.5", "b0": False}.get(name, "v2")
    rules: list[dict[str, Any]] = []
    earlier: list[str] = []
    for name, spec in labels.items():
        if spec["type"] != "bucket":
            kind = spec["type"]
            for ri in range(draw(st.integers(0, 4))):
                rule: dict[str, Any] = {"id": f"{name}-r{ri}", "label": name}
                constant = kind in ("enum", "bool") and draw(st.integers(0, 2)) > 0
                if constant:
                    rule["value"] = draw(st.sampled_from(["v0", "v1", "v2"])) if kind == "enum" else draw(st.booleans())
                else:
                    rule["value_expr"] = draw(st.sampled_from(_VALUE_EXPRS[kind]))
                if draw(st.integers(0, 5)):
                    rule["when"] = draw(_cond(2, earlier))
                rule["confidence"] = draw(st.sampled_from([0.2, 0.5, 0.5, 0.9]))
                rules.append(rule)
        earlier.append(name)
    doc = {"apiVersion": "activelabel/v1", "kind": "Policy", "metadata": {"name": "features"},
           "labels": labels, "rules": rules,
           "enrichers": [{"name": "org", "type": "lookup", "file": "orgs.csv", "key": "event.tenant"},
                         {"name": "net", "type": "cidr", "file": "nets.csv", "key": "event.ip"}]}
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


# ---- generated events ---------------------------------------------------------------------

_ANY = st.one_of(st.none(), st.booleans(), st.integers(-3, 600), st.sampled_from([2**53 + 1, 2**63, -(2**70)]),
                 st.sampled_from([0.5, 3.0, 1e300, -0.0, float("nan"), float("inf")]),
                 st.sampled_from(["a", "ab", "", "gold", "xa", "é", "a/b", "ΣΑ"]),
                 st.lists(st.integers(0, 2), max_size=2), st.dictionaries(st.sampled_from(["x"]), st.integers(0, 2)))


def _typed(value: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Usually a value of the field's type; sometimes anything else."""
    return st.one_of(value, value, value, _ANY)


_OBJ = st.fixed_dictionaries({}, optional={"x": _typed(st.integers(0, 3)), "name": _typed(st.sampled_from(["a", "q"]))})

feature_events = st.fixed_dictionaries({}, optional={
    "tenant": st.sampled_from(["acme", "b", "zz", "", "nope", 7, None]),  # zz, nope, "", 7, None: misses
    "ip": st.sampled_from(["10.1.2.3", "10.9.0.1", "8.8.8.8", "x", ""]),
    "s": _typed(st.sampled_from(["a", "ab", "", "ba", "a/b", "é", "a\x0bb", "a b", "\\d", "1/2", "éb"])),
    "n": _typed(st.integers(-3, 600)),
    "f": _typed(st.sampled_from([0.25, 3.0, 700.5, -1.5])),
    "flag": _typed(st.booleans()),
    "obj": st.one_of(_OBJ, _OBJ, st.none(), st.just("str"), _OBJ.map(OrderedDict)),
    "ts": st.one_of(st.sampled_from(["2026-01-02T11:30:00Z", "2025-12-01T00:00:00Z", "2027-01-01T00:00:00+02:00",
                                     "not a time", "2026-01-02"]), st.integers(0, 2)),
    "tags": st.one_of(st.lists(st.sampled_from(["a", 1, "b"]), max_size=3), st.just("a")),
    "items": st.one_of(st.lists(_OBJ, max_size=3), st.lists(_ANY, max_size=2), st.none()),
})


# ---- the comparison -----------------------------------------------------------------------------


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal dicts whose values are of the same classes (1 is not True, 1.0 is not 1), NaN equal to NaN."""
    if list(a) != list(b):
        return False
    for k in a:
        x, y = a[k], b[k]
        if x.__class__ is not y.__class__ or (x != y and not (x != x and y != y)):
            return False
    return True


def _labeler(policy: Any) -> Labeler:
    ticks = itertools.count()
    return Labeler(policy, clock=lambda: float(next(ticks)), now=lambda: NOW)


_STATS = ("rule_hits", "rule_errors", "rule_absent", "label_set", "conflicts", "overflow", "distinct")


def assert_batch_equals_per_event(policy: Any, batches: list[list[dict[str, Any]]]) -> Labeler:
    """``label_batch`` (columnar) and ``label`` per event give the same decisions and counters."""
    per_event, batched = _labeler(policy), _labeler(policy)
    assert batched.columnar_plan() is not None
    want = [per_event.label(e) for b in batches for e in b]
    with mock.patch.object(labeler_module, "COLUMNAR_MIN_BATCH", 1):
        got = [d for b in batches for d in batched.label_batch(b)]
    for i, (w, g) in enumerate(zip(want, got, strict=True)):
        assert _same(w.labels, g.labels), (i, w.labels, g.labels)
        assert w.sources == g.sources, (i, w.sources, g.sources)
        assert w.confidences == g.confidences, (i, w.confidences, g.confidences)
    sw, sg = per_event.stats(), batched.stats()
    for name in _STATS:
        assert getattr(sg, name) == getattr(sw, name), name
    assert sg.events == sw.events
    return batched


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("features")
    (d / "orgs.csv").write_text("tenant,tier,vip,size_n\nacme,gold,true,40\nb,platinum,false,x\n7,v1,true,3\n")
    (d / "nets.csv").write_text("network,zone\n10.0.0.0/8,corp\n10.1.0.0/16,lab\n")
    return d


def test_every_feature_batch_equals_per_event(tables: Path) -> None:
    """Generated policies (lookups and CIDR that miss, labels read before and after they are set, max_confidence,
    vote, buckets, value_expr, guards with and without windows, now, macros) give, on generated events with
    missing fields, nulls, wrong types, NaN, big ints and dict subclasses, the per-event decisions and counters."""

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(feature_policies(), st.lists(st.lists(feature_events, min_size=1, max_size=25), min_size=1, max_size=2))
    def check(text: str, batches: list[list[dict[str, Any]]]) -> None:
        path = tables / "p.yaml"
        path.write_text(text)
        try:
            policy = load_policy(path)
        except PolicyError:
            assume(False)
            raise
        assert_batch_equals_per_event(policy, batches)

    check()


def test_guard_admits_the_first_distinct_values_in_input_order(tables: Path) -> None:
    """A guarded label admits its first N distinct values in input order across batches, then overflows."""
    text = yaml.safe_dump({
        "apiVersion": "activelabel/v1", "kind": "Policy", "metadata": {"name": "guard"},
        "labels": {"who": {"type": "string", "max_cardinality": 2, "overflow": "other"}},
        "rules": [{"id": "who", "label": "who", "value_expr": "event.s", "when": "has(event.s)"}],
    })
    path = tables / "guard.yaml"
    path.write_text(text)
    batches = [[{"s": "b"}, {"s": "a"}, {}, {"s": "b"}, {"s": "c"}], [{"s": "a"}, {"s": "d"}, {"s": "c"}]]
    batched = assert_batch_equals_per_event(load_policy(path), batches)
    stats = batched.stats()
    assert stats.overflow == {"who": 3} and stats.distinct == {"who": 2}


def test_enrichment_misses_are_absent_reads_not_failures(tables: Path) -> None:
    """A rule reading a lookup field the lookup did not find counts an absent read, on the columnar path too."""
    text = yaml.safe_dump({
        "apiVersion": "activelabel/v1", "kind": "Policy", "metadata": {"name": "miss"},
        "labels": {"tier": {"type": "enum", "values": ["gold", "other"], "default": "other"},
                   "vip": {"type": "bool", "default": False}},
        "rules": [{"id": "tier", "label": "tier", "value_expr": "org.tier", "when": "has(org.tier)"},
                  {"id": "vip", "label": "vip", "value": True, "when": 'labels.tier == "gold" && org.vip == "true"'},
                  {"id": "size", "label": "vip", "value": True, "when": "org.size_n > 10"}],
        "enrichers": [{"name": "org", "type": "lookup", "file": "orgs.csv", "key": "event.tenant"}],
    })
    path = tables / "miss.yaml"
    path.write_text(text)
    batch = [{"tenant": "acme"}, {"tenant": "nope"}, {}, {"tenant": "b"}] * 3
    batched = assert_batch_equals_per_event(load_policy(path), [batch])
    stats = batched.stats()
    assert stats.rule_errors["size"] == stats.rule_absent["size"] + 3  # "x" > 10 fails on b's rows
    assert stats.label_set == {"tier": 12, "vip": 12}


def test_vote_and_max_confidence_ties_resolve_as_per_event(tables: Path) -> None:
    """Equal vote totals go to the value whose rule matched first, equal confidences to the earlier rule."""
    text = yaml.safe_dump({
        "apiVersion": "activelabel/v1", "kind": "Policy", "metadata": {"name": "ties"},
        "labels": {"v": {"type": "enum", "values": ["a", "b", "c"], "resolve": "vote"},
                   "m": {"type": "enum", "values": ["a", "b"], "resolve": "max_confidence", "default": "a"}},
        "rules": [{"id": "v1", "label": "v", "value": "a", "confidence": 0.5, "when": "event.n > 1"},
                  {"id": "v2", "label": "v", "value": "b", "confidence": 0.5, "when": "event.n > 0"},
                  {"id": "v3", "label": "v", "value": "b", "confidence": 0.25, "when": "event.n > 2"},
                  {"id": "v4", "label": "v", "value": "c", "confidence": 0.25, "when": "event.n > 2"},
                  {"id": "m1", "label": "m", "value": "b", "confidence": 0.5, "when": "event.n > 1"},
                  {"id": "m2", "label": "m", "value": "a", "confidence": 0.5, "when": "event.n > 0"}],
    })
    path = tables / "ties.yaml"
    path.write_text(text)
    batch = [{"n": n} for n in (0, 1, 2, 3, 5)] + [{}, {"n": "x"}]
    batched = assert_batch_equals_per_event(load_policy(path), [batch])
    with mock.patch.object(labeler_module, "COLUMNAR_MIN_BATCH", 1):
        got = [d.labels for d in batched.label_batch([{"n": 2}, {"n": 3}])]
    assert got == [{"v": "a", "m": "b"}, {"v": "b", "m": "b"}]
    assert batched.stats().conflicts == {"v": 5, "m": 5}


@st.composite
def _rfc3339_like(draw: Any) -> str:
    """Texts near RFC 3339: valid instants, impossible dates (Feb 30, second 60, year 0), odd offsets and fractions."""
    year = draw(st.sampled_from(["0000", "0001", "1970", "2024", "2026", "9999"]))
    month = draw(st.sampled_from(["01", "02", "12", "13", "00"]))
    day = draw(st.sampled_from(["01", "28", "29", "30", "31", "32"]))
    hms = draw(st.sampled_from(["00:00:00", "23:59:59", "12:30:60", "24:00:00", "11:30:00"]))
    frac = draw(st.sampled_from(["", ".5", ".12", ".123456", ".1234567", "."]))
    zone = draw(st.sampled_from(["Z", "z", "+00:00", "-05:30", "+23:59", "+24:00", "", "+0100", "+01:00:30"]))
    sep = draw(st.sampled_from(["T", "T", "T", " ", "t"]))
    return f"{year}-{month}-{day}{sep}{hms}{frac}{zone}"


def test_timestamps_parse_and_compare_as_cel_does(tables: Path) -> None:
    """timestamp() of RFC 3339-like texts, compared with now and durations, agrees with the evaluator on every text."""
    text = yaml.safe_dump({
        "apiVersion": "activelabel/v1", "kind": "Policy", "metadata": {"name": "times"},
        "labels": {"future": {"type": "bool", "default": False}, "age": {"type": "enum", "values": ["old", "new"]},
                   "shown": {"type": "string"}, "span": {"type": "bool"}},
        "rules": [{"id": "future", "label": "future", "value": True, "when": "timestamp(event.ts) > now"},
                  {"id": "old", "label": "age", "value": "old",
                   "when": 'now - timestamp(event.ts) > duration("720h")'},
                  {"id": "new", "label": "age", "value": "new", "when": "timestamp(event.ts) + duration(\"1h\") >= now"},
                  {"id": "shown", "label": "shown", "value_expr": "string(timestamp(event.ts))"},
                  {"id": "span", "label": "span", "value": True,
                   "when": "timestamp(event.ts) - timestamp(event.other) < duration(\"-1s\")"}],
    })
    path = tables / "times.yaml"
    path.write_text(text)
    policy = load_policy(path)

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(st.fixed_dictionaries({"ts": _rfc3339_like()},
                                          optional={"other": st.one_of(_rfc3339_like(), st.integers(0, 10**12))}),
                    min_size=1, max_size=30))
    def check(batch: list[dict[str, Any]]) -> None:
        assert_batch_equals_per_event(policy, [batch])

    check()


def test_regexes_match_as_re2_matches(tables: Path) -> None:
    """Patterns with \\s, \\d, \\w, \\b, an escaped backslash, classes and (?i) match on the columnar path as RE2 does."""
    patterns = ["a\\\\sb", "a\\\\Sb", "x\\\\d", "\\\\bab\\\\b", "\\\\\\\\d", "[\\\\d,]+$", "(?i)k", "^\\\\w+$", "a\\\\Wb"]
    rules = [{"id": f"p{i}", "label": f"m{i}", "value": True, "when": f'event.s.matches("{p}")'}
             for i, p in enumerate(patterns)]
    text = yaml.safe_dump({
        "apiVersion": "activelabel/v1", "kind": "Policy", "metadata": {"name": "regex"},
        "labels": {f"m{i}": {"type": "bool", "default": False} for i in range(len(patterns))}, "rules": rules,
    }, allow_unicode=True)
    path = tables / "regex.yaml"
    path.write_text(text)
    values = ["a\x0bb", "a b", "a\tb", "x5", "x٣", "éab", "ab", "\\d", "1,2", "\u212a", "K", "ab_9", "é", "a-b", 5, None]
    batched = assert_batch_equals_per_event(load_policy(path), [[{"s": v} for v in values]])
    assert batched.stats().label_set["m0"] == len(values)  # defaults count too
