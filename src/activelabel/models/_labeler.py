"""The runtime of one model labeler: features in, (value, confidence) or abstain out.

It never raises on the per-event path: errors and timeouts are counted, fed to the
circuit breaker, and answered per ``on_error`` (abstain or a fallback value).
"""

from __future__ import annotations

import concurrent.futures as cf
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from activelabel.errors import ModelError
from activelabel.models._artifacts import Predictor
from activelabel.models._breaker import CircuitBreaker

Prediction = tuple[Any, float] | None

#: A batch call may take ``timeout_ms`` per this many rows (at least ``timeout_ms``).
ROWS_PER_TIMEOUT = 100

#: Confidence given to the ``on_error`` fallback value: it is a guess, not a prediction.
FALLBACK_CONFIDENCE = 0.0


class ArtifactModelLabeler:
    """One ``models:`` entry of a policy, loaded and ready to predict."""

    def __init__(
        self,
        *,
        name: str,
        label: str,
        version: str,
        predictor: Predictor,
        feature_programs: Mapping[str, Any] | None = None,
        feature_names: Sequence[str] | None = None,
        min_confidence: float = 0.0,
        timeout_ms: float | None = None,
        on_error: Any = "abstain",
        breaker: CircuitBreaker | None = None,
        path: Path | None = None,
        card: Mapping[str, Any] | None = None,
        nearest: Any = None,
    ) -> None:
        """``nearest``: a `NoveltyIndex` with classes (``below_confidence: nearest-template``): a row
        below ``min_confidence`` whose template is one the model was trained on gets that template's
        class; otherwise it abstains as before."""
        self.name = name
        self.label = label
        self.version = version
        self.predictor = predictor
        self.feature_programs: dict[str, Any] = dict(feature_programs or {})
        self.feature_names = list(feature_names or self.feature_programs)
        self.min_confidence = float(min_confidence or 0.0)
        self.timeout_ms = float(timeout_ms) if timeout_ms else None
        self.on_error = on_error
        self.breaker = breaker or CircuitBreaker()
        self.path = path
        self.card = dict(card or {})
        self.nearest = nearest
        self.source = f"model:{name}@{version}"
        self._executor: cf.ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._counts = {"calls": 0, "rows": 0, "predictions": 0, "abstained_low_confidence": 0,
                        "abstained_breaker_open": 0, "errors": 0, "timeouts": 0, "fallbacks": 0,
                        "nearest_template": 0}
        self.last_error: str | None = None

    # -- features -------------------------------------------------------------------------------

    def compute_features(self, bindings: Mapping[str, Any]) -> dict[str, Any]:
        """Evaluate the feature programs over ``bindings`` (event, labels, enrichers, now).

        A feature whose expression errors (missing field, wrong type) is None: the
        model sees it as missing, exactly as a rule that errors does not match.
        """
        out: dict[str, Any] = {}
        for fname, program in self.feature_programs.items():
            try:
                out[fname] = program.evaluate(bindings)
            except Exception:  # noqa: BLE001 - CELEvalError or worse; a feature never fails the event
                out[fname] = None
        return out

    # -- prediction -----------------------------------------------------------------------------

    def predict(self, features: Mapping[str, Any]) -> Prediction:
        """(value, confidence) for one row of features, or None to abstain. Never raises."""
        return self.predict_batch([features])[0]

    def predict_batch(self, rows: Sequence[Mapping[str, Any]]) -> list[Prediction]:
        """One model call for the whole batch; each row answered like ``predict``."""
        if not rows:
            return []
        self._bump("calls")
        self._bump("rows", len(rows))
        if not self.breaker.allow():
            self._bump("abstained_breaker_open", len(rows))
            return [None] * len(rows)
        try:
            classes, probs = self._call(rows)
        except cf.TimeoutError:
            self._bump("timeouts")
            self.last_error = f"timed out after {self._deadline_s(len(rows)) * 1000:.0f} ms"
            self.breaker.record_failure()
            return self._on_failure(len(rows))
        except Exception as exc:  # noqa: BLE001 - a model error must never fail the event
            self._bump("errors")
            self.last_error = f"{type(exc).__name__}: {exc}"
            self.breaker.record_failure()
            return self._on_failure(len(rows))
        self.breaker.record_success()
        return [self._choose(classes, p, row) for p, row in zip(probs, rows, strict=True)]

    def _call(self, rows: Sequence[Mapping[str, Any]]) -> tuple[list[Any], list[list[float]]]:
        if self.timeout_ms is None or getattr(self.predictor, "bounded", False):
            # A predictor whose cost is fixed per row (a compiled linear model) cannot hang:
            # handing each call to a watchdog thread would cost more than the call itself.
            return self.predictor.predict_proba(rows)
        if self._executor is None:
            with self._lock:
                if self._executor is None:
                    # One worker: a stuck model makes later calls queue and time out, which opens the breaker.
                    self._executor = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"model-{self.name}")
        future = self._executor.submit(self.predictor.predict_proba, rows)
        return future.result(timeout=self._deadline_s(len(rows)))

    def _deadline_s(self, n_rows: int) -> float:
        assert self.timeout_ms is not None
        return self.timeout_ms / 1000.0 * max(1.0, n_rows / ROWS_PER_TIMEOUT)

    def predict_uncounted(self, features: Mapping[str, Any]) -> Prediction:
        """What ``predict`` would answer for one row, for an explanation: nothing counted, breaker untouched.

        An explanation re-decides a label after the fact; counting that call would make every
        recorded decision a second call, an abstention or a failure in ``stats()`` and metrics.
        """
        try:
            classes, probs = self._call([features])
        except Exception:  # noqa: BLE001 - an explanation of a failing model shows it abstaining
            return None
        return self._pick(classes, probs[0], features)[0]

    def _pick(self, classes: Sequence[Any], probs: Sequence[float], row: Mapping[str, Any] | None = None
              ) -> tuple[Prediction, str]:
        """The answer for one row, and the counter it counts as."""
        if not probs:
            return None, "abstained_low_confidence"
        best = max(range(len(probs)), key=probs.__getitem__)
        confidence = float(probs[best])
        if confidence < self.min_confidence:
            guess = self._nearest(classes, probs, row) if self.nearest is not None and row is not None else None
            if guess is not None:
                return guess, "nearest_template"
            return None, "abstained_low_confidence"
        return (classes[best], confidence), "predictions"

    def _choose(self, classes: Sequence[Any], probs: Sequence[float], row: Mapping[str, Any] | None = None) -> Prediction:
        pred, counter = self._pick(classes, probs, row)
        self._bump(counter)
        return pred

    def _nearest(self, classes: Sequence[Any], probs: Sequence[float], row: Mapping[str, Any]) -> Prediction:
        """The class of the row's template when it is a template the model was trained on (its words, or
        a learned pattern's, are the row's: novelty 0) and of one class the model knows; the confidence
        stays the model's own probability for that class. A row merely like a trained template (novelty
        above 0) still abstains: that is where lines of classes nobody reviewed are."""
        from activelabel.quality.novelty import row_text, template_tokens

        cls, similarity = self.nearest.nearest(template_tokens(row_text(row, self.nearest.text_features)))
        if cls is None or similarity < 1.0:
            return None
        for c, p in zip(classes, probs, strict=True):
            if str(c) == cls:
                return c, float(p)
        return None

    def _on_failure(self, n: int) -> list[Prediction]:
        if self.on_error in (None, "abstain"):
            return [None] * n
        self._bump("fallbacks", n)
        return [(self.on_error, FALLBACK_CONFIDENCE)] * n

    def _bump(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counts[key] += n

    def distributions(self, rows: Sequence[Mapping[str, Any]]) -> list[dict[Any, float]] | None:
        """Every class's probability per row, for offline use (review ranking); None if the model fails.

        Not the serving path: no breaker, no timeout, no min_confidence.
        """
        try:
            classes, probs = self.predictor.predict_proba(rows)
        except Exception:  # noqa: BLE001 - a failing model just leaves review to the decisions' own confidences
            return None
        return [dict(zip(classes, p, strict=True)) for p in probs]

    # -- learning and state ---------------------------------------------------------------------

    def learn(self, features: Mapping[str, Any], value: Any) -> None:
        """Online models (river) learn from one ground-truth item; others refuse."""
        learn = getattr(self.predictor, "learn", None)
        if learn is None:
            raise ModelError(f"model {self.name} ({self.predictor.kind}) cannot learn online; retrain it")
        learn(features, value)

    def state(self) -> dict[str, Any]:
        """Counters and circuit-breaker state, for ``stats()`` and metrics."""
        with self._lock:
            counts = dict(self._counts)
        return {"name": self.name, "label": self.label, "version": self.version, "type": self.predictor.kind,
                **counts, "last_error": self.last_error, "breaker": self.breaker.snapshot()}

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
