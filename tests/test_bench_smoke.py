"""The benchmark compares like with like: every engine gets the same policy and the same events."""

from __future__ import annotations

import statistics
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from bench.engines import PEERS, handwritten
from bench.events import generate_events, write_jsonl
from bench.handwritten import make_labeler
from bench.policies import policy_spec, write_policy

REPO = Path(__file__).resolve().parents[1]


def _sample(n: int) -> list[dict]:
    """`n` events that include every kind of missing field the generator produces."""
    pool = generate_events(3000, seed=21)
    picks: list[dict] = []
    tests = [
        lambda e: "user-agent" not in e["headers"],
        lambda e: "asn" not in e["client"],
        lambda e: "country" not in e["client"],
        lambda e: "upstream" not in e,
        lambda e: "tenant_id" not in e,
        lambda e: e["http"]["status"] >= 500,
        lambda e: e["http"]["path"].startswith("/admin"),
        lambda e: "bot" in e["headers"].get("user-agent", "").lower(),
    ]
    for test in tests:
        picks += [e for e in pool if test(e)][:3]
    picks += pool[: max(0, n - len(picks))]
    return picks[:n]


def test_generator_is_seeded_and_event_sized() -> None:
    """The same seed gives the same events, about 600 bytes of JSON each."""
    a, b = generate_events(500, seed=4), generate_events(500, seed=4)
    assert a == b
    assert a != generate_events(500, seed=5)
    mean = statistics.mean(len(orjson.dumps(e)) for e in a)
    assert 540 <= mean <= 660


@pytest.mark.parametrize("n_rules", [40, 200, 1000])
def test_policies_have_the_requested_size(n_rules: int) -> None:
    """policy_spec(n) has exactly n rules with unique ids, each naming a declared label and value."""
    spec = policy_spec(n_rules)
    assert len(spec.rules) == n_rules
    assert len({r.id for r in spec.rules}) == n_rules
    values = {lab.name: set(lab.values) for lab in spec.labels}
    assert all(r.value in values[r.label] for r in spec.rules)


def test_every_peer_agrees_with_the_handwritten_baseline_on_40_rules() -> None:
    """simpleeval, rule-engine, cel-python and the Rust CEL bindings give the hand-written labels."""
    spec = policy_spec(40)
    events = _sample(40)
    expected = [handwritten(spec).label(e) for e in events]
    for key, build in PEERS.items():
        engine = build(spec)
        assert [engine.label(e) for e in events] == expected, key


@pytest.mark.parametrize("n_rules", [200, 1000])
def test_fast_peers_agree_with_the_handwritten_baseline_on_big_policies(n_rules: int) -> None:
    """On the taxonomy policies the table-driven hand-written code matches rule-by-rule evaluation."""
    spec = policy_spec(n_rules)
    events = _sample(30)
    expected = [make_labeler(spec)(e) for e in events]
    for key in ("simpleeval", "cel-rust"):
        engine = PEERS[key](spec)
        assert [engine.label(e) for e in events] == expected, key


@pytest.mark.parametrize("n_rules", [40, 200, 1000])
def test_activelabel_agrees_with_the_handwritten_baseline(n_rules: int, tmp_path: Path) -> None:
    """The generated YAML policy labels events exactly as the hand-written code does, per event and in batch."""
    from activelabel import Labeler

    spec = policy_spec(n_rules)
    labeler = Labeler.from_file(write_policy(spec, tmp_path))
    events = _sample(300)
    expected = [make_labeler(spec)(e) for e in events]
    assert [labeler.label(e).labels for e in events] == expected
    assert [d.labels for d in labeler.label_batch(events)] == expected


def test_handwritten_e2e_script_adds_the_labels(tmp_path: Path) -> None:
    """bench/handwritten_e2e.py writes every input record back with its hand-written labels."""
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_jsonl(src, 200, seed=3)
    subprocess.run([sys.executable, str(REPO / "bench" / "handwritten_e2e.py"), str(src), "-o", str(dst)],
                   check=True, cwd=REPO)
    inputs = [orjson.loads(x) for x in src.read_bytes().splitlines()]
    outputs = [orjson.loads(x) for x in dst.read_bytes().splitlines()]
    assert len(outputs) == len(inputs) == 200
    label = make_labeler(policy_spec(40))
    assert all(o.pop("labels") == label(i) and o == i for i, o in zip(inputs, outputs))
