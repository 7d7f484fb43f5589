"""The policy zoo (bench/zoo/): the engine labels realistic, messy events exactly as hand-written Python does."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from bench.zoo import NAMES, agreement, module

from activelabel.policy import load_policy

# Enough events for one batch to reach the columnar path's minimum (1,024) where a policy has one.
EVENTS = 1100


@pytest.mark.parametrize("name", NAMES)
def test_engine_paths_agree_with_the_hand_written_labeler(name: str) -> None:
    """label(), label_batch() and label_exact() give the hand-written labeler's labels on every zoo event."""
    res = agreement(name, EVENTS)
    assert res.events == EVENTS
    assert set(res.differ) == {"label", "label_batch", "label_exact"}
    assert res.differ == dict.fromkeys(res.differ, 0), res.examples


@pytest.mark.parametrize("name", ["security", "k8s"])
def test_cli_output_agrees_with_the_hand_written_labeler(name: str) -> None:
    """`activelabel label` writes the hand-written labeler's labels for every record (guards, CIDR, JSON lookups)."""
    res = agreement(name, 600, exact=False, cli=True)
    assert res.differ["cli"] == 0, res.examples


def test_zoo_uses_every_policy_feature() -> None:
    """Together the zoo policies use every label type, resolution mode, enricher kind, guard kind, now and models."""
    types, resolves, formats, kinds = set(), set(), set(), set()
    guards_window = guards_plain = value_expr = reads_labels = uses_now = models = bucket_default = False
    for name in NAMES:
        with tempfile.TemporaryDirectory() as tmp:
            policy = load_policy(module(name).materialize(Path(tmp)))
        for spec in policy.labels.values():
            types.add(spec.type)
            resolves.add(spec.resolve)
            if spec.max_cardinality:
                guards_window |= spec.window is not None
                guards_plain |= spec.window is None
            bucket_default |= spec.type == "bucket" and spec.default is not None
        for enr in policy.enrichers:
            kinds.add(enr.type)
            formats.add(Path(enr.file).suffix)
        for rule in policy.rules:
            value_expr |= rule.value_expr is not None
            texts = [e.source for e in (rule.when, rule.value_expr) if e is not None]
            reads_labels |= any("labels." in t for t in texts)
            uses_now |= any("now" in t.replace("known", "") for t in texts)
        models |= bool(policy.models)
    assert types == {"enum", "bool", "string", "int", "float", "bucket"}
    assert resolves == {"first_match", "max_confidence", "vote"}
    assert kinds == {"lookup", "cidr"} and {".csv", ".json", ".db"} <= formats
    assert guards_window and guards_plain and value_expr and reads_labels and uses_now and models and bucket_default


def _paths(value: object, prefix: str = "") -> list[str]:
    """Every key path of nested maps (list elements under `[]`)."""
    if isinstance(value, dict):
        return [q for k, v in value.items() for q in [prefix + k, *_paths(v, prefix + k + ".")]]
    if isinstance(value, list):
        return [q for v in value for q in _paths(v, prefix + "[].")]
    return []


def test_events_are_messy_and_seeded() -> None:
    """Each generator is deterministic per seed, and its events lack fields some other events have."""
    for name in NAMES:
        gen = module(name).events
        a, b = gen(300, 5), gen(300, 5)
        assert a == b
        keys = [set(_paths(e)) for e in a]
        union = set().union(*keys)
        assert any(k != union for k in keys), name
