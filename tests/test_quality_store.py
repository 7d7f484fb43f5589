"""The decision and ground-truth store: a real SQLite file, stable ids, feedback checks."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import orjson
import pytest

from activelabel.errors import FeedbackError, StoreError
from activelabel.policy import load_policy
from activelabel.quality.store import DecisionStore, record_id_for

FIXTURES = Path(__file__).parent / "fixtures" / "loop"


def _recorded(path: Path, *, policy: bool = True) -> DecisionStore:
    store = DecisionStore(path, policy=load_policy(FIXTURES / "policy.yaml") if policy else None, clock=lambda: 1000.0)
    rows = [orjson.loads(line) for line in (FIXTURES / "decisions.jsonl").read_bytes().splitlines()]
    store.record_many((r["id"], r["event"], r["decision"]) for r in rows)
    return store


def test_record_id_is_the_id_field_or_a_content_hash_independent_of_key_order():
    """The same event gets the same id in any key order; an id_field (dot path) is used as is."""
    a = {"x": 1, "y": {"z": "k"}}
    b = {"y": {"z": "k"}, "x": 1}
    assert record_id_for(a) == record_id_for(b) and record_id_for(a).startswith("sha256:")
    assert record_id_for(a) != record_id_for({"x": 2, "y": {"z": "k"}})
    assert record_id_for(a, "y.z") == "k"
    with pytest.raises(StoreError, match="no id field 'nope'"):
        record_id_for(a, "nope")


def test_decisions_are_stored_in_one_sqlite_file_and_read_back(tmp_path):
    """Every recorded field (labels, confidences, sources, explain, event, version, time) round-trips."""
    store = _recorded(tmp_path / "d.db")
    assert store.count_decisions() == 12
    d = store.decision("e07")
    assert d.labels == {"category": "none", "severity": "fatal"} and d.sources["category"] == "default"
    assert d.event["content"].startswith("ciod:") and d.policy_version == "sha256:cf7b32651c0e/1" and d.ts == 1000.0
    assert d.explain["labels"]["severity"]["matched"] == ["rule:fatal"]
    store.close()
    with sqlite3.connect(tmp_path / "d.db") as raw:
        assert raw.execute("SELECT COUNT(*) FROM decisions").fetchone() == (12,)


def test_recording_a_record_again_replaces_its_decision(tmp_path):
    """Relabeling the same record (same id) keeps one row, the newest decision."""
    store = _recorded(tmp_path / "d.db")
    store.record("e07", {"id": "e07"}, {"labels": {"category": "APPREAD"}, "confidences": {"category": 0.9},
                                        "sources": {"category": "model:m@1"}, "policy_version": "v2"})
    assert store.count_decisions() == 12 and store.decision("e07").labels == {"category": "APPREAD"}


def test_ground_truth_is_checked_against_the_policy_and_refusals_are_counted(tmp_path):
    """Unknown id, unknown label and out-of-enum values are refused with the reason; good items are kept."""
    store = _recorded(tmp_path / "d.db")
    truth = store.add_ground_truth("e07", "category", "APPREAD", who="ana", how="cli")
    assert truth.value == "APPREAD" and store.truth_map() == {("e07", "category"): "APPREAD"}
    with pytest.raises(FeedbackError, match="unknown id 'e99'"):
        store.add_ground_truth("e99", "category", "none")
    with pytest.raises(FeedbackError, match="unknown label 'colour'"):
        store.add_ground_truth("e01", "colour", "red")
    with pytest.raises(FeedbackError, match=r"outside label 'category'.s values"):
        store.add_ground_truth("e01", "category", "KERNPANIC")
    assert [r["reason"][:10] for r in store.rejections()] == ["unknown id", "unknown la", "value 'KER"]
    assert store.counts() == {"decisions": 12, "ground_truth": 1, "rejected_feedback": 3}
    assert store.ground_truth()[0].who == "ana"


def test_without_a_policy_labels_seen_in_decisions_are_accepted(tmp_path):
    """A store fed only by `label --record` knows labels from its decisions and refuses others."""
    store = _recorded(tmp_path / "d.db", policy=False)
    store.add_ground_truth("e01", "severity", "fatal")
    with pytest.raises(FeedbackError, match="unknown label 'colour'; known: category, severity"):
        store.add_ground_truth("e01", "colour", "red")


def test_registry_survives_reopening_the_file(tmp_path):
    """The policy's label registry is kept in the file, so later commands need no --policy."""
    _recorded(tmp_path / "d.db").close()
    again = DecisionStore(tmp_path / "d.db")
    with pytest.raises(FeedbackError, match="outside label 'severity'"):
        again.add_ground_truth("e01", "severity", "debug")


def test_record_id_ignores_key_order_for_any_event():
    """Property: shuffling an event's keys never changes its content-hash id."""
    import random

    from hypothesis import given, settings
    from hypothesis import strategies as st

    scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=8)
    events = st.dictionaries(st.text(min_size=1, max_size=6), scalars | st.lists(scalars, max_size=3), max_size=8)

    @settings(max_examples=60, deadline=None)
    @given(events, st.integers(0, 1000))
    def check(event, seed):
        keys = list(event)
        random.Random(seed).shuffle(keys)
        assert record_id_for({k: event[k] for k in keys}) == record_id_for(event)

    check()


def test_events_with_integers_beyond_64_bits_are_recorded(tmp_path):
    """An event orjson cannot encode (a 70-bit integer) still gets an id and a stored decision."""
    store = DecisionStore(tmp_path / "d.db")
    event = {"big": 2**70, "msg": "x"}
    rid = record_id_for(event)
    store.record(rid, event, {"labels": {"l": "v"}})
    assert store.decision(rid).event["msg"] == "x" and rid == record_id_for({"msg": "x", "big": 2**70})


def test_sampled_recording_keeps_a_stable_share_of_records(tmp_path):
    """With sample_rate 0.25 about a quarter is kept, and the same ids are kept in any store."""
    events = [({"n": i}, {"labels": {"l": "v"}}) for i in range(2000)]
    stores = [DecisionStore(tmp_path / f"{k}.db", sample_rate=0.25) for k in range(2)]
    for store in stores:
        store.record_many((record_id_for(e), e, d) for e, d in events)
    kept = [{d.record_id for d in store.decisions()} for store in stores]
    assert kept[0] == kept[1] and 400 < len(kept[0]) < 600
    assert stores[0].skipped_by_sampling == 2000 - len(kept[0])
    with pytest.raises(StoreError, match="sample_rate"):
        DecisionStore(tmp_path / "x.db", sample_rate=0)
