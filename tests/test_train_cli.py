"""`activelabel train`: a model from ground truth, a versioned artifact and model card, ready for the policy."""

from __future__ import annotations

from pathlib import Path

import orjson
from typer.testing import CliRunner

from activelabel.cli.main import _register, app
from activelabel.models import build_model_labelers
from activelabel.policy import load_policy
from activelabel.quality.store import DecisionStore

FIXTURES = Path(__file__).parent / "fixtures" / "loop"
_register()
runner = CliRunner()


def _store_with_truth(tmp_path: Path, copies: int = 3) -> Path:
    """Decisions and truth for the fixture events, repeated with distinct ids so a holdout exists."""
    path = tmp_path / "decisions.db"
    rows = [orjson.loads(line) for line in (FIXTURES / "decisions.jsonl").read_bytes().splitlines()]
    truth = {t["id"]: t["value"] for t in map(orjson.loads, (FIXTURES / "alerts.truth.jsonl").read_bytes().splitlines())}
    with DecisionStore(path, policy=load_policy(FIXTURES / "policy.yaml")) as store:
        for c in range(copies):
            store.record_many((f"{r['id']}-{c}", {**r["event"], "id": f"{r['id']}-{c}"}, r["decision"]) for r in rows)
            for r in rows:
                store.add_ground_truth(f"{r['id']}-{c}", "category", truth[r["id"]])
    return path


def _policy_with_model(tmp_path: Path, artifact: str, mtype: str = "sklearn") -> Path:
    base = (FIXTURES / "policy.yaml").read_text()
    policy = tmp_path / "policy.yaml"
    policy.write_text(base + f"""models:
  - name: category_model
    label: category
    type: {mtype}
    path: {artifact}
    features:
      msg: event.content
      level: event.level
    min_confidence: 0.5
""")
    return policy


def test_train_writes_artifact_and_model_card_and_prints_the_policy_snippet(tmp_path):
    """Training from the store writes <name>-<version>.joblib and a card with classes, data hash, holdout, time, policy."""
    db = _store_with_truth(tmp_path)
    res = runner.invoke(app, ["train", "--store", str(db), "--label", "category", "--out", str(tmp_path / "models"),
                              "--feature", "msg=event.content", "--feature", "level=event.level",
                              "--policy", str(FIXTURES / "policy.yaml")])
    assert res.exit_code == 0, res.output
    (card_path,) = (tmp_path / "models").glob("*.card.json")
    card = orjson.loads(card_path.read_bytes())
    assert card["classes"] == ["APPREAD", "KERNDTLB", "KERNSTOR", "none"]
    assert card["training_data"]["size"] == 36 and card["training_data"]["hash"].startswith("sha256:")
    assert card["holdout"]["size"] > 0 and card["holdout"]["accuracy"] == 1.0
    assert card["features"] == {"msg": "event.content", "level": "event.level"}
    assert card["policy_version"] == load_policy(FIXTURES / "policy.yaml").version and card["created"]
    assert (tmp_path / "models" / card["artifact"]).is_file()
    assert "models:" in res.output and "type: sklearn" in res.output and card["artifact"] in res.output


def test_the_trained_artifact_plugs_into_the_policy_and_labels_what_rules_miss(tmp_path):
    """The printed models: entry loads, and the model finds APPREAD, which no rule sets."""
    db = _store_with_truth(tmp_path)
    runner.invoke(app, ["train", "--store", str(db), "--label", "category", "--out", str(tmp_path / "models"),
                        "--name", "category_model", "--feature", "msg=event.content", "--feature", "level=event.level"])
    (artifact,) = (tmp_path / "models").glob("*.joblib")
    (lab,) = build_model_labelers(load_policy(_policy_with_model(tmp_path, f"models/{artifact.name}")))
    event = {"content": "ciod: failed to read message prefix on control stream", "level": "FATAL"}
    value, confidence = lab.predict(lab.compute_features({"event": event}))
    assert value == "APPREAD" and confidence >= 0.5


def test_train_reuses_the_policy_models_features_and_can_write_onnx(tmp_path):
    """With --policy naming a model for the label, its features are used; --model-type onnx writes an .onnx."""
    db = _store_with_truth(tmp_path)
    policy = _policy_with_model(tmp_path, "models/placeholder.joblib")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "placeholder.joblib").write_bytes(b"")
    res = runner.invoke(app, ["train", "--store", str(db), "--label", "category", "--model-type", "onnx",
                              "--out", str(tmp_path / "models"), "--policy", str(policy)])
    assert res.exit_code == 0, res.output
    (onnx,) = (tmp_path / "models").glob("category_model-*.onnx")
    card = orjson.loads(onnx.with_name(onnx.stem + ".card.json").read_bytes())
    assert card["features"] == {"msg": "event.content", "level": "event.level"} and card["model_type"] == "onnx"


def test_automatic_features_never_include_the_label_itself(tmp_path):
    """Without --feature, every scalar event field is a feature except one named like the label."""
    db = _store_with_truth(tmp_path)
    with DecisionStore(db) as store:
        store.record("leak", {"content": "x", "category": "none"}, {"labels": {"category": "none"}})
        store.add_ground_truth("leak", "category", "none")
    res = runner.invoke(app, ["train", "--store", str(db), "--label", "category", "--out", str(tmp_path / "m")])
    assert res.exit_code == 0, res.output
    (card_path,) = (tmp_path / "m").glob("*.card.json")
    assert "category" not in orjson.loads(card_path.read_bytes())["features"]


def test_train_without_two_classes_of_truth_says_to_review_more(tmp_path):
    """One class of ground truth cannot train a classifier: the error says what to do."""
    db = tmp_path / "d.db"
    with DecisionStore(db) as store:
        store.record("a", {"content": "x"}, {"labels": {"category": "none"}})
        store.add_ground_truth("a", "category", "none")
    res = runner.invoke(app, ["train", "--store", str(db), "--label", "category", "--out", str(tmp_path / "m")])
    assert res.exit_code == 1 and "at least 2 distinct values" in res.stderr and "review more" in res.stderr


def test_online_river_model_learns_from_feedback_as_it_arrives(tmp_path):
    """`feedback add --learn` updates a river model of the policy in place; it then predicts the new truth."""
    db = _store_with_truth(tmp_path, copies=1)
    res = runner.invoke(app, ["train", "--store", str(db), "--label", "category", "--model-type", "river",
                              "--out", str(tmp_path / "models"), "--name", "category_model",
                              "--feature", "msg=event.content", "--feature", "level=event.level"])
    assert res.exit_code == 0, res.output
    (artifact,) = (tmp_path / "models").glob("*.river.joblib")
    policy = _policy_with_model(tmp_path, f"models/{artifact.name}", mtype="river")
    with DecisionStore(db) as store:
        store.record("new", {"content": "rts panic! - stopping execution", "level": "FATAL"},
                     {"labels": {"category": "none"}})
    for _ in range(6):
        res = runner.invoke(app, ["feedback", "add", "--store", str(db), "--id", "new", "--label", "category",
                                  "--value", "KERNSTOR", "--policy", str(policy), "--learn"])
        assert res.exit_code == 0 and "learned from 1 item" in res.output
    (lab,) = build_model_labelers(load_policy(policy))
    features = lab.compute_features({"event": {"content": "rts panic! - stopping execution", "level": "FATAL"}})
    assert lab.predict(features)[0] == "KERNSTOR"


def test_rule_labels_let_a_first_model_learn_what_rules_assert(tmp_path):
    """--rule-labels adds confidently rule-labeled lines to the ground truth, so one reviewed class suffices."""
    db = tmp_path / "d.db"
    rows = [orjson.loads(line) for line in (FIXTURES / "decisions.jsonl").read_bytes().splitlines()]
    with DecisionStore(db) as store:
        store.record_many((r["id"], r["event"], r["decision"]) for r in rows)
        store.add_ground_truth("e03", "category", "none")
    res = runner.invoke(app, ["train", "--store", str(db), "--label", "category", "--out", str(tmp_path / "m"),
                              "--feature", "msg=event.content", "--rule-labels", "0.8"])
    assert res.exit_code == 0, res.output
    assert "(5 from rules)" in res.output
    (card_path,) = (tmp_path / "m").glob("*.card.json")
    assert orjson.loads(card_path.read_bytes())["classes"] == ["KERNDTLB", "KERNSTOR", "none"]


def test_online_learning_bumps_the_card_version_by_items_learned(tmp_path):
    """After online updates the model card's version says how many items were learned since training."""
    db = _store_with_truth(tmp_path, copies=1)
    runner.invoke(app, ["train", "--store", str(db), "--label", "category", "--model-type", "river",
                        "--out", str(tmp_path / "models"), "--name", "category_model",
                        "--feature", "msg=event.content", "--feature", "level=event.level"])
    (artifact,) = (tmp_path / "models").glob("*.river.joblib")
    policy = _policy_with_model(tmp_path, f"models/{artifact.name}", mtype="river")
    base = orjson.loads(artifact.with_name(artifact.stem + ".card.json").read_bytes())["version"]
    res = runner.invoke(app, ["train", "--store", str(db), "--label", "category", "--online", "--policy", str(policy)])
    assert res.exit_code == 0 and "learned from 12 item(s)" in res.output
    (lab,) = build_model_labelers(load_policy(policy))
    assert lab.version == f"{base}+12"


def test_a_model_bearing_policy_works_from_another_folder_and_train_prints_its_path_from_the_policy(tmp_path, monkeypatch):
    """`train --policy proj/policy.yaml` prints a path relative to proj/, and `validate`/`label` of
    proj/policy.yaml then load the model when run from the parent folder (the folder is not joined twice)."""
    db = _store_with_truth(tmp_path)
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "policy.yaml").write_text((FIXTURES / "policy.yaml").read_text())
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    res = runner.invoke(app, ["train", "--store", str(db), "--label", "category", "--out", "../proj/models",
                              "--name", "category_model", "--feature", "msg=event.content",
                              "--feature", "level=event.level", "--policy", "../proj/policy.yaml"])
    assert res.exit_code == 0, res.output
    (artifact,) = (proj / "models").glob("*.joblib")
    assert f"path: models/{artifact.name}" in res.stdout
    snippet = res.stdout[res.stdout.index("models:"):]
    with (proj / "policy.yaml").open("a") as fh:
        fh.write(snippet)
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["validate", "--no-tests", "proj/policy.yaml"])
    assert res.exit_code == 0, res.output
    events = tmp_path / "events.jsonl"
    events.write_text(orjson.dumps({"content": "ciod: failed to read message prefix on control stream",
                                    "level": "FATAL"}).decode() + "\n")
    res = runner.invoke(app, ["label", "-p", "proj/policy.yaml", str(events), "-o", "out.jsonl", "-q"])
    assert res.exit_code == 0, res.output
    (line,) = (tmp_path / "out.jsonl").read_bytes().splitlines()
    assert orjson.loads(line)["labels"]["category"] == "APPREAD"
