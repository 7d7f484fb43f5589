"""The generated fast path agrees with the exact CEL path on any event, including hostile ones."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from activelabel import Labeler, load_policy

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
