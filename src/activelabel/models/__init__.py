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
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

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

if TYPE_CHECKING:
    from activelabel.cel import Program
    from activelabel.policy import Expr, ModelSpec, Policy

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


class ModelEntry(Protocol):
    """The least a model entry given to `load_model_labeler` must have (a `ModelSpec` has it all).

    The optional fields (``features``, ``min_confidence``, ``timeout_ms``, ``on_error``,
    ``version``, ``breaker_failures``, ``breaker_cooldown_s``) take ModelSpec's
    defaults when the entry has none, so scripts and tests can pass a small namespace.
    """

    name: str
    label: str
    type: str
    path: Path | str


def _issue(spec: ModelSpec, message: str) -> PolicyIssue:
    loc = spec.loc
    return PolicyIssue(message=f"model {spec.name}: {message}", file=loc.file, line=loc.line, column=loc.column)


def _base_dir(policy: Policy, spec: ModelSpec) -> Path | None:
    """The folder a model's relative ``path`` is relative to; None when the loader already resolved it."""
    if getattr(spec, "path_text", None) is not None:
        # The policy loader joined the path with the folder of the file that declared it (an
        # include's own folder for an included model); joining again would double the folder.
        return None
    if policy.base_dir is not None:
        return Path(policy.base_dir)
    file = spec.loc.file
    return Path(file).parent if file else Path.cwd()


def compile_features(features: Mapping[str, Expr | str]) -> dict[str, Program]:
    """CEL programs for named feature expressions (text, or the policy's parsed ``Expr``)."""
    from activelabel import cel

    programs = {}
    for name, expr in features.items():
        if isinstance(expr, str):
            programs[name] = cel.compile(expr)
        else:
            programs[name] = cel.compile(expr.ast if expr.ast is not None else expr.source)
    return programs


def _label_values(policy: Policy, label: str) -> list[Any] | None:
    spec = policy.labels.get(label)
    values = spec.values if spec is not None and not spec.open else None  # an open enum learns new classes
    return list(values) if values else None


def load_model_labeler(
    spec: ModelSpec | ModelEntry,
    *,
    base_dir: Path | None = None,
    label_values: Sequence[Any] | None = None,
    feature_programs: Mapping[str, Program] | None = None,
    breaker: CircuitBreaker | None = None,
) -> ArtifactModelLabeler:
    """Load one ``models:`` entry (a ModelSpec, or anything with the ModelEntry attributes). Raises ModelError."""
    features = dict(getattr(spec, "features", None) or {})
    path = Path(str(spec.path))
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    card = read_model_card(path) if path.is_file() else None
    predictor = load_predictor(str(spec.type), path, list(features), card)
    check_features(predictor, list(features), card)
    if label_values is not None and predictor.kind != "river":
        # Not every predictor knows its classes (ONNX without a card); the card may say instead.
        classes = getattr(predictor, "classes", None) or (card or {}).get("classes") or []
        unknown = [c for c in classes if c not in label_values]
        if unknown:
            raise ModelError(f"predicts values outside label {spec.label}'s enum: {', '.join(map(str, unknown))}")
    version = str((card or {}).get("version") or getattr(spec, "version", None) or file_version(path))
    nearest = None
    if getattr(spec, "below_confidence", "abstain") == "nearest-template":
        from activelabel.quality.novelty import NoveltyIndex, novelty_path_for

        index_path = novelty_path_for(path)
        if not index_path.is_file():
            raise ModelError(f"below_confidence: nearest-template needs the model's novelty index {index_path.name} "
                             "(`activelabel loop` writes it next to each model)")
        nearest = NoveltyIndex.load(index_path)
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
        nearest=nearest,
    )


def build_model_labelers(policy: Policy) -> list[ArtifactModelLabeler]:
    """Load every ``models:`` entry of ``policy``; one PolicyError lists every bad model."""
    labelers: list[ArtifactModelLabeler] = []
    issues: list[PolicyIssue] = []
    for spec in policy.models:
        try:
            programs = compile_features(dict(spec.features))
            labelers.append(load_model_labeler(
                spec,
                base_dir=_base_dir(policy, spec),
                label_values=_label_values(policy, str(spec.label)),
                feature_programs=programs,
            ))
        except PolicyError as exc:
            issues.extend(_issue(spec, i.message) for i in exc.issues)
        except Exception as exc:  # noqa: BLE001 - ModelError, CELSyntaxError, a broken artifact: all this model's fault
            # An absent scikit-learn / onnxruntime / river is not the artifact's fault: name the extra.
            missing = missing_extra(exc)
            issues.append(_issue(spec, str(missing) if missing is not None else str(exc)))
    if issues:
        raise PolicyError(issues=issues)
    return labelers


__all__ = [
    "ArtifactModelLabeler",
    "CircuitBreaker",
    "ModelEntry",
    "ModelLabeler",
    "build_model_labelers",
    "card_path_for",
    "compile_features",
    "load_model_labeler",
    "read_model_card",
]
