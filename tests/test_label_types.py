"""One home for label types: policy, engine and feedback agree on what a label accepts and produces."""

from __future__ import annotations

from pathlib import Path

import httpx
import orjson
import pytest
from typer.testing import CliRunner

from activelabel import Labeler
from activelabel.cli.main import _register, app
from activelabel.errors import FeedbackError
from activelabel.policy import label_types, load_policy
from activelabel.quality.store import DecisionStore
from activelabel.service import ServiceConfig, create_app
from activelabel.service.config import StoreConfig
from activelabel.service.testing import serve_in_thread

_register()
runner = CliRunner()

POLICY = """\
apiVersion: activelabel/v1
kind: Policy
metadata: {name: bands}
labels:
  size_band:
    type: bucket
    from: event.size
    bounds: [0.5, 10, 1e3]
  tier:
    type: enum
    values: [gold, silver]
rules:
  - id: gold
    label: tier
    value: gold
    when: event.size > 5
"""


def _labeled_store(tmp_path: Path) -> tuple[Path, Path]:
    """A policy file and a store holding the decisions `activelabel label --record` made for three events."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    events = tmp_path / "events.jsonl"
    events.write_text("\n".join(orjson.dumps({"id": f"e{i}", "size": s}).decode() for i, s in enumerate([0.1, 20, 5000])) + "\n")
    db = tmp_path / "decisions.db"
    res = runner.invoke(app, ["label", str(events), "--policy", str(policy), "--output", str(tmp_path / "out.jsonl"),
                              "--record", str(db), "--id-field", "id", "--quiet"])
    assert res.exit_code == 0, res.output
    return policy, db


def test_feedback_accepts_the_bucket_name_the_label_produces_as_written_in_bounds(tmp_path):
    """With `bounds: [0.5, 10, 1e3]` the label says `>=1e3`, and `feedback add` accepts exactly that name."""
    policy, db = _labeled_store(tmp_path)
    produced = [orjson.loads(line)["labels"]["size_band"] for line in (tmp_path / "out.jsonl").read_bytes().splitlines()]
    assert produced == ["<0.5", "10-1e3", ">=1e3"]
    ok = runner.invoke(app, ["feedback", "add", "--store", str(db), "--id", "e2", "--label", "size_band",
                             "--value", ">=1e3", "--policy", str(policy)])
    assert ok.exit_code == 0, ok.output
    with DecisionStore(db) as store:
        assert store.truth_map() == {("e2", "size_band"): ">=1e3"}


def test_feedback_refuses_a_bucket_name_the_policy_never_produces(tmp_path):
    """`>=1000` is not a name of `bounds: [0.5, 10, 1e3]`: `feedback import` refuses it with the real names."""
    policy, db = _labeled_store(tmp_path)
    truth = tmp_path / "truth.jsonl"
    truth.write_text('{"id": "e2", "label": "size_band", "value": ">=1000"}\n'
                     '{"id": "e1", "label": "size_band", "value": "10-1e3"}\n')
    res = runner.invoke(app, ["feedback", "import", str(truth), "--store", str(db), "--policy", str(policy)])
    assert res.exit_code == 0, res.output
    assert "value '>=1000' is outside label 'size_band'" in res.stderr and ">=1e3" in res.stderr
    with DecisionStore(db) as store:
        assert store.truth_map() == {("e1", "size_band"): "10-1e3"}
        with pytest.raises(FeedbackError, match="outside label 'size_band'"):
            store.add_ground_truth("e0", "size_band", "<0.50")


def test_the_service_takes_feedback_in_the_bucket_names_it_labels_with(tmp_path):
    """Over HTTP, `/v1/label` answers `>=1e3`, and `/v1/feedback` accepts that name and refuses `>=1000`."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    config = ServiceConfig(store=StoreConfig(path=str(tmp_path / "d.db"), id_field="id"))
    with serve_in_thread(create_app(policy, config=config, no_auth=True)) as url, httpx.Client(base_url=url) as client:
        labeled = client.post("/v1/label", json={"id": "big", "size": 5000}).json()
        assert labeled["labels"]["size_band"] == ">=1e3"
        r = client.post("/v1/feedback", json={"items": [{"id": "big", "label": "size_band", "value": ">=1000"},
                                                         {"id": "big", "label": "size_band", "value": ">=1e3"}]})
    body = r.json()
    assert r.status_code == 200 and body["accepted"] == 1
    assert [x["index"] for x in body["rejected"]] == [0] and "outside label 'size_band'" in body["rejected"][0]["reason"]


def test_policy_engine_and_store_share_the_bucket_names(tmp_path):
    """The names the policy declares, the engine produces and the store accepts are one list."""
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    policy = load_policy(path)
    spec = policy.labels["size_band"]
    names = label_types.allowed_values(spec)
    assert names == ("<0.5", "0.5-10", "10-1e3", ">=1e3")
    lab = Labeler(policy)
    got = [lab.label({"size": x}).labels["size_band"] for x in (0.1, 0.5, 9.99, 10, 999, 1000, 1e9)]
    assert got == ["<0.5", "0.5-10", "0.5-10", "10-1e3", "10-1e3", ">=1e3", ">=1e3"]
    assert got == [lab.label_exact({"size": x})["size_band"] for x in (0.1, 0.5, 9.99, 10, 999, 1000, 1e9)]
    with DecisionStore(tmp_path / "d.db", policy=policy) as store:
        assert store.registry().labels["size_band"].values == list(names)


@pytest.mark.parametrize(("label_type", "value", "fits"), [
    ("int", 3, True), ("int", True, False), ("int", 3.0, False),
    ("float", 3, True), ("float", False, False), ("bool", 1, False),
    ("string", "x", True), ("string", 1, False), ("enum", "gold", True), ("enum", "GOLD", False),
])
def test_fits_and_convert_give_the_same_answer(label_type, value, fits):
    """A value fits a type exactly when converting it to the type succeeds (ints held by float labels become floats)."""
    allowed = ("gold", "silver")
    assert label_types.fits(label_type, value, allowed) is fits
    converted = label_types.convert(label_type, value, allowed)
    assert (converted is not label_types.NO_FIT) is fits
    if fits and label_type == "float":
        assert converted.__class__ is float


def test_a_rule_value_outside_the_enum_is_an_error_on_the_fast_and_exact_paths(tmp_path):
    """A `value_expr` giving a value the label does not take is counted as an error on both paths, never stored."""
    path = tmp_path / "p.yaml"
    path.write_text(POLICY.replace("    value: gold\n", "    value_expr: event.tier\n"))
    lab = Labeler(load_policy(path))
    for event in ({"size": 20, "tier": "GOLD"}, {"size": 20, "tier": 1}):
        assert "tier" not in lab.label(event).labels
        assert "tier" not in lab.label_exact(event)
    assert lab.label({"size": 20, "tier": "silver"}).labels["tier"] == "silver"


@pytest.mark.parametrize(("label_type", "value"), [
    ("bool", True), ("bool", False), ("int", -42), ("float", 0.5), ("float", 1e20),
    ("string", "a b"), ("enum", "gold"), ("bucket", ">=1e3"),
])
def test_a_value_written_as_text_reads_back_as_the_same_value(label_type, value):
    """What the service writes into headers and Kubernetes labels parses back, as feedback, to the value itself."""
    allowed = ("gold", "silver", ">=1e3")
    text = label_types.value_text(value)
    assert isinstance(text, str)
    back = label_types.parse_value(label_type, text, allowed)
    assert back == value and back.__class__ is value.__class__
