"""A `vote` label gives the value, source and share the vote's definition gives, through the public API.

Votes whose rules all give constant values are summed in the generated code's locals
(engine/generate.py, ``_vote_slots``); the others in a dict. Both must agree with
``reference_vote`` below, over the rules ``Decision.explain()`` says matched, on the winner, the winning value's first rule (its source), the share
of the winner in the total (its confidence) and the conflict count: ties between equal
totals go to the value whose first matching rule is earliest, and with three or more
values matched the total is summed in first-match order, so the floats are identical.
"""

from __future__ import annotations

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from activelabel.engine import Labeler
from activelabel.policy import load_policy

VALUES = ["a", "b", "c", "d"]
# Sums of these are inexact in binary, so a different order of addition shows in the last bits.
CONFIDENCES = [0.1, 0.2, 0.3, 0.7, 0.9, 1.0, 0.0]


@st.composite
def vote_policies(draw) -> str:
    n = draw(st.integers(1, 7))
    constant_only = draw(st.booleans())
    rules = []
    for i in range(n):
        rule: dict = {"id": f"r{i}", "label": "verdict", "confidence": draw(st.sampled_from(CONFIDENCES)),
                      "when": draw(st.sampled_from([f"event.b{i}", f"event.b{i} && event.n > 2", f"has(event.b{i})"]))}
        if constant_only or draw(st.integers(0, 3)):
            rule["value"] = draw(st.sampled_from(VALUES))
        else:
            rule["value_expr"] = "event.s"
        rules.append(rule)
    label: dict = {"type": "enum", "values": VALUES, "resolve": "vote"}
    if draw(st.booleans()):
        label["default"] = "d"
    doc = {"apiVersion": "activelabel/v1", "kind": "Policy", "metadata": {"name": "votes"},
           "labels": {"verdict": label}, "rules": rules}
    return yaml.safe_dump(doc, sort_keys=False)


EVENTS = st.fixed_dictionaries({}, optional={
    **{f"b{i}": st.one_of(st.booleans(), st.booleans(), st.just(1), st.none()) for i in range(7)},
    "n": st.one_of(st.integers(0, 5), st.just("3")),
    "s": st.sampled_from(["a", "b", "c", "zz"]),
})


def reference_vote(candidates: list[dict]) -> tuple[object, str, float] | None:
    """The vote as docs/policy.md states it, over the rules that matched in rule order: the highest summed
    confidence wins, ties to the value whose first rule is earliest; its source is that first rule and its
    confidence its share of the total (summed per value, then over values in first-match order)."""
    totals: dict[tuple[type, object], float] = {}
    first: dict[tuple[type, object], dict] = {}
    for c in candidates:
        key = (c["value"].__class__, c["value"])
        totals[key] = totals.get(key, 0.0) + c["confidence"]
        first.setdefault(key, c)
    if not totals:
        return None
    winner = max(totals, key=totals.__getitem__)
    total = sum(totals.values())
    return first[winner]["value"], first[winner]["source"], totals[winner] / total if total > 0 else 0.0


def test_vote_matches_the_reference_resolution(tmp_path_factory):
    directory = tmp_path_factory.mktemp("votes")

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(vote_policies(), st.lists(EVENTS, min_size=1, max_size=10))
    def check(text, events):
        path = directory / "p.yaml"
        path.write_text(text)
        policy = load_policy(path)
        labeler = Labeler(policy)
        default = policy.labels["verdict"].default if policy.labels["verdict"].has_default else None
        conflicts = 0
        for event in events:
            decision = labeler.label(event)
            # explain() re-evaluates every rule by the exact path: its candidates are the rules that matched.
            candidates = decision.explain()["labels"]["verdict"]["candidates"]
            conflicts += len({(c["value"].__class__, c["value"]) for c in candidates}) > 1
            expected = reference_vote(candidates)
            if expected is None:
                if default is None:
                    assert "verdict" not in decision.labels, (text, event)
                else:
                    assert decision.labels["verdict"] == default and decision.sources["verdict"] == "default"
                continue
            value, source, share = expected
            assert decision.labels["verdict"] == value, (text, event)
            assert decision.sources["verdict"] == source, (text, event)
            assert decision.confidences["verdict"] == share, (text, event)  # identical floats, not approximately
        assert labeler.stats().conflicts.get("verdict", 0) == conflicts, text

    check()


def test_a_tie_goes_to_the_value_whose_first_rule_is_earliest(tmp_path):
    """Two values with equal totals: the one a rule gave first wins, with half of the total."""
    path = tmp_path / "p.yaml"
    path.write_text("""apiVersion: activelabel/v1
kind: Policy
metadata: {name: tie}
labels:
  verdict: {type: enum, values: [a, b, c], resolve: vote}
rules:
  - {id: b-first, label: verdict, value: b, confidence: 0.3, when: event.x}
  - {id: a-one, label: verdict, value: a, confidence: 0.1, when: event.x}
  - {id: a-two, label: verdict, value: a, confidence: 0.2, when: event.x}
  - {id: c-late, label: verdict, value: c, confidence: 0.3, when: event.y}
""")
    labeler = Labeler.from_file(path)
    d = labeler.label({"x": True, "y": False})
    # a: 0.1 + 0.2 = 0.30000000000000004 > b's 0.3, so `a` wins over the earlier `b`.
    assert d.labels == {"verdict": "a"} and d.sources == {"verdict": "rule:a-one"}
    assert d.confidences["verdict"] == (0.1 + 0.2) / (0.3 + (0.1 + 0.2))
    d = labeler.label({"x": False, "y": True})
    assert d.labels == {"verdict": "c"} and d.confidences == {"verdict": 1.0}
    assert labeler.stats().conflicts == {"verdict": 1}


def test_three_values_share_the_total_summed_in_first_match_order(tmp_path):
    """b and c matched before a: the total is (b + c) + a = 1.2000000000000002, not (a + b) + c = 1.2."""
    path = tmp_path / "p.yaml"
    path.write_text("""apiVersion: activelabel/v1
kind: Policy
metadata: {name: order}
labels:
  verdict: {type: enum, values: [a, b, c], resolve: vote}
rules:
  - {id: a-early, label: verdict, value: a, confidence: 0.1, when: event.never}
  - {id: b, label: verdict, value: b, confidence: 0.1, when: event.x}
  - {id: c, label: verdict, value: c, confidence: 1.0, when: event.x}
  - {id: a-late, label: verdict, value: a, confidence: 0.1, when: event.x}
""")
    d = Labeler.from_file(path).label({"x": True, "never": False})
    assert d.labels == {"verdict": "c"} and d.sources == {"verdict": "rule:c"}
    assert d.confidences["verdict"] == 1.0 / ((0.1 + 1.0) + 0.1)
    assert d.confidences["verdict"] != 1.0 / ((0.1 + 0.1) + 1.0)  # the order matters in the last bit
