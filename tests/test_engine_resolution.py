"""The engine decides each label as the policy says: order, resolution modes, defaults, buckets."""

from __future__ import annotations

import pytest

from activelabel import Labeler, load_policy

HEADER = """
apiVersion: activelabel/v1
kind: Policy
metadata: {name: t, version: "3"}
"""


def make(write_policy, body: str, **kw) -> Labeler:
    return Labeler(load_policy(write_policy(HEADER + body)), **kw)


def test_first_match_takes_the_first_matching_rule_in_file_order(write_policy):
    """With first_match the earliest matching rule wins even when a later one has higher confidence."""
    lab = make(write_policy, """
labels:
  priority: {type: enum, values: [critical, high, normal], default: normal}
rules:
  - {id: a, label: priority, value: high, when: 'event.status >= 400', confidence: 0.5}
  - {id: b, label: priority, value: critical, when: 'event.status >= 500', confidence: 0.99}
""")
    d = lab.label({"status": 503})
    assert d.labels == {"priority": "high"}
    assert d.sources == {"priority": "rule:a"}
    assert d.confidences == {"priority": 0.5}
    assert lab.label({"status": 200}).labels == {"priority": "normal"}
    assert lab.label({"status": 200}).sources == {"priority": "default"}


def test_max_confidence_takes_the_most_confident_rule_and_ties_go_to_the_earlier(write_policy):
    """max_confidence picks the highest confidence; on a tie the rule written first wins."""
    lab = make(write_policy, """
labels:
  tier: {type: enum, values: [a, b, c], resolve: max_confidence}
rules:
  - {id: r1, label: tier, value: a, when: 'event.x > 0', confidence: 0.6}
  - {id: r2, label: tier, value: b, when: 'event.x > 1', confidence: 0.9}
  - {id: r3, label: tier, value: c, when: 'event.x > 2', confidence: 0.9}
""")
    assert lab.label({"x": 1}).labels == {"tier": "a"}
    d = lab.label({"x": 5})
    assert d.labels == {"tier": "b"}
    assert d.sources == {"tier": "rule:r2"}
    assert d.confidences["tier"] == pytest.approx(0.9)


def test_vote_sums_confidences_per_value_and_ties_go_to_the_earliest_first_rule(write_policy):
    """vote picks the value with the highest summed confidence; ties go to the value matched first."""
    lab = make(write_policy, """
labels:
  kind: {type: enum, values: [spam, ham], resolve: vote}
rules:
  - {id: s1, label: kind, value: spam, when: 'event.a', confidence: 0.5}
  - {id: h1, label: kind, value: ham, when: 'event.b', confidence: 0.7}
  - {id: s2, label: kind, value: spam, when: 'event.c', confidence: 0.4}
  - {id: h2, label: kind, value: ham, when: 'event.d', confidence: 0.2}
""")
    assert lab.label({"a": True, "b": True, "c": True, "d": False}).labels == {"kind": "spam"}  # 0.9 vs 0.7
    assert lab.label({"a": True, "b": True, "c": False, "d": True}).labels == {"kind": "ham"}  # 0.5 vs 0.9
    assert lab.label({"a": True, "b": True, "c": False, "d": False}).labels == {"kind": "ham"}  # 0.5 vs 0.7
    assert lab.label({"a": True, "b": False, "c": False, "d": True}).labels == {"kind": "spam"}  # 0.5 vs 0.2


def test_vote_tie_goes_to_the_value_whose_first_matching_rule_is_earliest(write_policy):
    """Equal vote totals resolve to the value that matched earliest in file order."""
    lab = make(write_policy, """
labels:
  kind: {type: enum, values: [x, y], resolve: vote}
rules:
  - {id: y1, label: kind, value: y, when: 'true', confidence: 0.5}
  - {id: x1, label: kind, value: x, when: 'true', confidence: 0.5}
""")
    assert lab.label({}).labels == {"kind": "y"}


def test_rules_read_labels_declared_earlier(write_policy):
    """A rule can use `labels.<name>` of a label declared above its own."""
    lab = make(write_policy, """
labels:
  tenant_tier: {type: enum, values: [gold, silver]}
  priority: {type: enum, values: [high, normal], default: normal}
rules:
  - {id: tier, label: tenant_tier, value_expr: event.tier, when: 'has(event.tier)'}
  - {id: gold, label: priority, value: high, when: 'labels.tenant_tier == "gold"'}
""")
    assert lab.label({"tier": "gold"}).labels == {"tenant_tier": "gold", "priority": "high"}
    assert lab.label({"tier": "silver"}).labels == {"tenant_tier": "silver", "priority": "normal"}
    assert lab.label({}).labels == {"priority": "normal"}


def test_bucket_labels_name_half_open_ranges_as_written(write_policy):
    """Bucket i covers [b(i-1), b(i)) and its name uses the bounds as written in the policy."""
    lab = make(write_policy, """
labels:
  latency_band: {type: bucket, from: event.latency_ms, bounds: [100, 500, 1e3]}
""")
    cases = {0: "<100", 99.9: "<100", 100: "100-500", 499: "100-500", 500: "500-1e3", 1000: ">=1e3", 5000: ">=1e3"}
    for latency, band in cases.items():
        assert lab.label({"latency_ms": latency}).labels == {"latency_band": band}, latency
    assert lab.label({"latency_ms": "slow"}).labels == {}
    assert lab.label({}).labels == {}
    assert lab.stats().rule_errors.get("from:latency_band") == 2


def test_value_expr_of_the_wrong_type_is_a_rule_error_not_a_crash(write_policy):
    """A value_expr giving a value outside the label's type does not match and is counted."""
    lab = make(write_policy, """
labels:
  code: {type: int}
  level: {type: enum, values: [a, b], default: a}
rules:
  - {id: code-from-field, label: code, value_expr: event.code}
  - {id: level-from-field, label: level, value_expr: event.level}
""")
    assert lab.label({"code": 7, "level": "b"}).labels == {"code": 7, "level": "b"}
    assert lab.label({"code": "seven", "level": "z"}).labels == {"level": "a"}
    assert lab.label({"code": True, "level": 3}).labels == {"level": "a"}
    stats = lab.stats()
    assert stats.rule_errors["code-from-field"] == 2
    assert stats.rule_errors["level-from-field"] == 2
    assert stats.rule_hits["code-from-field"] == 1


def test_a_rule_that_errors_does_not_match_and_is_counted(write_policy):
    """Missing fields and wrong types make the rule not match; the error is counted per rule."""
    lab = make(write_policy, """
labels:
  slow: {type: bool, default: false}
rules:
  - {id: by-latency, label: slow, value: true, when: 'event.http.latency_ms > 1000'}
  - {id: by-flag, label: slow, value: true, when: 'event.flag'}
""")
    assert lab.label({"http": {"latency_ms": 2000}}).labels == {"slow": True}
    assert lab.label({"http": {}}).labels == {"slow": False}
    assert lab.label({"http": {"latency_ms": "x"}, "flag": "yes"}).labels == {"slow": False}
    assert lab.label({"flag": True}).labels == {"slow": True}
    stats = lab.stats()
    assert stats.rule_errors["by-latency"] == 3
    assert stats.rule_errors["by-flag"] == 2  # missing once, and "yes" is not a bool
    assert stats.events == 4


def test_error_absorbing_or_lets_a_rule_match_despite_a_missing_field(write_policy):
    """CEL's `||` absorbs an error when the other side is true, so the rule still matches."""
    lab = make(write_policy, """
labels:
  hit: {type: bool}
rules:
  - {id: either, label: hit, value: true, when: 'event.missing > 1 || event.ok == true'}
""")
    assert lab.label({"ok": True}).labels == {"hit": True}
    assert lab.label({"ok": False}).labels == {}


def test_label_batch_gives_the_same_decisions_as_label(write_policy):
    """label_batch returns, in order, exactly what label returns per event."""
    lab = make(write_policy, """
labels:
  priority: {type: enum, values: [critical, high, normal], default: normal}
  band: {type: bucket, from: event.ms, bounds: [10, 100]}
rules:
  - {id: a, label: priority, value: critical, when: 'event.status >= 500'}
  - {id: b, label: priority, value: high, when: 'event.path.startsWith("/pay")'}
""")
    events = [{"status": s, "path": p, "ms": m} for s in (200, 503, "x") for p in ("/pay/1", "/x", None) for m in (1, 50, 500, None)]
    batch = [d.labels for d in lab.label_batch(events)]
    single = [lab.label(e).labels for e in events]
    assert batch == single
    assert len(batch) == len(events)


def test_decisions_record_the_policy_version_which_includes_the_metadata_version(write_policy):
    """The policy version is a SHA-256 of the canonical policy plus metadata.version."""
    lab = make(write_policy, """
labels:
  x: {type: bool, default: true}
""")
    d = lab.label({})
    assert d.policy_version == lab.version
    assert lab.version.startswith("sha256:") and lab.version.endswith("/3")


def test_explain_lists_matched_and_lost_rules_with_sources_and_confidence(write_policy):
    """explain() says per label its value, confidence, source, matched and losing rules."""
    lab = make(write_policy, """
labels:
  priority: {type: enum, values: [critical, high, normal], default: normal}
rules:
  - {id: pay-5xx, label: priority, value: critical, when: 'event.status >= 500', confidence: 0.99}
  - {id: any-error, label: priority, value: high, when: 'event.status >= 400'}
""")
    info = lab.label({"status": 503}).explain()
    p = info["labels"]["priority"]
    assert p["value"] == "critical"
    assert p["source"] == "rule:pay-5xx"
    assert p["confidence"] == pytest.approx(0.99)
    assert p["matched"] == ["rule:pay-5xx", "rule:any-error"]
    assert p["lost"] == ["rule:any-error"]
    assert info["policy_version"] == lab.version
    assert info["elapsed_us"] >= 0


def test_conflict_tracking_counts_events_where_matching_rules_disagree(write_policy):
    """With track_conflicts, an event where two matching rules give different values counts as a conflict."""
    body = """
labels:
  priority: {type: enum, values: [critical, high, normal], default: normal}
rules:
  - {id: a, label: priority, value: critical, when: 'event.status >= 500'}
  - {id: b, label: priority, value: high, when: 'event.status >= 400'}
  - {id: c, label: priority, value: critical, when: 'event.status >= 503'}
"""
    lab = make(write_policy, body, track_conflicts=True)
    for s in (503, 404, 200, 500):
        lab.label({"status": s})
    assert lab.stats().conflicts == {"priority": 2}
    assert lab.label({"status": 503}).labels == {"priority": "critical"}
