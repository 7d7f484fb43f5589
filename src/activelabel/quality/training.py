"""Retraining: fit a model for one label from ground truth, write a versioned
artifact and its model card, and learn online (river) from feedback as it arrives.

The pipeline follows the features: text features go through TF-IDF over word
tokens (numbers dropped, so ports and addresses do not split a template),
numeric features are imputed and scaled, and a class-balanced logistic
regression sits on top, because ground truth from review is small and skewed.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from activelabel.errors import ModelError
from activelabel.models._artifacts import card_path_for, column_kinds

MODEL_TYPES = ("sklearn", "onnx", "river")
WORD_TOKENS = r"\b[A-Za-z_][A-Za-z_]+\b"
MIN_HOLDOUT_ROWS = 10


@dataclass(frozen=True)
class TrainedModel:
    """Where the artifact and its card were written, and what the card says."""

    artifact: Path
    card_path: Path
    card: dict[str, Any]

    def policy_snippet(self, relative_to: Path | None = None) -> str:
        """The ``models:`` entry that puts this artifact to work."""
        path: Path | str = self.artifact.resolve()
        if relative_to is not None:
            # A policy resolves a model's path from its own folder, so the entry is written from there.
            path = os.path.relpath(self.artifact.resolve(), relative_to.resolve())
        lines = [
            "models:",
            f"  - name: {self.card['name']}",
            f"    label: {self.card['label']}",
            f"    type: {self.card['model_type']}",
            f"    path: {path}",
            "    features:",
            *[f"      {k}: {orjson.dumps(v).decode()}" for k, v in self.card["features"].items()],
            "    min_confidence: 0.5",
            "    timeout_ms: 50",
            "    on_error: abstain",
        ]
        return "\n".join(lines)


def infer_kinds(names: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """``number``, ``text`` (free text: TF-IDF) or ``category`` (short codes without words: one-hot)."""
    import re

    words = re.compile(WORD_TOKENS)
    kinds = column_kinds(names, rows, None)
    for name, kind in kinds.items():
        if kind != "text":
            continue
        values = [r.get(name) for r in rows if r.get(name) is not None]
        if not any(words.search(str(v)) for v in values):
            kinds[name] = "category"  # "R02-M1", "42", "x": no word a text vectoriser could learn from
    return kinds


def data_hash(rows: Sequence[Mapping[str, Any]], values: Sequence[Any]) -> str:
    """SHA-256 over the training rows and values, in order: the same data gives the same hash."""
    h = hashlib.sha256()
    for row, value in zip(rows, values, strict=True):
        h.update(orjson.dumps({"x": row, "y": value}, option=orjson.OPT_SORT_KEYS, default=str))
    return "sha256:" + h.hexdigest()


def build_sklearn_pipeline(kinds: Mapping[str, str], *, seed: int = 0, max_ngram: int = 2) -> Any:
    """TF-IDF per text feature, impute + scale per numeric feature, balanced logistic regression."""
    from sklearn.compose import ColumnTransformer
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    parts: list[tuple[str, Any, Any]] = []
    for name, kind in kinds.items():
        if kind == "category":
            parts.append((name, OneHotEncoder(handle_unknown="ignore"), [name]))
        elif kind == "text":
            parts.append((name, TfidfVectorizer(token_pattern=WORD_TOKENS, lowercase=True, ngram_range=(1, max_ngram),
                                                sublinear_tf=True), name))
        else:
            parts.append((name, Pipeline([("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
                                          ("scale", StandardScaler())]), [name]))
    return Pipeline([
        ("features", ColumnTransformer(parts)),
        ("classify", LogisticRegression(C=20.0, class_weight="balanced", max_iter=2000, random_state=seed)),
    ])


def _frame(rows: Sequence[Mapping[str, Any]], kinds: Mapping[str, str]) -> Any:
    import polars as pl

    from activelabel.models._artifacts import _number, _text

    data = {n: ([_number(r.get(n)) for r in rows] if k == "number" else [_text(r.get(n)) for r in rows])
            for n, k in kinds.items()}
    return pl.DataFrame(data, schema={n: pl.Float64 if k == "number" else pl.Utf8 for n, k in kinds.items()})


def build_river_model(kinds: Mapping[str, str]) -> Any:
    """Bag of words per text feature, scaled numbers, one-vs-rest logistic regression."""
    from river import compose, feature_extraction, linear_model, multiclass, optim, preprocessing

    branches: list[Any] = [feature_extraction.BagOfWords(on=n, lowercase=True, tokenizer_pattern=WORD_TOKENS)
                           for n, k in kinds.items() if k == "text"]
    numeric = [n for n, k in kinds.items() if k != "text"]
    if numeric:
        branches.append(compose.Select(*numeric) | preprocessing.StandardScaler())
    features = branches[0] if len(branches) == 1 else compose.TransformerUnion(*branches)
    # A larger step than river's default: review gives few items, each must count.
    return features | multiclass.OneVsRestClassifier(linear_model.LogisticRegression(optimizer=optim.SGD(0.5)))


def _split(values: Sequence[Any], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Stratified holdout indices: about ``fraction`` of each class, never a class's only item."""
    rng = random.Random(seed)
    by_class: dict[Any, list[int]] = {}
    for i, v in enumerate(values):
        by_class.setdefault(v, []).append(i)
    train, hold = [], []
    for idx in by_class.values():
        rng.shuffle(idx)
        k = math.floor(len(idx) * fraction) if len(idx) > 1 else 0
        hold.extend(idx[:k])
        train.extend(idx[k:])
    return sorted(train), sorted(hold)


def _fit(model_type: str, kinds: Mapping[str, str], rows: Sequence[Mapping[str, Any]], values: Sequence[Any],
         seed: int) -> Any:
    if model_type == "river":
        from activelabel.models._artifacts import river_row

        model = build_river_model({k: ("text" if v == "category" else v) for k, v in kinds.items()})
        for row, value in zip(rows, values, strict=True):
            model.learn_one(river_row(row, kinds), value)
        return model
    # onnxruntime's TfIdfVectorizer mishandles skl2onnx's mixed 1-2 gram tables: ONNX models use words only.
    pipe = build_sklearn_pipeline(kinds, seed=seed, max_ngram=1 if model_type == "onnx" else 2)
    return pipe.fit(_frame(rows, kinds), list(values))


def _predict(model_type: str, model: Any, kinds: Mapping[str, str], rows: Sequence[Mapping[str, Any]]) -> list[Any]:
    if model_type == "river":
        from activelabel.models._artifacts import river_row

        return [model.predict_one(river_row(r, kinds)) for r in rows]
    return [v.item() if hasattr(v, "item") else v for v in model.predict(_frame(rows, kinds))]


def train_model(
    rows: Sequence[Mapping[str, Any]],
    values: Sequence[Any],
    *,
    label: str,
    features: Mapping[str, str],
    out_dir: str | Path,
    name: str | None = None,
    model_type: str = "sklearn",
    holdout: float = 0.2,
    seed: int = 0,
    policy_version: str | None = None,
    feature_kinds: Mapping[str, str] | None = None,
    created: datetime | None = None,
) -> TrainedModel:
    """Fit a model on feature rows and true values; write ``<name>-<version>.<ext>`` and its card."""
    from activelabel.quality.metrics import classification_summary

    if model_type not in MODEL_TYPES:
        raise ModelError(f"unknown model type {model_type!r} (expected one of {', '.join(MODEL_TYPES)})")
    if len(rows) != len(values):
        raise ModelError("rows and values differ in length")
    counts = Counter(values)
    if len(counts) < 2:
        raise ModelError(f"need ground truth with at least 2 distinct values of {label} to train; "
                         f"have {dict(counts) or 'none'} (review more items first)")
    names = list(features)
    kinds = dict(feature_kinds or infer_kinds(names, rows))
    train_idx, hold_idx = _split(values, holdout, seed) if len(rows) >= MIN_HOLDOUT_ROWS else (list(range(len(rows))), [])
    metrics: dict[str, Any] | None = None
    if hold_idx:
        model = _fit(model_type, kinds, [rows[i] for i in train_idx], [values[i] for i in train_idx], seed)
        predicted = _predict(model_type, model, kinds, [rows[i] for i in hold_idx])
        summary = classification_summary([values[i] for i in hold_idx], predicted)
        metrics = {"size": len(hold_idx), "accuracy": summary["accuracy"], "macro_f1": summary["macro_f1"]}
    # The shipped model learns from every item; the holdout figures describe a model fit without them.
    model = _fit(model_type, kinds, rows, values, seed)

    created = created or datetime.now(UTC)
    dhash = data_hash(rows, values)
    version = f"{created:%Y%m%dT%H%M%S}-{dhash.split(':')[1][:8]}"
    name = name or f"{label}_model"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ext = {"sklearn": ".joblib", "onnx": ".onnx", "river": ".river.joblib"}[model_type]
    artifact = out / f"{name}-{version}{ext}"
    classes = sorted(counts, key=str)
    if model_type == "onnx":
        _write_onnx(model, kinds, artifact)
    else:
        import joblib

        joblib.dump(model, artifact)
    card = {
        "name": name, "label": label, "version": version, "model_type": model_type,
        "artifact": artifact.name, "classes": classes, "features": dict(features), "feature_kinds": kinds,
        "training_data": {"hash": dhash, "size": len(rows), "class_counts": {str(k): v for k, v in counts.items()}},
        "holdout": metrics, "created": created.isoformat(), "policy_version": policy_version,
    }
    card_path = card_path_for(artifact)
    card_path.write_bytes(orjson.dumps(card, option=orjson.OPT_INDENT_2))
    return TrainedModel(artifact=artifact, card_path=card_path, card=card)


def _write_onnx(pipeline: Any, kinds: Mapping[str, str], artifact: Path) -> None:
    try:
        from skl2onnx import convert_sklearn
        from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    except ImportError as exc:
        raise ModelError("ONNX export needs skl2onnx: pip install skl2onnx") from exc
    inputs = [(n, StringTensorType([None, 1]) if k == "text" else FloatTensorType([None, 1])) for n, k in kinds.items()]
    # Lower-casing in ONNX needs a named locale; "C" exists everywhere, en_US (skl2onnx's default) often does not.
    options: dict[Any, Any] = {id(pipeline): {"zipmap": True}}
    for _, transformer, _ in pipeline.named_steps["features"].transformers_:
        if type(transformer).__name__ == "TfidfVectorizer":
            options[id(transformer)] = {"locale": "C"}
    try:
        onx = convert_sklearn(pipeline, initial_types=inputs, options=options)
    except Exception as exc:  # skl2onnx refuses some pipelines; say which and why
        raise ModelError(f"cannot convert the pipeline to ONNX: {exc}") from exc
    artifact.write_bytes(onx.SerializeToString())


def learn_online(labeler: Any, items: Sequence[tuple[Mapping[str, Any], Any]], *, save: bool = True) -> int:
    """Feed (features, true value) pairs to an online (river) model labeler and save it.

    The artifact is replaced atomically (a reloading service never reads half a file),
    and its card counts the items learned online in its version (``<base>+<n>``),
    so decisions say which state of the model made them.
    """
    import os

    for features, value in items:
        labeler.learn(features, value)
    if not (save and items and labeler.path is not None):
        return len(items)
    import joblib

    path = Path(labeler.path)
    tmp = path.with_name(path.name + ".tmp")
    joblib.dump(labeler.predictor.model, tmp)
    os.replace(tmp, path)
    card_path = card_path_for(path)
    if card_path.is_file():
        card = orjson.loads(card_path.read_bytes())
        card["online_items"] = int(card.get("online_items") or 0) + len(items)
        card.setdefault("base_version", card.get("version"))
        card["version"] = f"{card['base_version']}+{card['online_items']}"
        card["updated"] = datetime.now(UTC).isoformat()
        tmp_card = card_path.with_name(card_path.name + ".tmp")
        tmp_card.write_bytes(orjson.dumps(card, option=orjson.OPT_INDENT_2))
        os.replace(tmp_card, card_path)
    return len(items)
