"""Compile a linear text pipeline into plain Python for the per-event path.

scikit-learn validates inputs on every call; for one event that costs milliseconds,
a hundred times the arithmetic. The pipelines ``activelabel train`` writes
(ColumnTransformer of TF-IDF / one-hot / impute+scale, then logistic regression)
are linear, so at load we read their fitted tables once and score an event with
dictionary look-ups and a dot product. Same numbers as ``predict_proba`` (the tests
compare them); any other pipeline shape returns None and goes through sklearn.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from activelabel.models._artifacts import _number, _text  # the same coercions as the sklearn path

Scorer = Callable[[Sequence[Mapping[str, Any]]], list[list[float]]]


def _tfidf_block(vec: Any, column: str, offset: int) -> Callable[[Mapping[str, Any]], list[tuple[int, float]]] | None:
    ok = (vec.analyzer == "word" and vec.tokenizer is None and vec.preprocessor is None and vec.stop_words is None
          and vec.strip_accents is None and not vec.binary and vec.norm in ("l2", None) and vec.use_idf
          and isinstance(vec.token_pattern, str))
    if not ok:
        return None
    pattern = re.compile(vec.token_pattern)
    vocab = vec.vocabulary_
    idf = vec.idf_.tolist()
    lowercase, sublinear, l2 = vec.lowercase, vec.sublinear_tf, vec.norm == "l2"
    min_n, max_n = vec.ngram_range

    def terms(doc: str) -> list[str]:
        tokens = pattern.findall(doc.lower() if lowercase else doc)
        if max_n == 1:
            return tokens
        out = list(tokens) if min_n == 1 else []
        for n in range(max(min_n, 2), min(max_n, len(tokens)) + 1):
            out.extend(" ".join(tokens[i:i + n]) for i in range(len(tokens) - n + 1))
        return out

    def block(row: Mapping[str, Any]) -> list[tuple[int, float]]:
        counts = Counter(vocab[t] for t in terms(_text(row.get(column))) if t in vocab)
        weights = [(j, ((1.0 + math.log(c)) if sublinear else float(c)) * idf[j]) for j, c in counts.items()]
        if l2 and weights:
            norm = math.sqrt(sum(w * w for _, w in weights))
            weights = [(j, w / norm) for j, w in weights]
        return [(offset + j, w) for j, w in weights]

    return block


def _onehot_block(enc: Any, columns: list[str], offset: int) -> Callable[[Mapping[str, Any]], list[tuple[int, float]]] | None:
    if enc.handle_unknown != "ignore" or enc.drop is not None or getattr(enc, "_infrequent_enabled", False):
        return None
    tables, start = [], offset
    for cats in enc.categories_:
        tables.append({str(c): start + i for i, c in enumerate(cats.tolist())})
        start += len(cats)

    def block(row: Mapping[str, Any]) -> list[tuple[int, float]]:
        out = []
        for col, table in zip(columns, tables, strict=True):
            j = table.get(_text(row.get(col)))
            if j is not None:
                out.append((j, 1.0))
        return out

    return block


def _numeric_block(pipe: Any, columns: list[str], offset: int) -> Callable[[Mapping[str, Any]], list[tuple[int, float]]] | None:
    steps = dict(pipe.steps) if hasattr(pipe, "steps") else {}
    if set(steps) != {"impute", "scale"}:
        return None
    impute, scale = steps["impute"], steps["scale"]
    if not scale.with_mean or not scale.with_std:
        return None
    fill = impute.statistics_.tolist()
    mean, std = scale.mean_.tolist(), scale.scale_.tolist()

    def block(row: Mapping[str, Any]) -> list[tuple[int, float]]:
        out = []
        for k, col in enumerate(columns):
            x = _number(row.get(col))
            if math.isnan(x):
                x = fill[k]
            out.append((offset + k, (x - mean[k]) / std[k]))
        return out

    return block


def compile_linear_pipeline(model: Any) -> Scorer | None:
    """A pure-Python scorer equal to ``model.predict_proba`` for our training pipelines, else None."""
    from sklearn.compose import ColumnTransformer
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    if not (isinstance(model, Pipeline) and len(model.steps) == 2 and isinstance(model.steps[0][1], ColumnTransformer)
            and isinstance(model.steps[1][1], LogisticRegression)):
        return None
    ct, clf = model.steps[0][1], model.steps[1][1]
    blocks, offset = [], 0
    for name, transformer, cols in ct.transformers_:
        if name == "remainder":
            if transformer != "drop":
                return None
            continue
        if isinstance(transformer, TfidfVectorizer) and isinstance(cols, str):
            block = _tfidf_block(transformer, cols, offset)
            width = len(transformer.vocabulary_)
        elif isinstance(transformer, OneHotEncoder) and isinstance(cols, list):
            block = _onehot_block(transformer, cols, offset)
            width = sum(len(c) for c in transformer.categories_)
        elif isinstance(transformer, Pipeline) and isinstance(cols, list):
            block = _numeric_block(transformer, cols, offset)
            width = len(cols)
        else:
            return None
        if block is None:
            return None
        blocks.append(block)
        offset += width
    if not _softmax_or_logistic(clf):
        return None
    coef = clf.coef_.tolist()
    if offset != len(coef[0]):
        return None
    columns = list(zip(*coef, strict=True))  # per feature: its weight for each class row
    intercept = clf.intercept_.tolist()
    binary = len(coef) == 1

    def score(rows: Sequence[Mapping[str, Any]]) -> list[list[float]]:
        out = []
        for row in rows:
            logits = list(intercept)
            for block in blocks:
                for j, x in block(row):
                    w = columns[j]
                    for k in range(len(logits)):
                        logits[k] += w[k] * x
            out.append(_probabilities(logits, binary))
        return out

    return score


def compile_linear_model(model: Any, columns: Sequence[str]) -> Scorer | None:
    """A pure-Python scorer equal to a bare ``LogisticRegression``'s ``predict_proba`` on ``columns``, else None.

    The model was fitted on an unnamed matrix whose columns are the policy's features in
    order. As sklearn does, a missing or non-finite feature is refused (ValueError): the
    model labeler counts it as a model error, never as a prediction.
    """
    from sklearn.linear_model import LogisticRegression

    if not isinstance(model, LogisticRegression) or not _softmax_or_logistic(model):
        return None
    coef = model.coef_.tolist()
    if getattr(model, "n_features_in_", None) != len(columns) or len(coef[0]) != len(columns):
        return None
    names = list(columns)
    weights = list(zip(*coef, strict=True))  # per feature: its weight for each class row
    intercept = model.intercept_.tolist()
    binary = len(coef) == 1
    isfinite = math.isfinite

    def score(rows: Sequence[Mapping[str, Any]]) -> list[list[float]]:
        out = []
        for row in rows:
            logits = list(intercept)
            for name, w in zip(names, weights, strict=True):
                x = _number(row.get(name))
                if not isfinite(x):
                    raise ValueError(f"Input X contains NaN or infinity (feature {name!r}): the model needs every feature")
                for k in range(len(logits)):
                    logits[k] += w[k] * x
            out.append(_probabilities(logits, binary))
        return out

    return score


def _softmax_or_logistic(clf: Any) -> bool:
    """Whether ``clf``'s probabilities are the softmax of its logits (or the logistic of one): not one-vs-rest."""
    n_classes = len(getattr(clf, "classes_", ()))
    if n_classes <= 2:
        return True
    multi = getattr(clf, "multi_class", "auto")
    return multi != "ovr" and not (multi in ("auto", "deprecated") and clf.solver == "liblinear")


def _probabilities(logits: list[float], binary: bool) -> list[float]:
    if binary:
        p = 1.0 / (1.0 + math.exp(-logits[0])) if logits[0] >= -700 else 0.0
        return [1.0 - p, p]
    top = max(logits)
    exps = [math.exp(v - top) for v in logits]
    total = sum(exps)
    return [e / total for e in exps]
