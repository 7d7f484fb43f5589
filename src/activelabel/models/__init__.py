"""Model labelers: scikit-learn, ONNX and river models that label beside the rules.

A policy's ``models:`` entries become ``ModelLabeler`` objects. The engine computes
each model's features (named CEL expressions) and asks for ``(value, confidence)``;
a model that is unsure (below ``min_confidence``), failing, slow or behind an open
circuit breaker abstains instead of raising.

    labelers = build_model_labelers(policy)        # PolicyError names a bad model
    lab = labelers[0]
    lab.predict(lab.compute_features({"event": event}))   # ("KERNDTLB", 0.97) or None
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from activelabel._extras import missing_extra
from activelabel.errors import ModelError, PolicyError, PolicyIssue
from activelabel.models._artifacts import (
    card_path_for,
    check_features,
    file_version,
    load_predictor,
    read_model_card,
)
from activelabel.models._breaker import CircuitBreaker
from activelabel.models._labeler import ArtifactModelLabeler

DEFAULT_BREAKER_FAILURES = 5
DEFAULT_BREAKER_COOLDOWN_S = 30.0


@runtime_checkable
class ModelLabeler(Protocol):
    """What the engine needs from a model labeler (see docs/internals.md)."""

    name: str
    label: str
    version: str
    feature_programs: dict[str, Any]

    def predict(self, features: dict[str, Any]) -> tuple[Any, float] | None: ...

    def predict_batch(self, rows: list[dict[str, Any]]) -> list[tuple[Any, float] | None]: ...

    def state(self) -> dict[str, Any]: ...


def _loc(spec: Any) -> tuple[str, int, int]:
    loc = getattr(spec, "loc", None)
    return (str(getattr(loc, "file", "") or ""), int(getattr(loc, "line", 0) or 0), int(getattr(loc, "column", 0) or 0))


def _issue(spec: Any, message: str) -> PolicyIssue:
    file, line, column = _loc(spec)
    return PolicyIssue(message=f"model {getattr(spec, 'name', '?')}: {message}", file=file, line=line, column=column)


def _base_dir(policy: Any, spec: Any) -> Path | None:
    """The folder a model's relative ``path`` is relative to; None when the loader already resolved it."""
    if getattr(spec, "path_text", None) is not None:
        # The policy loader joined the path with the folder of the file that declared it (an
        # include's own folder for an included model); joining again would double the folder.
        return None
    if getattr(policy, "base_dir", None) is not None:
        return Path(policy.base_dir)
    file = _loc(spec)[0]
    return Path(file).parent if file else Path.cwd()


def compile_features(features: Mapping[str, Any]) -> dict[str, Any]:
    """CEL programs for named feature expressions (text, or the policy's parsed ``Expr``)."""
    from activelabel import cel

    programs = {}
    for name, expr in features.items():
        ast = getattr(expr, "ast", None)
        programs[name] = cel.compile(ast if ast is not None else str(getattr(expr, "source", expr)))
    return programs


def _label_values(policy: Any, label: str) -> list[Any] | None:
    spec = (getattr(policy, "labels", None) or {}).get(label)
    values = getattr(spec, "values", None) if spec is not None else None
    return list(values) if values else None


def load_model_labeler(
    spec: Any,
    *,
    base_dir: Path | None = None,
    label_values: Sequence[Any] | None = None,
    feature_programs: Mapping[str, Any] | None = None,
    breaker: CircuitBreaker | None = None,
) -> ArtifactModelLabeler:
    """Load one model entry (anything with the ModelSpec attributes). Raises ModelError."""
    features = dict(getattr(spec, "features", None) or {})
    path = Path(str(spec.path))
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    card = read_model_card(path) if path.is_file() else None
    predictor = load_predictor(str(spec.type), path, list(features), card)
    check_features(predictor, list(features), card)
    if label_values is not None and predictor.kind != "river":
        classes = getattr(predictor, "classes", None) or (card or {}).get("classes") or []
        unknown = [c for c in classes if c not in label_values]
        if unknown:
            raise ModelError(f"predicts values outside label {spec.label}'s enum: {', '.join(map(str, unknown))}")
    version = str((card or {}).get("version") or getattr(spec, "version", None) or file_version(path))
    return ArtifactModelLabeler(
        name=str(spec.name),
        label=str(spec.label),
        version=version,
        predictor=predictor,
        feature_programs=feature_programs if feature_programs is not None else {},
        feature_names=list(features),
        min_confidence=float(getattr(spec, "min_confidence", 0.0) or 0.0),
        timeout_ms=getattr(spec, "timeout_ms", None),
        on_error=getattr(spec, "on_error", "abstain"),
        breaker=breaker or CircuitBreaker(
            failure_threshold=int(getattr(spec, "breaker_failures", None) or DEFAULT_BREAKER_FAILURES),
            cooldown_s=float(getattr(spec, "breaker_cooldown_s", None) or DEFAULT_BREAKER_COOLDOWN_S),
        ),
        path=path,
        card=card,
    )


def build_model_labelers(policy: Any) -> list[ArtifactModelLabeler]:
    """Load every ``models:`` entry of ``policy``; one PolicyError lists every bad model."""
    labelers: list[ArtifactModelLabeler] = []
    issues: list[PolicyIssue] = []
    for spec in getattr(policy, "models", None) or []:
        try:
            programs = compile_features(dict(getattr(spec, "features", None) or {}))
            labelers.append(load_model_labeler(
                spec,
                base_dir=_base_dir(policy, spec),
                label_values=_label_values(policy, str(spec.label)),
                feature_programs=programs,
            ))
        except PolicyError as exc:
            issues.extend(_issue(spec, i.message) for i in exc.issues)
        except Exception as exc:  # ModelError, CELSyntaxError: both are this model's fault
            # An absent scikit-learn / onnxruntime / river is not the artifact's fault: name the extra.
            missing = missing_extra(exc)
            issues.append(_issue(spec, str(missing) if missing is not None else str(exc)))
    if issues:
        raise PolicyError(issues=issues)
    return labelers


__all__ = [
    "ArtifactModelLabeler",
    "CircuitBreaker",
    "ModelLabeler",
    "build_model_labelers",
    "card_path_for",
    "compile_features",
    "load_model_labeler",
    "read_model_card",
]
