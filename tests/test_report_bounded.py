"""The quality report stays the same size however many distinct values a label has.

Free-form string labels can take one value per record; every table and plot of the report
shows the top values by name and folds the rest into one ``(other)`` row, so memory grows
with the number of records, not with the square of the number of values.
"""

from __future__ import annotations

import random
import resource
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from sklearn.metrics import f1_score
from typer.testing import CliRunner

from activelabel.cli.main import _register, app
from activelabel.quality.store import DecisionStore

REPO = Path(__file__).resolve().parents[1]
TOP_VALUES = 20  # values shown by name (docs/quality.md); the rest are one row named:
OTHER = "(other)"
_register()
runner = CliRunner()


def free_form_store(path: Path, n: int, seed: int = 7) -> tuple[Path, list[str], list[str]]:
    """A real store of ``n`` decisions, each with its own free-form `note` value; a fifth have ground
    truth (half agreeing, half a value of their own). Returns the path and the judged (truth, predicted)."""
    rng = random.Random(seed)
    rows, truths, preds = [], [], []
    for i in range(n):
        value = f"free text {i} {rng.getrandbits(32):08x}"
        rule = f"rule:r{i % 7}"
        rows.append((f"id{i}", {"message": f"event {i}", "level": rng.choice(["INFO", "WARN", "ERROR"])},
                     {"labels": {"note": value}, "sources": {"note": rule}, "confidences": {"note": 0.8},
                      "explain": {"labels": {"note": {"value": value, "source": rule, "matched": [rule], "lost": []}}}}))
    with DecisionStore(path) as store:
        store.record_many(rows)
        for i in range(0, n, 5):
            truth = rows[i][2]["labels"]["note"] if i % 10 else f"truth {i}"
            store.add_ground_truth(f"id{i}", "note", truth)
            truths.append(truth)
            preds.append(rows[i][2]["labels"]["note"])
    return path, truths, preds


def test_every_report_table_is_bounded_and_the_figures_stay_exact(tmp_path):
    """With 1,500 distinct values the JSON report shows at most the top values plus `(other)` in the
    confusion matrix, per-value table, distribution, timeline and drift bins; accuracy and macro-F1
    are still computed over every value."""
    db, truths, preds = free_form_store(tmp_path / "s.db", 1500)
    res = runner.invoke(app, ["report", "--store", str(db), "--json", "--drift-field", "event.message"])
    assert res.exit_code == 0, res.output
    note = orjson.loads(res.stdout)["labels"]["note"]
    q = note["quality"]
    confusion = q["confusion"]
    assert len(confusion["values"]) == TOP_VALUES + 1 and confusion["values"][-1] == OTHER
    assert all(len(row) == TOP_VALUES + 1 for row in confusion["matrix"])
    assert sum(map(sum, confusion["matrix"])) == q["n"] == 300  # every judged item is counted once
    assert len(q["per_value"]) == TOP_VALUES + 1 and q["per_value"][OTHER]["values"] == q["values_total"] - TOP_VALUES
    assert q["values_total"] == len(set(truths) | set(preds))
    assert q["accuracy"] == pytest.approx(sum(t == p for t, p in zip(truths, preds)) / len(truths))
    assert q["macro_f1"] == pytest.approx(f1_score(truths, preds, average="macro", zero_division=0))
    assert len(note["distribution"]) == TOP_VALUES + 1 and sum(note["distribution"].values()) == 1500
    assert len(note["timeline"]["values"]) == TOP_VALUES + 1
    assert all(sum(row) == pytest.approx(1.0) for row in note["timeline"]["shares"])
    report = orjson.loads(res.stdout)
    for check in (report["drift"]["labels"]["note"], report["drift"]["features"]["event.message"]):
        # Values too rare to judge drift on (here: every one of them) fold into `(other)` too.
        assert len(check["bins"]) <= TOP_VALUES + 1 and check["bins"][-1] == OTHER and check["values_total"] == 1500


def test_terminal_report_names_the_folded_values(tmp_path):
    """The terminal per-value table ends with one row saying how many more values it stands for."""
    db, _, _ = free_form_store(tmp_path / "s.db", 600)
    res = runner.invoke(app, ["report", "--store", str(db)])
    assert res.exit_code == 0, res.output
    assert f"{OTHER}: " in res.stdout and "more values" in res.stdout
    assert f"top {TOP_VALUES} of" in res.stdout


def _limit_address_space() -> None:
    # 2 GiB of address space: enough for the interpreter, polars, numpy and matplotlib; a
    # report that grows with the square of 5,000 values cannot fit and fails instead of
    # taking the machine's memory.
    limit = 2 * 1024**3
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def test_html_report_of_5000_free_form_values_fits_in_bounded_memory(tmp_path):
    """`report --html` over 5,000 decisions with a distinct string label each completes within a
    2 GiB address-space limit (the quadratic report ran out of it), with the confusion plot embedded."""
    db, _, _ = free_form_store(tmp_path / "s.db", 5000)
    html = tmp_path / "r.html"
    proc = subprocess.run([sys.executable, "-m", "activelabel", "report", "--store", str(db), "--html", str(html)],
                          cwd=tmp_path, env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=300, preexec_fn=_limit_address_space, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    page = html.read_text()
    assert "note confusion matrix" in page and "data:image/png;base64," in page
    assert f"{OTHER}: " in page


def test_drift_bins_name_the_folded_rest_once(tmp_path):
    """A label with 25 common values and a long tail: the drift check folds the tail into `(other)` and the
    report's bounded bins fold nothing twice, so `(other)` is one bin and the shares still add up to 1."""
    rng = random.Random(3)
    values = [f"common{i % 25}" for i in range(1000)] + [f"rare{i}" for i in range(200)]
    rng.shuffle(values)
    db = tmp_path / "s.db"
    with DecisionStore(db) as store:
        store.record_many((f"id{i}", {"n": i}, {"labels": {"kind": v}, "sources": {"kind": "rule:r"}})
                          for i, v in enumerate(values))
    res = runner.invoke(app, ["report", "--store", str(db), "--json"])
    assert res.exit_code == 0, res.output
    check = orjson.loads(res.stdout)["drift"]["labels"]["kind"]
    assert check["bins"].count(OTHER) == 1 and len(check["bins"]) == len(set(check["bins"])) == TOP_VALUES + 1
    assert sum(check["reference_shares"]) == pytest.approx(1.0, abs=0.01)
    assert sum(check["current_shares"]) == pytest.approx(1.0, abs=0.01)
