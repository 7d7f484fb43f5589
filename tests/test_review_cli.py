"""`activelabel review export|import`: strategies, near-duplicate suppression, Label Studio shapes."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from activelabel.cli.main import _register, app
from activelabel.quality.review import dedup_key_for, select_for_review
from activelabel.quality.store import DecisionStore
from loop_store import recorded_store

FIXTURES = Path(__file__).parent / "fixtures" / "loop"
_register()
runner = CliRunner()


_store = recorded_store


def _export(tmp_path: Path, db: Path, *args: str) -> list[dict]:
    out = tmp_path / "tasks.json"
    res = runner.invoke(app, ["review", "export", "--store", str(db), "--label", "category", "--output", str(out),
                              "--policy", str(FIXTURES / "policy.yaml"), *args])
    assert res.exit_code == 0, res.output
    return orjson.loads(out.read_bytes())


def test_uncertainty_export_sends_one_item_per_template_lowest_confidence_first(tmp_path):
    """Budget 3 goes to the unmatched lines (confidence 0), one per distinct template, then the next least sure."""
    tasks = _export(tmp_path, _store(tmp_path), "--budget", "3", "--dedup-field", "content", "--text-field", "content")
    texts = [t["data"]["text"] for t in tasks]
    assert len(set(texts)) == 3
    assert set(texts[:3]) >= {"ciod: failed to read message prefix on control stream"}
    assert all(t["predictions"][0]["score"] == 0.0 for t in tasks)  # three distinct unmatched templates exist


def test_tasks_and_config_have_label_studio_shapes(tmp_path):
    """Tasks carry our id and fields in data and a scored choices prediction; the XML lists every enum value."""
    tasks = _export(tmp_path, _store(tmp_path), "--budget", "12", "--no-dedup", "--text-field", "content")
    task = next(t for t in tasks if t["data"]["activelabel_id"] == "e02")
    assert task["data"]["content"] == "data storage interrupt" and task["data"]["activelabel_label"] == "category"
    (pred,) = task["predictions"]
    assert pred["model_version"] == "rule:storage" and pred["score"] == 0.8
    assert pred["result"] == [{"from_name": "category", "to_name": "text", "type": "choices",
                               "value": {"choices": ["KERNSTOR"]}}]
    root = ET.parse(tmp_path / "tasks.xml").getroot()
    choices = root.find("Choices")
    assert choices.get("name") == "category" and choices.get("toName") == "text"
    assert [c.get("value") for c in choices.findall("Choice")] == ["KERNDTLB", "KERNSTOR", "APPREAD", "none"]
    assert root.find("Text").get("value") == "$text"


def test_disagreement_strategy_puts_conflicting_rules_first(tmp_path):
    """Lines where a KERNDTLB rule and a KERNSTOR rule both matched are reviewed first."""
    tasks = _export(tmp_path, _store(tmp_path), "--budget", "1", "--strategy", "disagreement", "--dedup-field", "content")
    assert tasks[0]["data"]["content"] == "data TLB error interrupt"


@pytest.mark.parametrize("strategy", ["margin", "entropy", "random"])
def test_every_strategy_respects_the_budget_and_dedup(tmp_path, strategy):
    """Each strategy returns at most the budget and never two items of one template."""
    tasks = _export(tmp_path, _store(tmp_path), "--budget", "5", "--strategy", strategy, "--dedup-field", "content")
    assert len(tasks) == 5 and len({t["data"]["content"] for t in tasks}) == 5


def test_items_with_ground_truth_are_not_sent_again(tmp_path):
    """Once a record has truth for the label, the next export skips it."""
    db = _store(tmp_path)
    with DecisionStore(db) as store:
        store.add_ground_truth("e07", "category", "APPREAD")
    tasks = _export(tmp_path, db, "--budget", "12", "--no-dedup")
    assert "e07" not in {t["data"]["activelabel_id"] for t in tasks} and len(tasks) == 11


def test_exported_tasks_annotated_in_label_studio_come_back_as_ground_truth(tmp_path):
    """Round trip: export, annotate (Label Studio's export shape), import; cancelled ones are skipped."""
    db = _store(tmp_path)
    tasks = _export(tmp_path, db, "--budget", "3", "--dedup-field", "content")
    for i, task in enumerate(tasks):
        task["id"] = 100 + i
        task["annotations"] = [{
            "id": 500 + i, "completed_by": {"id": 7, "email": "ops@example.com"}, "was_cancelled": i == 2,
            "created_at": "2026-11-27T12:00:00Z", "updated_at": "2026-11-27T12:01:00Z", "lead_time": 4.2,
            "result": [] if i == 2 else [{"id": "r1", "from_name": "category", "to_name": "text", "type": "choices",
                                          "origin": "manual", "value": {"choices": ["none"]}}],
        }]
    export = tmp_path / "project-1-at-2026-11-27.json"
    export.write_bytes(orjson.dumps(tasks))
    res = runner.invoke(app, ["review", "import", str(export), "--store", str(db)])
    assert res.exit_code == 0, res.output
    assert "cancelled" in res.output
    with DecisionStore(db) as store:
        truth = store.ground_truth("category")
    assert len(truth) == 2 and all(t.who == "ops@example.com" and t.value == "none" for t in truth)


def test_review_import_refuses_a_choice_list_with_two_values_naming_the_task(tmp_path):
    """An annotation with two choices for a single-choice label is a clear error naming the task."""
    db = _store(tmp_path)
    export = tmp_path / "export.json"
    export.write_bytes(orjson.dumps([{"id": 9, "data": {"activelabel_id": "e01"}, "annotations": [
        {"result": [{"from_name": "category", "type": "choices", "value": {"choices": ["none", "KERNDTLB"]}}]}]}]))
    res = runner.invoke(app, ["review", "import", str(export), "--store", str(db)])
    assert res.exit_code == 1 and "task 9: a choices result must hold exactly one choice" in " ".join(res.stderr.split())


def test_review_import_refuses_foreign_and_multi_choice_tasks_one_by_one_and_imports_the_rest(tmp_path):
    """One foreign task and one two-choice task are refused by name; the good task is still imported (exit 0)."""
    db = _store(tmp_path)
    good = {"id": 1, "data": {"activelabel_id": "e01", "text": "x"}, "annotations": [
        {"completed_by": 3, "result": [{"from_name": "category", "to_name": "text", "type": "choices",
                                        "value": {"choices": ["none"]}}]}]}
    foreign = {"id": 2, "data": {"text": "a task made in Label Studio"}, "annotations": [
        {"result": [{"from_name": "category", "to_name": "text", "type": "choices", "value": {"choices": ["none"]}}]}]}
    multi = {"id": 3, "data": {"activelabel_id": "e02"}, "annotations": [
        {"result": [{"from_name": "category", "type": "choices", "value": {"choices": ["none", "KERNDTLB"]}}]}]}
    export = tmp_path / "export.json"
    export.write_bytes(orjson.dumps([foreign, good, multi]))
    res = runner.invoke(app, ["review", "import", str(export), "--store", str(db)])
    assert res.exit_code == 0, res.output
    stderr = " ".join(res.stderr.split())
    assert "task 2: data has no 'activelabel_id'" in stderr and "task 3: a choices result must hold exactly one" in stderr
    with DecisionStore(db) as store:
        assert [(t.record_id, t.value) for t in store.ground_truth("category")] == [("e01", "none")]
        assert len(store.rejections()) == 2


def test_select_for_review_is_reproducible_for_a_seed(tmp_path):
    """The same seed picks the same items (ties are broken by the seeded generator)."""
    with DecisionStore(_store(tmp_path)) as store:
        decisions = list(store.decisions())
    pick = lambda seed: [i.decision.record_id for i in select_for_review(
        decisions, label="category", budget=4, strategy="random", dedup=dedup_key_for("content"), seed=seed)]
    assert pick(3) == pick(3)


def test_disagreement_with_a_policy_model_surfaces_lines_where_model_and_rule_differ(tmp_path):
    """With --policy naming a model, lines where the decided value and the model's pick differ come first."""
    from activelabel.quality.training import train_model

    events = [orjson.loads(line) for line in (FIXTURES / "alerts.jsonl").read_bytes().splitlines()]
    truth = [orjson.loads(line)["value"] for line in (FIXTURES / "alerts.truth.jsonl").read_bytes().splitlines()]
    # A model that learned storage interrupts as KERNDTLB: it disagrees with the `storage` rule.
    values = ["KERNDTLB" if "storage" in e["content"] else v for e, v in zip(events, truth, strict=True)]
    trained = train_model([{"msg": e["content"]} for e in events] * 3, values * 3, label="category",
                          features={"msg": "event.content"}, out_dir=tmp_path / "models", name="cat")
    policy = tmp_path / "policy.yaml"
    policy.write_text((FIXTURES / "policy.yaml").read_text() + f"""models:
  - name: cat
    label: category
    type: sklearn
    path: models/{trained.artifact.name}
    features: {{msg: event.content}}
""")
    out = tmp_path / "tasks.json"
    res = runner.invoke(app, ["review", "export", "--store", str(_store(tmp_path)), "--label", "category",
                              "--budget", "2", "--strategy", "disagreement", "--dedup-field", "content",
                              "--output", str(out), "--policy", str(policy)])
    assert res.exit_code == 0, res.output
    # The storage line (rule KERNSTOR, model KERNDTLB) and the ciod line (default none, model APPREAD);
    # without the model the TLB line, where two rules conflict, would lead.
    assert {t["data"]["content"] for t in orjson.loads(out.read_bytes())} == {
        "data storage interrupt", "ciod: failed to read message prefix on control stream"}
