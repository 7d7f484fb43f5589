"""Absent fields and unset labels: decided inline as CEL says, and told apart from wrong types."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from activelabel import Labeler
from activelabel.policy import load_policy_text

POLICY = """
apiVersion: activelabel/v1
kind: Policy
metadata: {name: absent}
labels:
  tier: {type: enum, values: [gold, silver]}
  severity: {type: enum, values: [page, ticket, ignore], default: ignore}
  route: {type: enum, values: [fast, slow], resolve: max_confidence}
  kind: {type: enum, values: [api, web], resolve: vote}
  band: {type: bucket, from: event.bytes, bounds: [1024]}
rules:
  - {id: tier-acme, label: tier, value: gold, when: 'event.tenant == "acme"'}
  - {id: gold-5xx, label: severity, value: page, when: 'labels.tier == "gold" && event.status >= 500'}
  - {id: gold-or-slow, label: severity, value: ticket, when: 'labels.tier == "gold" || event.ms > 1000'}
  - {id: fast-gold, label: route, value: fast, when: 'labels.tier == "gold"', confidence: 0.9}
  - {id: slow-ms, label: route, value: slow, when: 'event.ms > 500', confidence: 0.6}
  - {id: api-path, label: kind, value: api, when: 'event.path.startsWith("/api/")', confidence: 0.5}
  - {id: web-accept, label: kind, value: web, when: 'event.accept == "text/html"', confidence: 0.4}
  - {id: api-accept, label: kind, value: api, when: 'event.accept == "application/json"', confidence: 0.4}
"""


def _labeler() -> Labeler:
    return Labeler(load_policy_text(POLICY))


def test_absorbed_errors_decide_as_cel_says_without_the_exact_path():
    """`error || true` is true and `error && false` is false for an unset label, with the same labels as the exact path."""
    lab = _labeler()
    slow = {"tenant": "other", "ms": 2000, "status": 200, "path": "/api/x", "accept": "application/json"}
    d = lab.label(slow)
    assert d.labels["severity"] == "ticket"  # labels.tier unset (error) || event.ms > 1000 (true)
    assert d.labels["route"] == "slow" and d.labels["kind"] == "api"
    assert d.labels == lab.label_exact(slow)
    quiet = {"tenant": "other", "ms": 10, "status": 200}
    assert lab.label(quiet).labels == lab.label_exact(quiet) == {"severity": "ignore"}
    assert "_exact_rules(" in lab.generated_source  # the exact path stays reachable for wrong types


def test_stats_tell_absent_reads_from_wrong_types():
    """An unset label or a missing field is counted in rule_absent; a wrong type only in rule_errors' remainder."""
    lab = _labeler()
    lab.label({"tenant": "other", "ms": 10})  # tier unset, status/path/accept/bytes missing
    lab.label({"tenant": "acme", "ms": "slow", "status": 503, "bytes": "many"})  # ms and bytes of the wrong type
    stats = lab.stats()
    assert stats.rule_absent["gold-5xx"] == 1  # `labels.tier == "gold"` on an unset tier, and status missing
    assert stats.rule_absent["gold-or-slow"] == 1  # `error || false` is an error (only `error || true` is true)
    assert stats.rule_failures["gold-or-slow"] == 0
    assert stats.rule_absent["fast-gold"] == 1 and stats.rule_errors["fast-gold"] == 1
    assert stats.rule_errors["slow-ms"] == 1 and stats.rule_absent["slow-ms"] == 0  # "slow" > 500: a wrong type
    assert stats.rule_failures["slow-ms"] == 1
    assert stats.rule_absent["from:band"] == 1 and stats.rule_failures["from:band"] == 1
    assert stats.rule_absent["api-path"] == 2 and stats.rule_failures["api-path"] == 0


def test_a_null_bucket_field_is_an_absent_read():
    """A field that is there but null (a 304 response's body size) is counted as absent, not as a wrong type."""
    lab = _labeler()
    assert "band" not in lab.label({"bytes": None}).labels
    stats = lab.stats()
    assert stats.rule_absent["from:band"] == 1 and stats.rule_failures["from:band"] == 0


def test_label_summary_separates_absent_fields_from_rule_errors(tmp_path: Path):
    """`activelabel label` lists rules that read a field with no value apart from rules that failed on a wrong type."""
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY)
    src = tmp_path / "in.jsonl"
    src.write_text('{"tenant": "acme", "ms": "slow", "status": 503}\n{"tenant": "b"}\n{"bytes": null}\n')
    res = subprocess.run([sys.executable, "-m", "activelabel", "label", "-p", str(policy), str(src),
                          "-o", str(tmp_path / "out.jsonl")], capture_output=True, timeout=120)
    assert res.returncode == 0, res.stderr.decode()
    text = res.stderr.decode()
    absent_at = text.index("read a field or label with no value")
    errors_at = text.index("rule errors: the rule did not match because a value had the wrong type")
    absent_part, errors_part = (text[absent_at:errors_at], text[errors_at:]) if absent_at < errors_at else (
        text[absent_at:], text[errors_at:absent_at])
    assert "api-path" in absent_part and "api-path" not in errors_part
    assert "slow-ms" in errors_part


TYPED = """
apiVersion: activelabel/v1
kind: Policy
metadata: {name: typed}
labels:
  risk: {type: enum, values: [high, low], default: low}
  fee: {type: float}
  tier: {type: enum, values: [gold, silver]}
rules:
  - {id: big-card, label: risk, value: high, when: 'event.amount > 1000 && event.method == "card"'}
  - {id: not-small, label: risk, value: high, when: '!(event.attempt < 3)'}
  - {id: card-fee, label: fee, value_expr: event.amount * 0.029, when: 'event.method == "card"'}
  - {id: tier, label: tier, value_expr: event.tier, when: has(event.tier)}
"""


def test_wrong_types_are_counted_as_failures_in_place_and_decide_as_cel_says():
    """A string amount, a null attempt and a tier outside the enum: CEL's answer, counted per rule as the exact path counts."""
    lab = Labeler(load_policy_text(TYPED))
    events = [
        {"amount": "12.50", "method": "wallet", "attempt": 1},  # "12.50" > 1000 errors, `&& false` absorbs it
        {"amount": "12.50", "method": "card", "attempt": 1},  # ... `&& true` keeps it: a failure, not absent
        {"amount": 50.0, "method": "card", "attempt": None, "tier": "platinum"},  # null attempt: absent-kind
        {"method": "card", "attempt": "2", "tier": "gold"},  # amount absent; "2" < 3 is a type error
        {"amount": 7, "method": "card", "attempt": 9},  # int * double: no overload in CEL, the fee stays unset
    ]
    got = [lab.label(e).labels for e in events]
    assert got == [lab.label_exact(e) for e in events]
    assert [g["risk"] for g in got] == ["low", "low", "low", "low", "high"]
    assert "fee" not in got[4] and got[2]["fee"] == 50.0 * 0.029
    assert "tier" not in got[2] and got[3]["tier"] == "gold"
    stats = lab.stats()
    assert stats.rule_errors["big-card"] == 2 and stats.rule_absent["big-card"] == 1  # event 2 fails, event 4 absent
    assert stats.rule_errors["not-small"] == 2 and stats.rule_absent["not-small"] == 1  # null reads as absent, "2" fails
    assert stats.rule_errors["card-fee"] == 3 and stats.rule_absent["card-fee"] == 1  # "12.50", absent, int
    assert stats.rule_errors["tier"] == 1 and stats.rule_failures["tier"] == 1  # platinum does not fit the enum


def test_a_float_value_without_a_json_form_does_not_fit_its_label():
    """inf and NaN (1e308 * 2.0) are rule errors, not labels written out as null, on the fast and the exact path."""
    lab = Labeler(load_policy_text("""
apiVersion: activelabel/v1
kind: Policy
metadata: {name: finite}
labels: {total: {type: float}, spread: {type: float}}
rules:
  - {id: total, label: total, value_expr: 'event.x * 2.0'}
  - {id: spread, label: spread, value_expr: 'event.x * 2.0 - event.x * 2.0'}
"""))
    assert lab.label({"x": 1e308}).labels == lab.label_exact({"x": 1e308}) == {}
    assert lab.label({"x": 2.5}).labels == {"total": 5.0, "spread": 0.0}
    assert lab.stats().rule_failures == {"total": 1, "spread": 1}
