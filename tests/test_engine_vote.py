"""A `vote` label gives the value, source and share the reference `resolve` gives, on every path.

Votes whose rules all give constant values are summed in the generated code's locals
(engine/generate.py, ``_vote_slots``); the others in a dict. Both must agree with
``exact.resolve`` on the winner, the winning value's first rule (its source), the share
of the winner in the total (its confidence) and the conflict count: ties between equal
totals go to the value whose first matching rule is earliest, and with three or more
values matched the total is summed in first-match order, so the floats are identical.
"""

from __future__ import annotations

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from activelabel.engine import Labeler
from activelabel.engine.exact import MISSING, decide_label
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


def test_vote_matches_the_reference_resolution(tmp_path_factory):
    directory = tmp_path_factory.mktemp("votes")

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(vote_policies(), st.lists(EVENTS, min_size=1, max_size=10))
    def check(text, events):
        path = directory / "p.yaml"
        path.write_text(text)
        labeler = Labeler(load_policy(path))
        compiled = labeler.compiled
        lp = compiled.plan.labels[0]
        conflicts = 0
        for event in events:
            decision = labeler.label(event)
            outcome = decide_label(compiled.plan, lp, compiled.base_bindings(event), every_rule=True)
            conflicts += outcome.conflict
            if outcome.value is MISSING:
                assert "verdict" not in decision.labels, (text, event)
                continue
            assert decision.labels["verdict"] == outcome.value, (text, event)
            code = outcome.code  # (rule, share) for a vote, the default's index otherwise
            idx, share = code if code.__class__ is tuple else (code, compiled.source_table[code][1])
            assert decision.sources["verdict"] == compiled.source_table[idx][0], (text, event)
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
