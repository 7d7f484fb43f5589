"""Model labelers: real sklearn (joblib, skops), ONNX and river artifacts, loaded from a policy."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from types import SimpleNamespace

import joblib
import numpy as np
import orjson
import pytest
from sklearn.linear_model import LogisticRegression

from activelabel import Labeler
from activelabel.errors import PolicyError
from activelabel.models import ArtifactModelLabeler, CircuitBreaker, build_model_labelers, load_model_labeler
from activelabel.policy import load_policy
from activelabel.quality.training import train_model

FIXTURES = Path(__file__).parent / "fixtures" / "loop"
FEATURES = {"msg": "event.content", "level": "event.level"}


def _training_rows() -> tuple[list[dict], list[str]]:
    rows, values = [], []
    for line, truth in zip((FIXTURES / "alerts.jsonl").read_text().splitlines(),
                           (FIXTURES / "alerts.truth.jsonl").read_text().splitlines(), strict=True):
        event = orjson.loads(line)
        rows.append({"msg": event["content"], "level": event["level"]})
        values.append(orjson.loads(truth)["value"])
    return rows * 3, values * 3


def _policy(write_policy, artifact: Path, *, mtype: str = "sklearn", extra: str = "", features: dict | None = None):
    feats = "".join(f"\n      {k}: {v}" for k, v in (features or FEATURES).items())
    return write_policy(
        "apiVersion: activelabel/v1\nkind: Policy\n"
        "labels:\n  category:\n    type: enum\n    values: [KERNDTLB, KERNSTOR, APPREAD, none]\n"
        f"models:\n  - name: cat\n    label: category\n    type: {mtype}\n    path: {artifact}\n"
        f"    features:{feats}\n    {extra or 'min_confidence: 0.0'}\n"
    )


@pytest.fixture
def trained(tmp_path: Path):
    rows, values = _training_rows()
    return train_model(rows, values, label="category", features=FEATURES, out_dir=tmp_path / "models", name="cat")


def test_sklearn_model_from_policy_predicts_with_confidence_and_card_version(write_policy, trained):
    """A joblib pipeline named in the policy predicts (value, probability) and takes its version from the card."""
    (lab,) = build_model_labelers(load_policy(_policy(write_policy, trained.artifact)))
    features = lab.compute_features({"event": {"content": "data TLB error interrupt", "level": "FATAL"}})
    value, confidence = lab.predict(features)
    assert value == "KERNDTLB" and 0.5 < confidence <= 1.0
    assert lab.version == trained.card["version"]
    assert lab.source == f"model:cat@{trained.card['version']}"


def test_predict_batch_calls_the_model_once_and_matches_single_predictions(write_policy, trained):
    """label_batch's model path: one model call for many rows, each row equal to predict() alone."""
    (lab,) = build_model_labelers(load_policy(_policy(write_policy, trained.artifact)))
    rows, _ = _training_rows()
    batch = lab.predict_batch(rows[:12])
    assert lab.state()["calls"] == 1 and lab.state()["rows"] == 12
    assert batch == [lab.predict(r) for r in rows[:12]]


def test_skops_artifact_loads_without_pickle(write_policy, trained, tmp_path):
    """A pipeline saved with skops loads (only sklearn/numpy types trusted) and predicts the same."""
    import skops.io as sio

    path = tmp_path / "cat.skops"
    sio.dump(joblib.load(trained.artifact), path)
    (lab,) = build_model_labelers(load_policy(_policy(write_policy, path)))
    assert lab.predict({"msg": "data storage interrupt", "level": "FATAL"})[0] == "KERNSTOR"
    assert lab.version.startswith("sha256-")  # no card next to it: the file hash


def test_onnx_artifact_from_training_predicts_like_sklearn(write_policy, tmp_path):
    """`train --model-type onnx` output (text features, ZipMap probabilities) runs in onnxruntime."""
    rows, values = _training_rows()
    onnx_model = train_model(rows, values, label="category", features=FEATURES, out_dir=tmp_path, model_type="onnx")
    (lab,) = build_model_labelers(load_policy(_policy(write_policy, onnx_model.artifact, mtype="onnx")))
    assert lab.predict({"msg": "ciod: failed to read message prefix on control stream", "level": "FATAL"})[0] == "APPREAD"
    assert lab.state()["type"] == "onnx"


def test_onnx_numeric_matrix_model_takes_features_in_declared_order(write_policy, tmp_path):
    """An ONNX model with one float matrix input gets the numeric features stacked in policy order."""
    from skl2onnx import to_onnx

    x = np.array([[0.0, 1.0], [1.0, 0.0], [0.1, 0.9], [0.9, 0.2]] * 5, dtype=np.float32)
    y = np.array(["none", "KERNDTLB", "none", "KERNDTLB"] * 5)
    path = tmp_path / "num.onnx"
    path.write_bytes(to_onnx(LogisticRegression().fit(x, y), x[:1], options={"zipmap": True}).SerializeToString())
    feats = {"a": "double(event.a)", "b": "double(event.b)"}
    (lab,) = build_model_labelers(load_policy(_policy(write_policy, path, mtype="onnx", features=feats)))
    assert lab.predict(lab.compute_features({"event": {"a": 1, "b": 0}}))[0] == "KERNDTLB"


def test_river_model_predicts_and_learns_online(write_policy, tmp_path):
    """A river model abstains on what it has not learned, then learns from feedback one item at a time."""
    rows, values = _training_rows()
    river = train_model(rows[:6], values[:6], label="category", features=FEATURES, out_dir=tmp_path,
                        model_type="river")
    (lab,) = build_model_labelers(load_policy(_policy(write_policy, river.artifact, mtype="river",
                                                      extra="min_confidence: 0.6")))
    unseen = {"msg": "ciod: failed to read message prefix on control stream", "level": "FATAL"}
    assert lab.predict(unseen) is None or lab.predict(unseen)[0] != "APPREAD"
    for _ in range(5):
        lab.learn(unseen, "APPREAD")
    assert lab.predict(unseen)[0] == "APPREAD"


def test_below_min_confidence_the_model_abstains(write_policy, trained):
    """A prediction under min_confidence is an abstention (None), counted in state()."""
    (lab,) = build_model_labelers(load_policy(_policy(write_policy, trained.artifact, extra="min_confidence: 0.999")))
    assert lab.predict({"msg": "something never seen", "level": "WARN"}) is None
    assert lab.state()["abstained_low_confidence"] == 1


def test_below_min_confidence_nearest_template_answers_the_class_of_a_trained_template_only(write_policy, trained):
    """`below_confidence: nearest-template`: an unsure model labels a line whose template it was trained on with that
    template's class (the model's own confidence, counted in state()); a line merely like one, or new, still abstains."""
    from activelabel.quality.novelty import NoveltyIndex, novelty_path_for

    rows, values = _training_rows()
    NoveltyIndex.build(rows, ["msg"], labels=values).save(novelty_path_for(trained.artifact))
    policy = load_policy(_policy(write_policy, trained.artifact,
                                 extra="min_confidence: 0.999\n    below_confidence: nearest-template"))
    assert policy.models[0].below_confidence == "nearest-template"
    (lab,) = build_model_labelers(policy)
    value, confidence = lab.predict({"msg": "data TLB error interrupt", "level": "INFO"})
    assert value == "KERNDTLB" and confidence < 0.999
    assert lab.predict({"msg": "data TLB error interrupt 12 times", "level": "INFO"}) is None  # like it, not it
    assert lab.predict({"msg": "something never seen", "level": "WARN"}) is None
    assert lab.state()["nearest_template"] == 1 and lab.state()["abstained_low_confidence"] == 2
    labeled = Labeler(policy).label({"content": "data storage interrupt", "level": "INFO"})
    assert labeled.labels["category"] == "KERNSTOR" and labeled.sources["category"].startswith("model:cat@")


def test_nearest_template_needs_the_models_novelty_index_and_a_known_value(write_policy, trained):
    """Without `<artifact>.novelty.json` the policy does not load and says who writes it; a misspelt value is refused."""
    with pytest.raises(PolicyError, match=r"novelty index .*activelabel loop"):
        build_model_labelers(load_policy(_policy(write_policy, trained.artifact,
                                                 extra="min_confidence: 0.9\n    below_confidence: nearest-template")))
    with pytest.raises(PolicyError, match=r"below_confidence.*must be one of abstain, nearest-template"):
        load_policy(_policy(write_policy, trained.artifact, extra="below_confidence: nearest"))


def test_missing_corrupt_and_mismatched_artifacts_are_policy_errors_naming_the_model(write_policy, trained, tmp_path):
    """Load refuses a missing file, a corrupt file and a model trained for other features, naming the model."""
    with pytest.raises(PolicyError, match=r"model `cat`: file .*nope.joblib. not found"):
        build_model_labelers(load_policy(_policy(write_policy, tmp_path / "nope.joblib")))
    corrupt = tmp_path / "corrupt.joblib"
    corrupt.write_bytes(b"\x80\x04 this is not a pickle")
    with pytest.raises(PolicyError, match=r"model cat: cannot load sklearn artifact"):
        build_model_labelers(load_policy(_policy(write_policy, corrupt)))
    with pytest.raises(PolicyError, match=r"model cat: trained for other features.*unknown to the model: size"):
        build_model_labelers(load_policy(_policy(write_policy, trained.artifact,
                                                 features={**FEATURES, "size": "event.size"})))


def test_artifact_without_card_trained_on_other_column_names_is_refused(write_policy, trained, tmp_path):
    """Without a model card, the pipeline's own feature_names_in_ are checked against the policy."""
    bare = tmp_path / "bare.joblib"
    shutil.copy(trained.artifact, bare)
    with pytest.raises(PolicyError, match=r"model cat: trained for other features \(the artifact\).*missing from the policy: level"):
        build_model_labelers(load_policy(_policy(write_policy, bare, features={"msg": "event.content", "lvl": "event.level"})))


def test_model_predicting_values_outside_the_enum_is_refused(write_policy, tmp_path):
    """A model whose classes are not values of its label cannot be loaded."""
    rows, values = _training_rows()
    other = train_model(rows, [v.lower() for v in values], label="category", features=FEATURES, out_dir=tmp_path)
    with pytest.raises(PolicyError, match=r"model cat: predicts values outside label category.s enum: appread, kerndtlb"):
        build_model_labelers(load_policy(_policy(write_policy, other.artifact)))


def _numeric_model(tmp_path: Path) -> Path:
    # Plain LogisticRegression, no imputer: a missing feature becomes NaN and predict raises, a real model error.
    x = np.array([[0.0], [1.0], [0.2], [0.8]] * 3)
    path = tmp_path / "plain.joblib"
    joblib.dump(LogisticRegression().fit(x, ["none", "KERNDTLB", "none", "KERNDTLB"] * 3), path)
    return path


def test_circuit_breaker_opens_after_consecutive_errors_and_recovers_after_cooldown(tmp_path):
    """After N failing calls the model is not called during the cool-down; a good trial call closes it."""
    now = [0.0]
    breaker = CircuitBreaker(failure_threshold=3, cooldown_s=10.0, clock=lambda: now[0])
    spec = SimpleNamespace(name="plain", label="category", type="sklearn", path=_numeric_model(tmp_path),
                           features={"x": "event.x"}, timeout_ms=None, on_error="abstain")
    lab = load_model_labeler(spec, breaker=breaker)
    for _ in range(3):
        assert lab.predict({"x": None}) is None
    assert lab.state()["breaker"]["state"] == "open" and lab.state()["errors"] == 3
    assert lab.predict({"x": 1.0}) is None  # open: abstains without calling the model
    assert lab.state()["abstained_breaker_open"] == 1 and lab.state()["errors"] == 3
    now[0] = 11.0
    assert lab.predict({"x": 1.0})[0] == "KERNDTLB"  # half-open trial succeeds
    assert lab.state()["breaker"]["state"] == "closed"


def test_on_error_fallback_value_is_used_when_the_model_fails(tmp_path):
    """on_error with a value answers failures with that value at confidence 0 instead of abstaining."""
    spec = SimpleNamespace(name="plain", label="category", type="sklearn", path=_numeric_model(tmp_path),
                           features={"x": "event.x"}, timeout_ms=None, on_error="none")
    lab = load_model_labeler(spec)
    assert lab.predict({"x": None}) == ("none", 0.0)
    assert lab.state()["fallbacks"] == 1 and "NaN" in lab.state()["last_error"]


class _StuckPredictor:
    """A model that hangs until released: stands in for a wedged model server."""

    kind = "sklearn"

    def __init__(self) -> None:
        self.release = threading.Event()

    def predict_proba(self, rows):
        self.release.wait(5)
        return ["none"], [[1.0] for _ in rows]


def test_timeouts_count_as_failures_and_open_the_breaker():
    """A model slower than timeout_ms abstains; enough timeouts open the breaker."""
    stuck = _StuckPredictor()
    lab = ArtifactModelLabeler(name="slow", label="category", version="1", predictor=stuck, feature_names=["x"],
                               timeout_ms=5, breaker=CircuitBreaker(failure_threshold=2, cooldown_s=60))
    try:
        assert lab.predict({"x": 1}) is None
        assert lab.predict({"x": 1}) is None
        state = lab.state()
        assert state["timeouts"] == 2 and state["breaker"]["state"] == "open"
    finally:
        stuck.release.set()
        lab.close()


def test_compiled_per_event_scorer_equals_sklearn_predict_proba(tmp_path):
    """The pure-Python scorer for trained pipelines gives sklearn's probabilities, multiclass and binary."""
    from activelabel.models._artifacts import load_predictor

    rows, values = _training_rows()
    rows = [{**r, "size": float(i % 5) if i % 4 else None} for i, r in enumerate(rows)]
    kinds = {"msg": "text", "level": "category", "size": "number"}
    feats = {"msg": "event.content", "level": "event.level", "size": "event.size"}
    for name, vals in (("multi", values), ("binary", ["alert" if v != "none" else "none" for v in values])):
        trained = train_model(rows, vals, label="category", features=feats, out_dir=tmp_path / name, feature_kinds=kinds)
        predictor = load_predictor("sklearn", trained.artifact, list(feats), trained.card)
        assert predictor._compiled is not None
        probe = [*rows, {"msg": "unseen words only", "level": "WARN", "size": "oops"}]
        compiled = predictor._compiled(probe)
        reference = joblib.load(trained.artifact).predict_proba(
            __import__("activelabel.quality.training", fromlist=["_frame"])._frame(probe, kinds))
        assert np.allclose(compiled, reference, rtol=0, atol=1e-12)


def test_batch_and_single_predictions_are_bit_identical_for_large_batches(write_policy, trained):
    """However large the batch, each row's (value, confidence) equals predict() on that row exactly."""
    (lab,) = build_model_labelers(load_policy(_policy(write_policy, trained.artifact)))
    rows, _ = _training_rows()
    rows = rows * 10
    assert lab.predict_batch(rows) == [lab.predict(r) for r in rows]


def test_labeler_label_batch_calls_each_model_once_per_batch(write_policy, trained):
    """Labeler.label_batch runs a model once for the whole batch and gives what label() gives per event."""
    policy = load_policy(_policy(write_policy, trained.artifact))
    events = [orjson.loads(line) for line in (FIXTURES / "alerts.jsonl").read_text().splitlines()]
    batch_labeler = Labeler(policy)
    batch = batch_labeler.label_batch(events)
    assert batch_labeler.stats().models["cat"]["calls"] == 1
    single_labeler = Labeler(policy)
    single = [single_labeler.label(e) for e in events]
    assert single_labeler.stats().models["cat"]["calls"] == len(events)
    assert [d.labels for d in batch] == [d.labels for d in single]
    assert [d.confidences for d in batch] == [d.confidences for d in single]
    assert all(d.sources["category"].startswith("model:cat@") for d in batch)


def _fitted_lr(n_classes: int) -> tuple[LogisticRegression, np.ndarray]:
    rng = np.random.default_rng(n_classes)
    x = rng.normal(size=(300, 3)) * [5.0, 1.0, 0.2]
    y = np.array(["none", "KERNDTLB", "APPREAD", "KERNSTOR"][:n_classes])[
        np.argmax(x @ rng.normal(size=(3, n_classes)) + rng.normal(size=(300, n_classes)), axis=1)]
    return LogisticRegression(max_iter=1000).fit(x, y), x


@pytest.mark.parametrize("n_classes", [2, 3, 4])
def test_a_bare_logistic_regression_is_scored_in_python_like_predict_proba(write_policy, tmp_path, n_classes):
    """An unnamed-matrix LogisticRegression gets sklearn's probabilities from a dot product, without a watchdog thread."""
    model, x = _fitted_lr(n_classes)
    path = tmp_path / "num.joblib"
    joblib.dump(model, path)
    feats = {"a": "double(event.a)", "b": "double(event.b)", "c": "double(event.c)"}
    (lab,) = build_model_labelers(load_policy(_policy(write_policy, path, features=feats, extra="timeout_ms: 50")))
    rows = [{"a": float(r[0]), "b": float(r[1]), "c": float(r[2])} for r in x[:100]]
    threads_before = set(threading.enumerate())
    got = lab.predictor.predict_proba(rows)[1]
    assert np.allclose(got, model.predict_proba(x[:100]), rtol=0, atol=1e-12)
    assert [v for v, _ in lab.predict_batch(rows)] == list(model.predict(x[:100]))
    assert not set(threading.enumerate()) - threads_before  # called inline (it cannot hang): no watchdog thread
    # A feature the model cannot take (missing) is a model error, as sklearn's NaN refusal is: no prediction.
    assert lab.predict({"a": 1.0, "b": None, "c": 0.0}) is None and lab.state()["errors"] == 1
    lab.close()


def test_a_one_vs_rest_logistic_regression_goes_through_sklearn(tmp_path):
    """One-vs-rest probabilities (a model pickled by a scikit-learn that had multi_class) are not a softmax: not compiled."""
    from activelabel.models._compiled import compile_linear_model

    model, _ = _fitted_lr(3)
    model.multi_class = "ovr"  # what such an artifact carries; this scikit-learn fits multinomial only
    assert compile_linear_model(model, ["a", "b", "c"]) is None
    assert compile_linear_model(_fitted_lr(3)[0], ["a", "b", "c"]) is not None
    assert compile_linear_model(_fitted_lr(3)[0], ["a", "b"]) is None  # not the width it was fitted on


def test_explaining_or_recording_a_decision_does_not_count_as_another_model_call(write_policy, trained, tmp_path):
    """`--record` explains each decision; that must not double the model's calls and abstentions in stats()."""
    from activelabel.quality.store import DecisionStore

    policy = load_policy(_policy(write_policy, trained.artifact, extra="min_confidence: 0.9"))
    events = [orjson.loads(line) for line in (FIXTURES / "alerts.jsonl").read_text().splitlines()]
    labeler = Labeler(policy)
    decisions = labeler.label_batch(events)
    before = {k: v for k, v in labeler.stats().models["cat"].items() if k != "breaker"}
    assert before["abstained_low_confidence"] + before["predictions"] == len(events)
    explained = [d.explain()["labels"]["category"] for d in decisions]
    with DecisionStore(tmp_path / "s.db") as store:
        store.record_many((str(i), e, d) for i, (e, d) in enumerate(zip(events, decisions, strict=True)))
    for e in events:
        labeler.label_exact(e)
    after = {k: v for k, v in labeler.stats().models["cat"].items() if k != "breaker"}
    assert after == before
    # The explanation still shows the model's answer where it decided.
    assert all(x["matched"] == [x["source"]] for x in explained if (x["source"] or "").startswith("model:"))
