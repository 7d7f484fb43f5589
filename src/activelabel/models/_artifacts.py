"""Model artifacts: load sklearn (joblib / skops), ONNX and river files behind one
``Predictor`` shape, read their model cards, and check they fit the declared features.

Every load problem is raised as ``ModelError`` here; ``build_model_labelers`` turns
it into a ``PolicyError`` naming the model and the policy location.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import orjson

from activelabel.errors import ModelError

# Modules whose types a skops file may contain without the user trusting them explicitly.
_TRUSTED_SKOPS_ROOTS = ("sklearn", "numpy", "scipy", "activelabel", "builtins", "collections")


class Predictor(Protocol):
    """What a loaded artifact offers the labeler: class probabilities for feature rows."""

    kind: str

    def predict_proba(self, rows: Sequence[Mapping[str, Any]]) -> tuple[list[Any], list[list[float]]]:
        """(classes, one probability row per input row, aligned with classes)."""
        ...


def card_path_for(artifact: str | Path) -> Path:
    """The model card sits next to its artifact: ``m.joblib`` → ``m.card.json``."""
    p = Path(artifact)
    return p.with_name(p.stem + ".card.json")


def read_model_card(artifact: str | Path) -> dict[str, Any] | None:
    """The artifact's model card, or None when it has none."""
    path = card_path_for(artifact)
    if not path.is_file():
        return None
    try:
        card = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise ModelError(f"model card {path} is not valid JSON: {exc}") from exc
    if not isinstance(card, dict):
        raise ModelError(f"model card {path} must be a JSON object")
    return card


def file_version(path: str | Path) -> str:
    """A content version for artifacts without a card: the start of their SHA-256."""
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return f"sha256-{digest[:12]}"


def to_python(value: Any) -> Any:
    """numpy scalars (np.str_, np.int64, np.bool_) → plain Python, so labels serialise."""
    item = getattr(value, "item", None)
    return item() if callable(item) else value


def _text(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    return v if isinstance(v, str) else str(v)


def _number(v: Any) -> float:
    if v is None or isinstance(v, str):
        try:
            return float(v) if v not in (None, "") else math.nan
        except ValueError:
            return math.nan
    return float(v)


def column_kinds(names: Sequence[str], rows: Sequence[Mapping[str, Any]],
                 declared: Mapping[str, str] | None) -> dict[str, str]:
    """Each feature is ``text`` or ``number``: from the card when known, else from the values."""
    kinds: dict[str, str] = {}
    for name in names:
        if declared and name in declared:
            kinds[name] = "number" if declared[name] == "number" else "text"
            continue
        sample = next((r.get(name) for r in rows if r.get(name) is not None), None)
        kinds[name] = "number" if isinstance(sample, (int, float)) and not isinstance(sample, bool) else "text"
    return kinds


class SklearnPredictor:
    """A scikit-learn estimator with ``predict_proba``; named features go in as a polars frame."""

    kind = "sklearn"

    def __init__(self, model: Any, feature_names: Sequence[str], declared_kinds: Mapping[str, str] | None) -> None:
        if not hasattr(model, "predict_proba"):
            raise ModelError("the estimator has no predict_proba (train it with probability estimates)")
        self.model = model
        self.classes = [to_python(c) for c in getattr(model, "classes_", [])]
        names_in = getattr(model, "feature_names_in_", None)
        self.named = names_in is not None
        self.columns = [str(n) for n in names_in] if names_in is not None else list(feature_names)
        self.declared_kinds = dict(declared_kinds or {})
        from activelabel.models._compiled import compile_linear_model, compile_linear_pipeline

        scorer = compile_linear_pipeline(model) if self.named else compile_linear_model(model, self.columns)
        self._compiled = scorer
        self._direct = _direct_plan(model) if self.named else None
        # A bare linear model compiled to a dot product costs the same for every row (no text
        # to tokenise): it needs no watchdog thread for its timeout (ModelLabeler._call).
        self.bounded = scorer is not None and not self.named

    def expected_features(self) -> list[str] | None:
        return self.columns if self.named else None

    def expected_width(self) -> int | None:
        width = getattr(self.model, "n_features_in_", None)
        return None if self.named or width is None else int(width)

    def predict_proba(self, rows: Sequence[Mapping[str, Any]]) -> tuple[list[Any], list[list[float]]]:
        if self._compiled is not None:
            # Always, not only for small batches: label() and label_batch() must give bit-identical
            # confidences, and sklearn's vectorised arithmetic differs from it in the last ulp.
            return self.classes, self._compiled(rows)
        kinds = column_kinds(self.columns, rows, self.declared_kinds)
        if self._direct is not None:
            return self.classes, self._direct(rows, kinds)
        if self.named:
            import polars as pl

            data = {
                c: ([_text(r.get(c)) for r in rows] if kinds[c] == "text" else [_number(r.get(c)) for r in rows])
                for c in self.columns
            }
            frame: Any = pl.DataFrame(data, schema={c: pl.Utf8 if kinds[c] == "text" else pl.Float64 for c in self.columns})
        else:
            import numpy as np

            frame = np.array([[_number(r.get(c)) for c in self.columns] for r in rows], dtype=float)
        probs = self.model.predict_proba(frame)
        return self.classes, [list(map(float, p)) for p in probs]


def _direct_plan(model: Any) -> Any:
    """A faster route through ``Pipeline(ColumnTransformer, ..., classifier)`` for few rows.

    Building a data frame and letting ColumnTransformer slice it costs milliseconds
    per call, far more than the model itself; feeding each fitted transformer its
    column directly gives the same matrix. Returns None for any other shape.
    """
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    if not isinstance(model, Pipeline) or not isinstance(model.steps[0][1], ColumnTransformer):
        return None
    ct = model.steps[0][1]
    parts = []
    for name, transformer, cols in ct.transformers_:
        if transformer == "drop" or (name == "remainder" and transformer in ("drop", None)):
            continue
        if transformer == "passthrough" or not (isinstance(cols, str) or
                                                 (isinstance(cols, list) and all(isinstance(c, str) for c in cols))):
            return None
        parts.append((transformer, cols))
    rest = model[1:]
    threshold = ct.sparse_threshold

    def predict(rows: Sequence[Mapping[str, Any]], kinds: Mapping[str, str]) -> list[list[float]]:
        import warnings

        import numpy as np
        from scipy import sparse

        blocks = []
        with warnings.catch_warnings():
            # The transformers were fitted on a named frame; plain arrays are the same columns in the same order.
            warnings.simplefilter("ignore", UserWarning)
            for transformer, cols in parts:
                if isinstance(cols, str):
                    blocks.append(transformer.transform([_text(r.get(cols)) for r in rows]))
                    continue
                if all(kinds.get(c) == "number" for c in cols):
                    x: Any = np.array([[_number(r.get(c)) for c in cols] for r in rows], dtype=float)
                else:
                    x = np.array([[_text(r.get(c)) for c in cols] for r in rows], dtype=object)
                blocks.append(transformer.transform(x))
            if any(sparse.issparse(b) for b in blocks):
                stacked = sparse.hstack(blocks).tocsr()
                density = stacked.nnz / max(1, stacked.shape[0] * stacked.shape[1])
                xt: Any = stacked if density < threshold else stacked.toarray()
            else:
                xt = np.hstack(blocks)
            probs = rest.predict_proba(xt)
        return [list(map(float, p)) for p in probs]

    return predict


class OnnxPredictor:
    """An ONNX classifier (e.g. converted with skl2onnx): one input per feature, or one numeric matrix."""

    kind = "onnx"

    def __init__(self, path: Path, feature_names: Sequence[str], classes: Sequence[Any] | None) -> None:
        import onnxruntime as ort

        try:
            opts = ort.SessionOptions()
            opts.log_severity_level = 3
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
            raise ModelError(f"cannot load ONNX model: {exc}") from exc
        self.inputs = self.session.get_inputs()
        self.feature_names = list(feature_names)
        self.card_classes = list(classes) if classes else None
        outputs = self.session.get_outputs()
        prob = [o for o in outputs if "prob" in o.name.lower()]
        if not prob:
            raise ModelError("the ONNX model has no probability output (convert the classifier with probabilities)")
        self.prob_output = prob[0].name
        self.label_output = next((o.name for o in outputs if o.name != self.prob_output), None)
        self.named = len(self.inputs) > 1 or self.inputs[0].name in self.feature_names

    def expected_features(self) -> list[str] | None:
        return [i.name for i in self.inputs] if self.named else None

    def expected_width(self) -> int | None:
        if self.named:
            return None
        shape = self.inputs[0].shape
        return shape[1] if len(shape) == 2 and isinstance(shape[1], int) else None

    def _feeds(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        import numpy as np

        if not self.named:
            matrix = [[_number(r.get(f)) for f in self.feature_names] for r in rows]
            return {self.inputs[0].name: np.array(matrix, dtype=np.float32)}
        feeds: dict[str, Any] = {}
        for inp in self.inputs:
            if inp.type == "tensor(string)":
                feeds[inp.name] = np.array([[_text(r.get(inp.name))] for r in rows], dtype=object)
            elif inp.type == "tensor(int64)":
                feeds[inp.name] = np.array([[int(_number(r.get(inp.name)) or 0)] for r in rows], dtype=np.int64)
            elif inp.type == "tensor(double)":
                feeds[inp.name] = np.array([[_number(r.get(inp.name))] for r in rows], dtype=np.float64)
            else:
                feeds[inp.name] = np.array([[_number(r.get(inp.name))] for r in rows], dtype=np.float32)
        return feeds

    def predict_proba(self, rows: Sequence[Mapping[str, Any]]) -> tuple[list[Any], list[list[float]]]:
        (probs,) = self.session.run([self.prob_output], self._feeds(rows))
        if len(probs) and isinstance(probs[0], dict):  # skl2onnx's ZipMap output: one {class: p} per row
            classes = self.card_classes or sorted(probs[0].keys(), key=str)
            return [to_python(c) for c in classes], [[float(p[c]) for c in classes] for p in probs]
        if self.card_classes is None:
            raise ModelError("the ONNX model outputs a probability tensor but its model card lists no classes")
        return self.card_classes, [list(map(float, p)) for p in probs]


def river_row(row: Mapping[str, Any], kinds: Mapping[str, str] | None) -> dict[str, Any]:
    """River reads dicts: missing text becomes "", a missing number 0.0 (river's selectors need every key)."""
    out: dict[str, Any] = {}
    for k, v in row.items():
        kind = (kinds or {}).get(k) or ("text" if isinstance(v, str) else "number")
        if kind != "number":
            out[k] = _text(v)
        else:
            n = _number(v)
            out[k] = 0.0 if math.isnan(n) else n
    return out


class RiverPredictor:
    """A river online classifier: probabilities per row, and it can keep learning."""

    kind = "river"

    def __init__(self, model: Any, declared_kinds: Mapping[str, str] | None = None) -> None:
        if not hasattr(model, "predict_proba_one"):
            raise ModelError("the river model has no predict_proba_one (use a river classifier)")
        self.model = model
        self.kinds = dict(declared_kinds or {})

    def expected_features(self) -> list[str] | None:
        return None

    def expected_width(self) -> int | None:
        return None

    def predict_proba(self, rows: Sequence[Mapping[str, Any]]) -> tuple[list[Any], list[list[float]]]:
        dists = [self.model.predict_proba_one(river_row(r, self.kinds)) for r in rows]
        classes = sorted({c for d in dists for c in d}, key=str)
        return classes, [[float(d.get(c, 0.0)) for c in classes] for d in dists]

    def learn(self, features: Mapping[str, Any], value: Any) -> None:
        self.model.learn_one(river_row(features, self.kinds), value)


def _load_skops(path: Path) -> Any:
    import skops.io as sio

    untrusted = sio.get_untrusted_types(file=path)
    refused = [t for t in untrusted if t.split(".")[0] not in _TRUSTED_SKOPS_ROOTS]
    if refused:
        raise ModelError(f"the skops file contains types we do not load blindly: {', '.join(refused)}")
    return sio.load(path, trusted=untrusted)


def load_predictor(kind: str, path: Path, feature_names: Sequence[str], card: Mapping[str, Any] | None) -> Predictor:
    """Open an artifact of ``kind`` (sklearn | onnx | river). Raises ModelError on any problem."""
    if not path.is_file():
        raise ModelError(f"artifact not found: {path}")
    declared = (card or {}).get("feature_kinds")
    try:
        if kind == "sklearn":
            if path.suffix == ".skops":
                model = _load_skops(path)
            else:
                import joblib

                model = joblib.load(path)
            return SklearnPredictor(model, feature_names, declared)
        if kind == "onnx":
            return OnnxPredictor(path, feature_names, (card or {}).get("classes"))
        if kind == "river":
            import joblib

            return RiverPredictor(joblib.load(path), declared)
    except ModelError:
        raise
    except Exception as exc:  # unpickling corrupt files raises anything from EOFError to KeyError
        raise ModelError(f"cannot load {kind} artifact {path}: {type(exc).__name__}: {exc}") from exc
    raise ModelError(f"unknown model type {kind!r} (expected sklearn, onnx or river)")


def check_features(predictor: Any, feature_names: Sequence[str], card: Mapping[str, Any] | None) -> None:
    """Refuse an artifact trained for other features than the policy declares."""
    declared = set(feature_names)
    if card and card.get("features") is not None:
        trained = set(card["features"])
        if trained != declared:
            raise ModelError(_mismatch("its model card", trained, declared))
    expected = predictor.expected_features()
    if expected is not None and set(expected) != declared:
        raise ModelError(_mismatch("the artifact", set(expected), declared))
    width = predictor.expected_width()
    if width is not None and width != len(feature_names):
        raise ModelError(
            f"the artifact expects {width} features but the policy declares {len(feature_names)}: "
            f"{', '.join(feature_names)}"
        )


def _mismatch(where: str, trained: set[str], declared: set[str]) -> str:
    parts = []
    if trained - declared:
        parts.append(f"missing from the policy: {', '.join(sorted(trained - declared))}")
    if declared - trained:
        parts.append(f"unknown to the model: {', '.join(sorted(declared - trained))}")
    return f"trained for other features ({where}): " + "; ".join(parts)
