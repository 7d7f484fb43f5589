"""`activelabel feedback add|import` over a real store: JSONL and Label Studio exports."""

from __future__ import annotations

from pathlib import Path

import orjson
from typer.testing import CliRunner

from activelabel.cli.main import _register, app
from activelabel.quality.store import DecisionStore
from loop_store import recorded_store

FIXTURES = Path(__file__).parent / "fixtures" / "loop"
_register()
runner = CliRunner()


_store = recorded_store


def test_feedback_add_stores_one_truth_and_refuses_a_bad_value_with_the_reason(tmp_path):
    """`feedback add` accepts a valid value and exits 1 with the reason for a value outside the enum."""
    db = _store(tmp_path)
    policy = str(FIXTURES / "policy.yaml")
    ok = runner.invoke(app, ["feedback", "add", "--store", str(db), "--id", "e07", "--label", "category",
                             "--value", "APPREAD", "--who", "ana", "--policy", policy])
    assert ok.exit_code == 0, ok.output
    assert "stored e07 category = 'APPREAD'" in ok.output
    bad = runner.invoke(app, ["feedback", "add", "--store", str(db), "--id", "e07", "--label", "category",
                              "--value", "NOPE"])
    assert bad.exit_code == 1 and "outside label 'category'" in bad.stderr
    with DecisionStore(db) as store:
        assert store.counts()["ground_truth"] == 1 and store.counts()["rejected_feedback"] == 1


def test_feedback_import_jsonl_keeps_good_items_and_counts_each_refusal(tmp_path):
    """A JSONL file with good, unknown-id, unknown-label, out-of-enum and broken lines loses none of the good ones."""
    db = _store(tmp_path)
    feedback = tmp_path / "truth.jsonl"
    feedback.write_text("\n".join([
        '{"id": "e01", "label": "category", "value": "KERNDTLB", "who": "bo"}',
        '{"id": "e99", "label": "category", "value": "none"}',
        '{"id": "e02", "label": "colour", "value": "red"}',
        '{"id": "e03", "label": "category", "value": "WRONG"}',
        '{"id": "e04", "label": "category"',
        '{"id": "e05", "label": "category", "value": "none"}',
    ]) + "\n")
    res = runner.invoke(app, ["feedback", "import", str(feedback), "--store", str(db),
                              "--policy", str(FIXTURES / "policy.yaml")])
    assert res.exit_code == 0, res.output
    assert "unknown id 'e99'" in res.stderr and "unknown label 'colour'" in res.stderr
    assert "value 'WRONG' is outside" in res.stderr and "truth.jsonl:5: not valid JSON" in res.stderr
    with DecisionStore(db) as store:
        assert store.truth_map() == {("e01", "category"): "KERNDTLB", ("e05", "category"): "none"}
        assert store.counts()["rejected_feedback"] == 4
        assert store.ground_truth()[0].who == "bo"


def test_feedback_import_reads_a_label_studio_export(tmp_path):
    """A Label Studio export (annotations[].result choices) imports, skipping cancelled ones, keeping completed_by."""
    db = _store(tmp_path)
    export = tmp_path / "export.json"
    export.write_bytes(orjson.dumps([
        {"id": 1, "data": {"activelabel_id": "e07", "activelabel_label": "category", "text": "ciod: ..."},
         "annotations": [{"id": 10, "completed_by": 3, "was_cancelled": False, "created_at": "2026-11-27T10:00:00Z",
                          "result": [{"from_name": "category", "to_name": "text", "type": "choices",
                                      "value": {"choices": ["APPREAD"]}}]}]},
        {"id": 2, "data": {"activelabel_id": "e05", "activelabel_label": "category", "text": "generating core"},
         "annotations": [{"id": 11, "completed_by": {"id": 4, "email": "li@example.com"}, "was_cancelled": True,
                          "result": []}]},
    ]))
    res = runner.invoke(app, ["feedback", "import", str(export), "--store", str(db)])
    assert res.exit_code == 0, res.output
    with DecisionStore(db) as store:
        (truth,) = store.ground_truth()
    assert (truth.record_id, truth.value, truth.who, truth.how) == ("e07", "APPREAD", "3", "label-studio")


def test_feedback_import_of_a_malformed_export_names_the_task(tmp_path):
    """An export whose only task has no data object imports nothing and names the task (exit 1)."""
    db = _store(tmp_path)
    export = tmp_path / "export.json"
    export.write_bytes(orjson.dumps([{"id": 41, "annotations": []}]))
    res = runner.invoke(app, ["feedback", "import", str(export), "--store", str(db)])
    assert res.exit_code == 1 and "task 41: expected an object with a 'data' object" in " ".join(res.stderr.split())


def test_feedback_on_a_missing_store_says_how_to_create_one(tmp_path):
    """Pointing at a store that does not exist tells the user to record decisions first."""
    res = runner.invoke(app, ["feedback", "add", "--store", str(tmp_path / "no.db"), "--id", "x", "--label", "l",
                              "--value", "v"])
    assert res.exit_code == 1 and "activelabel label --policy P --record" in res.stderr


def test_feedback_import_prints_rejections_as_text_not_markup(tmp_path):
    """Each refused item is shown as `rejected <where>: <reason>`, with the colour markup applied (not
    printed as `[yellow]`) and brackets in the item's own text kept as they are."""
    db = _store(tmp_path)
    feedback = tmp_path / "truth.jsonl"
    feedback.write_text('{"id": "e01", "label": "category", "value": "KERNDTLB"}\n'
                        '{"id": "e03", "label": "category", "value": "[red]WRONG[/]"}\n')
    res = runner.invoke(app, ["feedback", "import", str(feedback), "--store", str(db),
                              "--policy", str(FIXTURES / "policy.yaml")])
    assert res.exit_code == 0, res.output
    assert "[yellow]" not in res.stderr
    line = next(line for line in res.stderr.splitlines() if "WRONG" in line)
    assert line.startswith("rejected ") and "'[red]WRONG[/]'" in line


def test_label_record_without_id_field_says_how_records_are_keyed(tmp_path):
    """`label --record` without `--id-field` says decisions are keyed by a content hash and to pass
    `--id-field` so feedback can name them; with `--id-field` the ids are the field's values."""
    events = tmp_path / "events.jsonl"
    events.write_text('{"id": "a1", "content": "x", "level": "INFO"}\n')
    res = runner.invoke(app, ["label", "-p", str(FIXTURES / "policy.yaml"), str(events), "-o", str(tmp_path / "o.jsonl"),
                              "--record", str(tmp_path / "hash.db")])
    assert res.exit_code == 0, res.output
    assert "content hash" in res.stderr and "--id-field" in res.stderr
    res = runner.invoke(app, ["label", "-p", str(FIXTURES / "policy.yaml"), str(events), "-o", str(tmp_path / "o.jsonl"),
                              "--record", str(tmp_path / "ids.db"), "--id-field", "id"])
    assert res.exit_code == 0, res.output
    assert "content hash" not in res.stderr
    with DecisionStore(tmp_path / "ids.db") as store:
        assert store.decision("a1") is not None
