"""The whole loop through the CLI and the real engine: label --record, review, import, train, relabel, report."""

from __future__ import annotations

from pathlib import Path

import orjson
from typer.testing import CliRunner

from activelabel.cli.main import _register, app
from activelabel.engine import Labeler
from activelabel.quality.store import DecisionStore

FIXTURES = Path(__file__).parent / "fixtures" / "loop"
_register()
runner = CliRunner()


def _ok(*args: str) -> str:
    res = runner.invoke(app, list(args))
    assert res.exit_code == 0, (args, res.output, res.stderr)
    return res.stdout


def test_review_train_relabel_loop_fixes_what_the_rules_missed(tmp_path):
    """Rules miss APPREAD; one review round plus rule labels trains a model that labels it, and the report shows it."""
    db, events = tmp_path / "loop.db", str(FIXTURES / "alerts.jsonl")
    truth = {t["id"]: t["value"] for t in map(orjson.loads, (FIXTURES / "alerts.truth.jsonl").read_bytes().splitlines())}
    _ok("label", "--policy", str(FIXTURES / "policy.yaml"), "--record", str(db), "--id-field", "id",
        "--output", str(tmp_path / "round0.jsonl"), "--quiet", events)

    tasks_path = tmp_path / "tasks.json"
    _ok("review", "export", "--store", str(db), "--label", "category", "--budget", "3", "--dedup-field", "content",
        "--text-field", "content", "--output", str(tasks_path), "--policy", str(FIXTURES / "policy.yaml"))
    tasks = orjson.loads(tasks_path.read_bytes())
    for n, task in enumerate(tasks):  # a person answers in Label Studio; this is its export
        task.update(id=n, annotations=[{"id": n, "completed_by": 1, "was_cancelled": False, "result": [
            {"from_name": "category", "to_name": "text", "type": "choices",
             "value": {"choices": [truth[task["data"]["activelabel_id"]]]}}]}])
    export = tmp_path / "export.json"
    export.write_bytes(orjson.dumps(tasks))
    _ok("review", "import", str(export), "--store", str(db))

    _ok("train", "--store", str(db), "--label", "category", "--out", str(tmp_path / "models"), "--name", "cat",
        "--feature", "msg=event.content", "--feature", "level=event.level", "--rule-labels", "0.8")
    (artifact,) = (tmp_path / "models").glob("cat-*.joblib")
    version = orjson.loads(artifact.with_name(artifact.stem + ".card.json").read_bytes())["version"]
    policy = tmp_path / "policy.yaml"
    policy.write_text((FIXTURES / "policy.yaml").read_text() + f"""models:
  - name: cat
    label: category
    type: sklearn
    path: models/{artifact.name}
    features: {{msg: event.content, level: event.level}}
    min_confidence: 0.5
""")
    _ok("label", "--policy", str(policy), "--record", str(db), "--id-field", "id", "--explain",
        "--output", str(tmp_path / "round1.jsonl"), "--quiet", events)

    relabeled = {r["id"]: r for r in map(orjson.loads, (tmp_path / "round1.jsonl").read_bytes().splitlines())}
    assert relabeled["e07"]["labels"]["category"] == "APPREAD"
    assert relabeled["e07"]["label_meta"]["labels"]["category"]["source"] == f"model:cat@{version}"
    assert relabeled["e01"]["labels"]["category"] == "KERNDTLB"  # the rule still comes first

    with DecisionStore(db) as store:
        for rid, value in truth.items():
            if (rid, "category") not in store.truth_map():
                store.add_ground_truth(rid, "category", value, how="test")
    report = orjson.loads(_ok("report", "--store", str(db), "--json", "--label", "category"))
    cat = report["labels"]["category"]
    assert cat["quality"]["accuracy"] == 1.0
    assert cat["sources"][f"model:cat@{version}"]["correct"] >= 2

    # Decisions record every candidate (explain()["candidates"]), so the store alone counts
    # the model's own predictions also where a rule won; re-running the policy agrees.
    full = orjson.loads(_ok("report", "--store", str(db), "--json", "--label", "category", "--policy", str(policy)))
    model_full = full["labels"]["category"]["sources"][f"model:cat@{version}"]
    model_won = cat["sources"][f"model:cat@{version}"]
    assert model_won["correct"] == model_full["correct"] and model_full["incorrect"] == 0
    assert set(model_full["polarity"]) == set(model_won["polarity"])
    assert model_won["overlaps"] > 0

    stats = Labeler.from_file(policy).stats()
    assert stats.models["cat"]["breaker"]["state"] == "closed"
