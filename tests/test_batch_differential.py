"""The columnar batch path labels every event exactly as the per-event path does."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from activelabel import Labeler
from activelabel.engine.batch import ColumnarPlan
from activelabel.errors import PolicyError
from activelabel.policy import load_policy_text

# ---- generated events: mostly well-typed, with missing fields, nulls and wrong types ----

_STRINGS = st.text(alphabet="ab/.xZ1 ", max_size=5)
_INTS = st.one_of(st.integers(-3, 600), st.sampled_from([2**53 + 1, 2**63 - 1, -(2**63)]))
_FEW_FLOATS = st.sampled_from([0.5, 3.0, -0.0, 500.0, 1e300, float("inf")])
_FLOATS = st.one_of(_FEW_FLOATS, _FEW_FLOATS, _FEW_FLOATS, st.floats(allow_nan=False), st.floats())  # NaN: rare
_ANY = st.one_of(st.none(), st.booleans(), _INTS, _FLOATS, _STRINGS, st.lists(st.integers(0, 3), max_size=2),
                 st.dictionaries(st.sampled_from(["x", "name"]), st.integers(0, 3), max_size=2))
_MISSING = object()


def _field(typed: st.SearchStrategy) -> st.SearchStrategy:
    """Usually a value of the column's type; sometimes missing, null or of another type."""
    return st.one_of(typed, typed, typed, typed, typed, st.just(_MISSING), st.none(), _ANY)


@st.composite
def events(draw: Any) -> dict:
    raw = {
        "s": draw(_field(_STRINGS)),
        "n": draw(_field(_INTS)),
        "f": draw(_field(_FLOATS)),
        "flag": draw(_field(st.booleans())),
    }
    obj = draw(st.one_of(
        st.fixed_dictionaries({"x": _field(_INTS), "name": _field(_STRINGS)}),
        st.just(_MISSING), st.none(), _STRINGS,
    ))
    if isinstance(obj, dict):
        obj = {k: v for k, v in obj.items() if v is not _MISSING}
        if draw(st.integers(0, 19)) == 0:
            obj = OrderedDict(obj)  # a dict subclass: the per-event path must take the row
    raw["obj"] = obj
    return {k: v for k, v in raw.items() if v is not _MISSING}


# ---- generated policies: conditions over those fields, translatable or not ----

_PATHS = ["event.s", "event.n", "event.f", "event.flag", "event.obj.x", "event.obj.name", "event.nope",
          'event["s"]', "event.obj.nope.deeper"]
_HAS = ["event.s", "event.obj", "event.obj.x", "event.obj.name", "event.nope", "event.obj.nope.deeper"]
_LITERALS = ["0", "3", "500", "-1", "0.5", "3.0", "-0.0", '"a"', '"ab"', '"/x"', '""', "true", "false", "null", "1u"]
_PATTERNS = ["^a", "b$", "a|b", "(?i)A", "[a-c]+", "x{2}", "a{,2}", "a{1,}", ".", "\\\\d", "^/x[.]", "(a)(b)?"]
_UNTRANSLATABLE = ["size(event.s) > 1", "event.n + 1 > 3", "event.s == event.obj.name", "int(event.f) == 3",
                   "event.s.size() == 0", "event.n % 2 == 0"]


@st.composite
def leaf(draw: Any) -> str:
    kind = draw(st.sampled_from(["cmp", "cmp", "in", "str", "has", "bare", "const", "other"]))
    path = draw(st.sampled_from(_PATHS))
    lit = draw(st.sampled_from(_LITERALS))
    if kind == "cmp":
        op = draw(st.sampled_from(["==", "!=", "<", "<=", ">", ">="]))
        return f"{lit} {op} {path}" if draw(st.booleans()) else f"{path} {op} {lit}"
    if kind == "in":
        items = draw(st.lists(st.sampled_from(_LITERALS), min_size=0, max_size=4))
        return f"{path} in [{', '.join(items)}]"
    if kind == "str":
        fn = draw(st.sampled_from(["startsWith", "endsWith", "contains", "matches"]))
        arg = f'"{draw(st.sampled_from(_PATTERNS))}"' if fn == "matches" else draw(st.sampled_from(['"a"', '"/"', '""', '"Z1"']))
        return f"matches({path}, {arg})" if fn == "matches" and draw(st.booleans()) else f"{path}.{fn}({arg})"
    if kind == "has":
        return f"has({draw(st.sampled_from(_HAS))})"
    if kind == "bare":
        return draw(st.sampled_from(["event.flag", "event.s", "event.obj.x"]))
    if kind == "const":
        return draw(st.sampled_from(["true", "false"]))
    return draw(st.sampled_from(_UNTRANSLATABLE))


@st.composite
def condition(draw: Any, depth: int = 2) -> str:
    if depth == 0 or draw(st.integers(0, 2)) == 0:
        return draw(leaf())
    op = draw(st.sampled_from(["&&", "||", "!"]))
    if op == "!":
        return f"!({draw(condition(depth - 1))})"
    return f"({draw(condition(depth - 1))}) {op} ({draw(condition(depth - 1))})"


@st.composite
def policies(draw: Any) -> str:
    labels: dict[str, dict] = {}
    rules: list[dict] = []
    for li in range(draw(st.integers(0, 3))):
        name = f"l{li}"
        spec: dict[str, Any] = {"type": "enum", "values": ["v0", "v1", "v2"]}
        if draw(st.booleans()):
            spec["default"] = "v2"
        labels[name] = spec
        if draw(st.integers(0, 3)) == 0:
            # A taxonomy-style label: every rule tests one field against constants (one lookup).
            path = draw(st.sampled_from(_PATHS))
            for ri in range(draw(st.integers(4, 7))):
                lits = draw(st.lists(st.sampled_from(_LITERALS), min_size=1, max_size=3))
                when = f"{path} == {lits[0]}" if len(lits) == 1 else f"{path} in [{', '.join(lits)}]"
                rules.append({"id": f"{name}-r{ri}", "label": name, "value": draw(st.sampled_from(["v0", "v1", "v2"])),
                              "when": when})
            continue
        for ri in range(draw(st.integers(0, 5))):
            rule: dict[str, Any] = {"id": f"{name}-r{ri}", "label": name, "value": draw(st.sampled_from(["v0", "v1", "v2"]))}
            if draw(st.integers(0, 9)):
                rule["when"] = draw(condition())
            rules.append(rule)
    doc = {"apiVersion": "activelabel/v1", "kind": "Policy", "metadata": {"name": "diff"},
           "labels": labels, "rules": rules}
    return yaml.safe_dump(doc, sort_keys=False)


def _compile(text: str) -> Labeler:
    try:
        return Labeler(load_policy_text(text))
    except PolicyError:
        assume(False)
        raise


def _per_event(labeler: Labeler, batch: list[dict]) -> tuple[list[tuple[dict, dict]], dict, dict, dict]:
    decisions = [labeler.label(e) for e in batch]
    stats = labeler.stats()
    return [(d.labels, d.sources) for d in decisions], stats.rule_hits, stats.rule_errors, stats.rule_absent


def _columnar(labeler: Labeler, batch: list[dict]) -> tuple[list[tuple[dict, dict]], dict, dict, dict]:
    plan = ColumnarPlan.build(labeler.compiled.plan)
    assert plan is not None
    table = labeler.compiled.plan.source_table
    got: list[tuple[dict, dict]] = []
    counts: dict[str, dict[int, int]] = {"hits": {}, "errors": {}, "absent": {}}
    # Two batches through one plan: what it keeps between batches carries over.
    half = len(batch) // 2
    for part in (batch[:half], batch[half:]):
        result = plan.run(part, labeler.compiled.fn)
        got += [(labels, {k: table[v][0] for k, v in why.items()}) for labels, why in zip(result.labels, result.why)]
        for kind in counts:
            for idx, n in getattr(result, kind).items():
                counts[kind][idx] = counts[kind].get(idx, 0) + n
    # Rows the per-event path took counted on the labeler; columnar rows are in the results.
    stats = labeler.stats()
    out = [dict(stats.rule_hits), dict(stats.rule_errors), dict(stats.rule_absent)]
    for target, kind in zip(out, counts):
        for idx, n in counts[kind].items():
            src = table[idx][0]
            if src.startswith("rule:"):
                target[src[5:]] = target.get(src[5:], 0) + n
    return got, out[0], out[1], out[2]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(policy=policies(), batch=st.lists(events(), min_size=1, max_size=40))
def test_columnar_batch_equals_per_event(policy: str, batch: list[dict]) -> None:
    """Labels, their sources, rule hits, rule errors and their absent-read part are the same on both paths."""
    expected = _per_event(_compile(policy), batch)
    got = _columnar(_compile(policy), batch)
    assert got[0] == expected[0]
    assert got[1] == expected[1]
    assert got[2] == expected[2]
    assert got[3] == expected[3]


def test_bench_policy_columnar_equals_per_event() -> None:
    """The 40-rule benchmark policy over generated HTTP events agrees row for row, without per-event rows."""
    from bench.events import generate_events
    from bench.policies import policy_spec, to_yaml

    labeler = Labeler(load_policy_text(to_yaml(policy_spec(40))))
    batch = generate_events(3000, seed=17)
    plan = ColumnarPlan.build(labeler.compiled.plan)
    assert plan is not None
    result = plan.run(batch, labeler.compiled.fn)
    assert result.per_event_rows == 0
    reference = Labeler(load_policy_text(to_yaml(policy_spec(40))))
    assert result.labels == [reference.label(e).labels for e in batch]


def test_labels_reading_labels_are_columnar() -> None:
    """A policy whose labels read other labels gets a columnar plan, and the later label sees the earlier one."""
    text = yaml.safe_dump({
        "apiVersion": "activelabel/v1", "kind": "Policy", "metadata": {"name": "dep"},
        "labels": {"a": {"type": "enum", "values": ["x"]}, "b": {"type": "enum", "values": ["y"]}},
        "rules": [{"id": "r1", "label": "a", "value": "x", "when": "event.n > 1"},
                  {"id": "r2", "label": "b", "value": "y", "when": 'labels.a == "x"'}],
    })
    labeler = Labeler(load_policy_text(text))
    plan = labeler.columnar_plan()
    assert plan is not None
    result = plan.run([{"n": 2}, {"n": 0}, {}], labeler.compiled.fn)
    assert result.labels == [{"a": "x", "b": "y"}, {}, {}]
    assert result.errors == {0: 1, 1: 2} and result.absent == {0: 1, 1: 2}  # the absent n, the unset a


def test_two_windowed_guards_have_no_columnar_plan() -> None:
    """Two guards with windows read one clock per value in event order: such a policy stays on the per-event path."""
    guarded = {"type": "string", "max_cardinality": 2, "window": 60}
    text = yaml.safe_dump({
        "apiVersion": "activelabel/v1", "kind": "Policy", "metadata": {"name": "windows"},
        "labels": {"a": dict(guarded), "b": dict(guarded)},
        "rules": [{"id": "r1", "label": "a", "value_expr": "event.s"}, {"id": "r2", "label": "b", "value_expr": "event.s"}],
    })
    assert Labeler(load_policy_text(text)).columnar_plan() is None


def test_nan_doubles_are_compared_as_cel_does() -> None:
    """A NaN double is greater than nothing and unequal to itself, on the columnar path too."""
    text = yaml.safe_dump({
        "apiVersion": "activelabel/v1", "kind": "Policy", "metadata": {"name": "nan"},
        "labels": {"a": {"type": "enum", "values": ["big"]}, "b": {"type": "enum", "values": ["ne"]}},
        "rules": [{"id": "r1", "label": "a", "value": "big", "when": "event.f > 1.0"},
                  {"id": "r2", "label": "b", "value": "ne", "when": "event.f != event.f"}],
    })
    labeler = Labeler(load_policy_text(text))
    result = ColumnarPlan.build(labeler.compiled.plan).run([{"f": float("nan")}, {"f": 2.0}], labeler.compiled.fn)
    assert result.columnar and result.per_event_rows == 0
    assert result.labels == [{"b": "ne"}, {"a": "big"}]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(policy=policies(), batch=st.lists(events(), min_size=1, max_size=30))
def test_run_lines_splices_like_the_cli(policy: str, batch: list[dict]) -> None:
    """run_lines writes the same bytes as the CLI's splice of per-event labels, existing `labels` keys included."""
    import orjson

    from activelabel.sinks import splice_fields

    labeler = _compile(policy)
    reference = _compile(policy)
    batch = [dict(e, labels="old") if i % 7 == 3 else e for i, e in enumerate(batch)]
    raws = [orjson.dumps(e, option=orjson.OPT_NON_STR_KEYS) for e in batch]
    events_ = [orjson.loads(r) for r in raws]
    plan = ColumnarPlan.build(labeler.compiled.plan)
    assert plan is not None
    _, lines = plan.run_lines(raws, events_, labeler.compiled.fn)
    expected = [splice_fields(r, e, {"labels": reference.label(e).labels}) for r, e in zip(raws, events_)]
    assert lines == expected


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(policy=policies(), batch=st.lists(events(), min_size=1, max_size=40))
def test_a_source_code_names_its_label_on_every_path(policy: str, batch: list[dict]) -> None:
    """Each label's source code is one of that label's own sources, per event and column-wise.

    The audit log relies on it: it tells two decisions apart by their codes alone (index_codes).
    """
    from activelabel.engine.record_loop import index_codes

    labeler = _compile(policy)
    owner = [label for _source, label, _conf in labeler.source_table()]
    plan = ColumnarPlan.build(labeler.compiled.plan)
    assert plan is not None
    per_event = [labeler.label_codes(e)[1] for e in batch]
    columnar = plan.run(batch, labeler.compiled.fn).why
    for codes in (*per_event, *columnar):
        for name, code in codes.items():
            assert owner[code if code.__class__ is int else code[0]] == name
    index, distinct = index_codes([*per_event, *columnar])
    assert [distinct[k] for k in index] == [*per_event, *columnar]
