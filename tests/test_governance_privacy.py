"""Sensitivity, treatments, pseudonym keys, PII detectors, redaction and the privacy policy syntax."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from activelabel.engine import Labeler
from activelabel.errors import PolicyError, PseudonymKeyError
from activelabel.governance import (
    DEFAULT_CLEARANCE,
    Clearance,
    OutputGuard,
    PiiScanner,
    Protector,
    PseudonymKey,
    Sensitivity,
    SensitivityRegistry,
    protect_labels,
)
from activelabel.governance.pii import iban_ok, luhn_ok
from activelabel.governance.redact import Redactor
from activelabel.policy import load_policy

KEY = PseudonymKey("k1", b"unit-test-pseudonym-key-0123456789abcdef")

BASE = """
apiVersion: activelabel/v1
kind: Policy
labels:
  tier: {type: string}
  client: {type: string, sensitivity: pii}
  owner: {type: string, sensitivity: secret}
  note: {type: string}
rules:
  - {id: t, label: tier, value: gold, when: "true"}
  - {id: c, label: client, value_expr: event.ip, when: has(event.ip)}
  - {id: o, label: owner, value_expr: event.owner, when: has(event.owner)}
  - {id: n, label: note, value_expr: event.note, when: has(event.note)}
"""


def _policy(write_policy, extra: str = "", base: str = BASE):
    return load_policy(write_policy(base + extra))


def test_levels_are_ordered_and_clearance_takes_the_highest_grant():
    """public < internal < pii < secret, and a token granted pii and secret is cleared for secret."""
    assert Sensitivity.PUBLIC < Sensitivity.INTERNAL < Sensitivity.PII < Sensitivity.SECRET
    assert Clearance.of_grants(["pii", "secret"]).level is Sensitivity.SECRET
    assert Clearance.of_grants([]) == DEFAULT_CLEARANCE
    assert DEFAULT_CLEARANCE.allows("internal") and not DEFAULT_CLEARANCE.allows("pii")


def test_default_treatments_pseudonymize_pii_and_drop_secret(write_policy):
    """An uncleared reader gets pii as an hm1 pseudonym and no secret; unknown labels are dropped (fail closed)."""
    registry = SensitivityRegistry.of(_policy(write_policy))
    labels = {"tier": "gold", "client": "10.0.0.1", "owner": "team-a", "stray": "x"}
    out = protect_labels(labels, registry, DEFAULT_CLEARANCE, Protector([KEY]))
    assert out["tier"] == "gold"
    assert out["client"].startswith("hm1:k1:") and "10.0.0.1" not in out["client"]
    assert "owner" not in out and "stray" not in out
    assert protect_labels(labels, registry, Clearance.parse("secret"), Protector([KEY]))["owner"] == "team-a"


def test_without_a_key_pseudonymize_masks_and_says_so_once(write_policy):
    """With no key configured pii values are masked (never clear, never an unkeyed hash) and one notice is given."""
    registry = SensitivityRegistry.of(_policy(write_policy))
    notices: list[str] = []
    protector = Protector(warn=notices.append)
    first = protect_labels({"client": "10.0.0.1"}, registry, DEFAULT_CLEARANCE, protector)
    second = protect_labels({"client": "10.0.0.2"}, registry, DEFAULT_CLEARANCE, protector)
    assert first == second == {"client": "[masked]"}
    assert len(notices) == 1 and "ACTIVELABEL_PSEUDONYM_KEY" in notices[0]


def test_protect_mask_keeps_a_prefix_and_a_marker(write_policy):
    """`protect: {with: mask, keep_prefix: 3, marker: ...}` keeps the prefix only and writes the marker."""
    extra = "  user: {type: string, sensitivity: pii, protect: {with: mask, keep_prefix: 3, marker: '<user>'}}\n"
    text = BASE.replace("  note: {type: string}\n", "  note: {type: string}\n" + extra)
    registry = SensitivityRegistry.of(load_policy(write_policy(text)))
    assert protect_labels({"user": "alice.smith"}, registry, DEFAULT_CLEARANCE, Protector([KEY])) == {"user": "ali<user>"}
    assert protect_labels({"user": "bob"}, registry, DEFAULT_CLEARANCE, Protector([KEY])) == {"user": "<user>"}


def test_key_file_errors_stop_at_start(tmp_path: Path):
    """A missing, short or empty key file is refused with what to do; keys rotate by id."""
    with pytest.raises(PseudonymKeyError, match="cannot read pseudonym key file"):
        Protector.configured(tmp_path / "missing.keys")
    short = tmp_path / "short.keys"
    short.write_text("k1=tooshort\n", encoding="utf-8")
    with pytest.raises(PseudonymKeyError, match=r"short.keys:1: .*at least 32"):
        Protector.configured(short)
    rotated = tmp_path / "rotated.keys"
    rotated.write_text(f"# newest first\nk2={'b' * 40}\nk1={KEY.secret.decode()}\n", encoding="utf-8")
    protector = Protector.configured(rotated)
    assert protector.key_id == "k2" and [k.key_id for k in protector.keys] == ["k2", "k1"]
    assert protector.pseudonymize("x").startswith("hm1:k2:")


def test_key_from_environment_without_id_gets_a_derived_id():
    """A bare secret in $ACTIVELABEL_PSEUDONYM_KEY works and its key id does not reveal it."""
    secret = "c" * 40
    protector = Protector.configured(env={"ACTIVELABEL_PSEUDONYM_KEY": secret})
    assert protector.key_id and protector.key_id.startswith("k") and secret[:8] not in protector.key_id
    assert Protector.configured(env={}).key_id is None


def test_protect_keep_without_clearance_is_refused_with_file_and_line(write_policy):
    """`protect: keep` on a pii label with outputs cleared only for internal is refused at its line, saying what to do."""
    text = BASE.replace("client: {type: string, sensitivity: pii}", "client: {type: string, sensitivity: pii, protect: keep}")
    with pytest.raises(PolicyError) as info:
        load_policy(write_policy(text))
    issue = info.value.issues[0]
    assert "protect: keep" in issue.message and issue.line == 5
    assert "outputs: {clearance: pii}" in (issue.suggestion or "")
    load_policy(write_policy(text + "outputs: {clearance: pii}\n"))


def test_bad_detector_pattern_and_unknown_entity_are_refused(write_policy):
    """A non-RE2 detector pattern and an unknown redaction entity are refused with their positions."""
    extra = "pii:\n  detectors: [{entity: ORDER, pattern: 'ord(?=-)'}]\nredact:\n  entities: [EMAIL, PASSPORT]\n"
    with pytest.raises(PolicyError) as info:
        _policy(write_policy, extra)
    messages = [i.message for i in info.value.issues]
    assert any("not a valid RE2 pattern" in m for m in messages)
    assert any("unknown detector entity `PASSPORT`" in m for m in messages)


def test_privacy_syntax_is_part_of_the_version(write_policy):
    """Changing a label's protect: or the outputs clearance changes the policy version; omitting them changes nothing."""
    plain = _policy(write_policy)
    again = _policy(write_policy)
    masked = load_policy(write_policy(BASE.replace("sensitivity: pii}", "sensitivity: pii, protect: mask}")))
    cleared = _policy(write_policy, "outputs: {clearance: pii}\n")
    assert plain.version == again.version
    assert len({plain.version, masked.version, cleared.version}) == 3
    assert "outputs" not in plain.canonical() and "protect" not in plain.canonical()["labels"][1]


@pytest.mark.parametrize(
    ("text", "entity"),
    [
        ("mail bob.smith@example.com now", "EMAIL_ADDRESS"),
        ("from 192.168.10.4 ok", "IP_ADDRESS"),
        ("from 2001:db8::8a2e:370:7334 ok", "IP_ADDRESS"),
        ("card 4111 1111 1111 1111 ok", "CREDIT_CARD"),
        ("iban GB82 WEST 1234 5698 7654 32 ok", "IBAN_CODE"),
        ("ssn 123-45-6789", "US_SSN"),
        ("call +1 415-555-0132", "PHONE_NUMBER"),
        ("t eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlXzEyMw", "JWT"),
        ("key AKIAIOSFODNN7EXAMPLE", "API_KEY"),
    ],
)
def test_detectors_find_each_entity_with_its_span(text, entity):
    """Each built-in detector finds its entity and reports Presidio's entity_type/start/end/score."""
    results = PiiScanner().analyze(text)
    hit = [r for r in results if r.entity_type == entity]
    assert hit, results
    assert set(hit[0].to_dict()) == {"entity_type", "start", "end", "score"}
    assert text[hit[0].start : hit[0].end].strip() == text[hit[0].start : hit[0].end]


def test_validators_reject_lookalikes_and_score_higher_than_patterns():
    """A card failing Luhn, an IBAN failing mod-97, SSN area 000 and 999.1.1.1 are not reported; validated scores beat bare patterns."""
    scanner = PiiScanner()
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert iban_ok("GB82WEST12345698765432") and not iban_ok("GB83WEST12345698765432")
    assert scanner.analyze("4111 1111 1111 1112 GB83WEST12345698765432 000-12-3456 999.1.1.1") == []
    card = scanner.analyze("4111111111111111")[0].score
    phone = scanner.analyze("call 415-555-0132")[0].score
    assert card > phone


def test_long_fields_are_scanned_to_the_limit_and_counted():
    """A field over max_scan_chars is scanned up to the limit (a later e-mail is not seen) and the truncation is counted."""
    scanner = PiiScanner(max_scan_chars=100)
    assert scanner.entities("x" * 200 + " bob@example.com") == []
    assert scanner.truncated == 1
    assert scanner.entities("bob@example.com") == ["EMAIL_ADDRESS"]


def test_user_defined_detectors_run_beside_the_built_ins():
    """A user regex reports its own entity type and score."""
    scanner = PiiScanner([("ORDER_ID", r"ord-[0-9]{8}", 0.6)])
    assert [r.entity_type for r in scanner.analyze("order ord-12345678 by bob@example.com")] == ["ORDER_ID", "EMAIL_ADDRESS"]


def test_pii_functions_in_rules_agree_on_compiled_and_interpreted_paths(write_policy):
    """`pii.contains` and `pii.find` give the same labels on the compiled fast path and the exact interpreter."""
    text = """
apiVersion: activelabel/v1
kind: Policy
labels:
  leaks_email: {type: bool, default: false}
  kinds: {type: int}
rules:
  - {id: e, label: leaks_email, value: true, when: 'pii.contains(event.msg, "EMAIL")'}
  - {id: k, label: kinds, value_expr: 'size(pii.find(event.msg))', when: has(event.msg)}
"""
    labeler = Labeler(load_policy(write_policy(text)))
    for event in ({"msg": "to bob@example.com from 10.0.0.1"}, {"msg": "nothing here"}, {"other": 1}):
        assert labeler.label(event).labels == labeler.label_exact(event)
    assert labeler.label({"msg": "to bob@example.com from 10.0.0.1"}).labels == {"leaks_email": True, "kinds": 2}


def test_pii_enricher_exposes_entities_to_rules(write_policy):
    """`type: pii` enricher over a field lets rules test what was found."""
    text = """
apiVersion: activelabel/v1
kind: Policy
enrichers:
  - {name: found, type: pii, key: event.msg}
labels:
  has_card: {type: bool, default: false}
rules:
  - {id: c, label: has_card, value: true, when: '"CREDIT_CARD" in found.entities'}
"""
    labeler = Labeler(load_policy(write_policy(text)))
    assert labeler.label({"msg": "paid with 4111-1111-1111-1111"}).labels == {"has_card": True}
    assert labeler.label({"msg": "paid cash"}).labels == {"has_card": False}


def test_redaction_masks_nested_fields_and_log_bodies_and_fails_closed(write_policy):
    """Blocked entities are masked in nested strings and list items; keys off the allow-list are removed; the input is untouched."""
    extra = "redact:\n  allowed_keys: [msg, http, body]\n  entities: [EMAIL, CREDIT_CARD]\n  blocked_values: ['tok-[a-z0-9]+']\n  summary: info\n"
    policy = _policy(write_policy, extra)
    redactor = Redactor.of(policy, Protector([KEY]))
    assert redactor is not None
    event = {"msg": "user bob@example.com paid 4111111111111111", "http": {"headers": ["tok-abc123", "ok"]}, "ip": "10.0.0.1"}
    original = copy.deepcopy(event)
    out, summary = redactor.redact(event)
    assert event == original
    assert out == {"msg": "user [redacted] paid [redacted]", "http": {"headers": ["[redacted]", "ok"]}}
    assert summary.fields() == {
        "redaction.masked.count": 3,
        "redaction.masked.keys": ["http.headers.0", "msg"],
        "redaction.redacted.count": 1,
        "redaction.redacted.keys": ["ip"],
    }
    body, _ = redactor.redact("plain log line from alice@example.org")
    assert body == "plain log line from [redacted]"


def test_redaction_can_pseudonymize_matches(write_policy):
    """`with: pseudonymize` replaces each match by its keyed pseudonym, so equal values still join."""
    policy = _policy(write_policy, "redact:\n  entities: [EMAIL]\n  with: pseudonymize\n")
    redactor = Redactor.of(policy, Protector([KEY]))
    assert redactor is not None
    a, _ = redactor.redact({"m": "from bob@example.com"})
    b, _ = redactor.redact({"n": "bob@example.com"})
    assert a["m"].startswith("from hm1:k1:") and a["m"][5:] == b["n"]


def test_output_guard_runs_after_labeling_and_counts_undeclared_pii(write_policy):
    """Rules see the original event; the output carries protected labels, a redacted event and an undeclared-PII count."""
    policy = _policy(write_policy, "redact:\n  entities: [EMAIL]\n  summary: info\n")
    labeler = Labeler(policy)
    event = {"ip": "10.0.0.1", "note": "contact bob@example.com", "owner": "team-a"}
    decision = labeler.label(event)
    assert decision.labels["note"] == "contact bob@example.com"  # the rule saw the original
    guard = OutputGuard.of(policy, door="test", protector=Protector([KEY]), scan_undeclared=True)
    out = guard.record(event, decision.labels)
    assert out.event["note"] == "contact [redacted]"
    assert out.fields["labels"]["client"].startswith("hm1:k1:") and "owner" not in out.fields["labels"]
    assert out.fields["redaction.masked.count"] == 1
    m9 = guard.counters.snapshot()
    assert m9["declared_leaks"] == 0
    # The pii label `client` was copied from `ip`: the event's copy leaves as the same pseudonym.
    assert out.event["ip"] == out.fields["labels"]["client"]
    # The label `note` is not declared sensitive: a registry gap.
    assert m9["undeclared_pii_by_field"] == {"test/labels.note/EMAIL_ADDRESS": 1}


def test_output_guard_is_a_passthrough_when_nothing_is_above_clearance(write_policy):
    """A guard cleared for secret with no redact: is marked passthrough so loops keep their fast path."""
    policy = _policy(write_policy)
    assert OutputGuard.of(policy, door="t", protector=Protector(), clearance="secret").passthrough
    assert not OutputGuard.of(policy, door="t", protector=Protector()).passthrough


def test_sensitive_labels_are_refused_as_keys_and_metric_labels(write_policy):
    """A pii or secret label named as a Kafka key or metric label gets a problem saying what to use instead."""
    from activelabel.governance.sensitivity import key_use_problems

    registry = SensitivityRegistry.of(_policy(write_policy))
    problems = key_use_problems(registry, ["tier", "client", "owner"], "a Kafka message key")
    assert len(problems) == 2
    assert "`client` is declared pii" in problems[0] and "public or internal" in problems[0]
    assert key_use_problems(registry, ["tier", "note"], "a metric label") == []
