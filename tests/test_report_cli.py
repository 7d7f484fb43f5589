"""`activelabel report`: accuracy, F1, confusion, coverage, LF summary, conflicts, drift; terminal, JSON, HTML."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from activelabel.cli.main import _register, app
from activelabel.quality.drift import drift_check, js_distance, psi
from activelabel.quality.store import DecisionStore

FIXTURES = Path(__file__).parent / "fixtures" / "loop"
_register()
runner = CliRunner()


def _store_with_truth(tmp_path: Path) -> Path:
    path = tmp_path / "decisions.db"
    rows = [orjson.loads(line) for line in (FIXTURES / "decisions.jsonl").read_bytes().splitlines()]
    truth = [orjson.loads(line) for line in (FIXTURES / "alerts.truth.jsonl").read_bytes().splitlines()]
    from activelabel.policy import load_policy

    with DecisionStore(path, policy=load_policy(FIXTURES / "policy.yaml")) as store:
        # Two windows an hour apart: the drift reference and the current window.
        store.record_many(((r["id"], r["event"], r["decision"]) for r in rows[:6]), ts=1_790_000_000.0)
        store.record_many(((r["id"], r["event"], r["decision"]) for r in rows[6:]), ts=1_790_003_600.0)
        for t in truth:
            store.add_ground_truth(t["id"], t["label"], t["value"])
    return path


def _json_report(db: Path, *args: str) -> dict:
    res = runner.invoke(app, ["report", "--store", str(db), "--json", *args])
    assert res.exit_code == 0, res.output
    return orjson.loads(res.stdout)


def test_report_gives_accuracy_f1_confusion_and_coverage_per_label(tmp_path):
    """Rules get 10 of 12 right (APPREAD lines fall to the default): accuracy, per-value F1 and confusion say so."""
    rep = _json_report(_store_with_truth(tmp_path))
    cat = rep["labels"]["category"]
    q = cat["quality"]
    assert q["n"] == 12 and q["accuracy"] == pytest.approx(10 / 12)
    assert q["per_value"]["APPREAD"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    assert q["per_value"]["KERNDTLB"]["f1"] == 1.0
    values = q["confusion"]["values"]
    assert q["confusion"]["matrix"][values.index("APPREAD")][values.index("none")] == 2
    assert q["macro_f1"] == pytest.approx((1 + 1 + 0 + 2 * 5 / 7 * 1 / (5 / 7 + 1)) / 4)
    assert cat["coverage"] == 1.0 and cat["coverage_non_default"] == pytest.approx(5 / 12)


def test_report_has_a_snorkel_style_summary_per_source(tmp_path):
    """Per rule: polarity, coverage, overlaps, conflicts, correct, incorrect and empirical accuracy."""
    rep = _json_report(_store_with_truth(tmp_path))
    src = rep["labels"]["category"]["sources"]
    assert set(src) == {"rule:tlb", "rule:storage", "rule:any-interrupt"}
    anyint = src["rule:any-interrupt"]
    assert anyint["polarity"] == ["KERNSTOR"] and anyint["coverage"] == pytest.approx(5 / 12)
    assert anyint["overlaps"] == pytest.approx(5 / 12) and anyint["conflicts"] == pytest.approx(3 / 12)
    assert (anyint["correct"], anyint["incorrect"], anyint["empirical_accuracy"]) == (2, 3, 0.4)
    assert src["rule:tlb"]["empirical_accuracy"] == 1.0
    assert rep["labels"]["category"]["conflict_rate"] == pytest.approx(3 / 12)


def test_report_flags_drift_between_windows_with_evidently_thresholds(tmp_path):
    """Severity shifts from mostly fatal to mostly info between windows: PSI and JS flag it; a steady field does not."""
    rep = _json_report(_store_with_truth(tmp_path), "--drift-field", "event.level", "--drift-field", "event.component")
    sev = rep["drift"]["labels"]["severity"]
    assert sev["drifted"] and sev["psi"] >= 0.1 and sev["psi_threshold"] == 0.1 and sev["js_threshold"] == 0.1
    assert rep["drift"]["features"]["event.level"]["drifted"]
    assert rep["drift"]["features"]["event.component"]["psi"] > 0  # APP appears only in the current window


def test_terminal_report_prints_tables(tmp_path):
    """Without --json the report is rich tables: labels, per value, confusion, sources, drift."""
    res = runner.invoke(app, ["report", "--store", str(_store_with_truth(tmp_path))])
    assert res.exit_code == 0, res.output
    for title in ("Labels", "category: per value", "category: confusion", "category: sources (LF summary)", "Drift"):
        assert title in res.output


def test_html_report_is_self_contained_with_its_plots(tmp_path):
    """--html writes one page with the confusion heatmap, source and timeline plots embedded as PNG data."""
    html = tmp_path / "report.html"
    res = runner.invoke(app, ["report", "--store", str(_store_with_truth(tmp_path)), "--html", str(html),
                              "--drift-field", "event.level"])
    assert res.exit_code == 0, res.output
    page = html.read_text()
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,', page)
    assert {"drift", "category confusion matrix", "category sources", "category over time"} <= set(images)
    assert "http://" not in page and "https://" not in page


def test_report_from_labeled_jsonl_and_truth_jsonl(tmp_path):
    """The report also runs over `label --explain` output plus a truth file, ids from --id-field."""
    labeled = tmp_path / "labeled.jsonl"
    rows = [orjson.loads(line) for line in (FIXTURES / "decisions.jsonl").read_bytes().splitlines()]
    labeled.write_bytes(b"".join(orjson.dumps({**r["event"], "labels": r["decision"]["labels"],
                                               "label_meta": r["decision"]["explain"]}) + b"\n" for r in rows))
    res = runner.invoke(app, ["report", "--labeled", str(labeled), "--truth", str(FIXTURES / "alerts.truth.jsonl"),
                              "--id-field", "id", "--json", "--label", "category"])
    assert res.exit_code == 0, res.output
    rep = orjson.loads(res.stdout)
    assert rep["labels"]["category"]["quality"]["accuracy"] == pytest.approx(10 / 12)
    assert rep["labels"]["category"]["sources"]["rule:tlb"]["correct"] == 3


def test_psi_and_js_distance_match_hand_computed_values():
    """PSI and JS distance on a two-bin shift equal the textbook formulas; identical windows give 0."""
    ref, cur = ["a"] * 50 + ["b"] * 50, ["a"] * 80 + ["b"] * 20
    import math

    expected_psi = (0.8 - 0.5) * math.log(0.8 / 0.5) + (0.2 - 0.5) * math.log(0.2 / 0.5)
    assert psi(ref, cur) == pytest.approx(expected_psi)
    assert psi(ref, ref) == 0.0 and js_distance(ref, ref) == 0.0
    assert 0.1 < js_distance(ref, cur) < 0.3
    numeric = drift_check("n", list(range(100)), [x + 60 for x in range(100)])
    assert numeric["drifted"] and len(numeric["bins"]) > 2


def test_time_field_orders_windows_by_event_time(tmp_path):
    """With --time-field the reference window is the earliest events by their own clock, not by recording."""
    db = tmp_path / "t.db"
    with DecisionStore(db) as store:
        # Recorded newest first: recording order and event order disagree.
        for i in range(20):
            value = "late" if i < 10 else "early"
            store.record(f"r{i}", {"t": 2000 - i, "v": value}, {"labels": {"phase": value}}, ts=1_790_000_000.0 + i)
    by_event = _json_report(db, "--time-field", "event.t", "--drift-field", "event.v")
    shares = dict(zip(by_event["drift"]["features"]["event.v"]["bins"],
                      by_event["drift"]["features"]["event.v"]["reference_shares"]))
    assert shares["early"] == 1.0
    by_record = _json_report(db, "--drift-field", "event.v")
    shares = dict(zip(by_record["drift"]["features"]["event.v"]["bins"],
                      by_record["drift"]["features"]["event.v"]["reference_shares"]))
    assert shares["late"] == 1.0


def test_psi_and_js_are_non_negative_and_js_is_bounded():
    """Property: PSI ≥ 0 and 0 ≤ JS distance ≤ 1 for any two categorical windows."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    window = st.lists(st.sampled_from("abcde"), min_size=1, max_size=60)

    @settings(max_examples=80, deadline=None)
    @given(window, window)
    def check(ref, cur):
        assert psi(ref, cur) >= -1e-12
        assert -1e-12 <= js_distance(ref, cur) <= 1.0 + 1e-12

    check()


def test_report_truth_file_refuses_bad_lines_one_by_one_and_uses_the_rest(tmp_path):
    """A truth file with a broken line and a line without `value` still gives a report over the good
    lines, and names each refused line with its reason on stderr."""
    labeled = tmp_path / "labeled.jsonl"
    rows = [orjson.loads(line) for line in (FIXTURES / "decisions.jsonl").read_bytes().splitlines()]
    labeled.write_bytes(b"".join(orjson.dumps({**r["event"], "labels": r["decision"]["labels"],
                                               "label_meta": r["decision"]["explain"]}) + b"\n" for r in rows))
    good = (FIXTURES / "alerts.truth.jsonl").read_text().splitlines()
    truth = tmp_path / "truth.jsonl"
    truth.write_text("\n".join([good[0], '{"id": "e02", "label": "category"', '{"id": "e03", "label": "category"}',
                                *good[1:]]) + "\n")
    res = runner.invoke(app, ["report", "--labeled", str(labeled), "--truth", str(truth), "--id-field", "id",
                              "--json", "--label", "category"])
    assert res.exit_code == 0, res.output
    rep = orjson.loads(res.stdout)
    assert rep["ground_truth"] == len(good) and rep["truth_rejected"]["count"] == 2
    assert rep["labels"]["category"]["quality"]["accuracy"] == pytest.approx(10 / 12)
    assert "truth.jsonl:2: not valid JSON" in res.stderr
    assert "truth.jsonl:3: expected an object with id, label and value" in res.stderr
    assert "[yellow]" not in res.stderr
