"""Features for training, computed from recorded decisions with the same CEL
expressions the policy gives the model, so training sees what serving sees."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from activelabel.quality.store import StoredDecision


def bindings_for(decision: StoredDecision, *, hide_label: str | None = None) -> dict[str, Any]:
    """What feature expressions see: the event, the labels set (minus the one being learned), and now.

    The label being trained is hidden: a feature reading it would leak the answer.
    """
    labels = {k: v for k, v in decision.labels.items() if k != hide_label}
    return {"event": decision.event, "labels": labels, "now": datetime.fromtimestamp(decision.ts, UTC)}


def feature_rows(decisions: Sequence[StoredDecision], programs: Mapping[str, Any], *,
                 hide_label: str | None = None) -> list[dict[str, Any]]:
    """One feature dict per decision; an expression that errors gives None (a missing feature)."""
    rows = []
    for d in decisions:
        scope = bindings_for(d, hide_label=hide_label)
        row: dict[str, Any] = {}
        for name, program in programs.items():
            try:
                row[name] = program.evaluate(scope)
            except Exception:  # noqa: BLE001 - CELEvalError: missing field or wrong type, same as serving
                row[name] = None
        rows.append(row)
    return rows


def auto_features(decisions: Sequence[StoredDecision], label: str, *, exclude: Sequence[str] = ()) -> dict[str, str]:
    """Every top-level scalar event field as a feature (``name: event.name``), minus the label's own name.

    A convenience for a first model; name features explicitly (``--feature``) when the
    event carries the answer under another name.
    """
    seen: dict[str, None] = {}
    for d in decisions[:1000]:
        for key, value in d.event.items():
            if isinstance(value, (str, int, float, bool)) and key.isidentifier():
                seen.setdefault(key, None)
    skip = {label, *exclude}
    # Record ids are unique per record: they teach a model nothing but the training set.
    ids = {k for k in seen if k.lower() in ("id", "uuid", "record_id") or k.lower().endswith("_id")}
    return {k: f"event.{k}" for k in seen if k not in skip | ids}


def training_pairs(decisions_by_id: Mapping[str, StoredDecision], truth: Mapping[str, Any], label: str, *,
                   rule_labels_min_confidence: float | None = None) -> list[tuple[StoredDecision, Any, str]]:
    """(decision, value, origin) to train on: every ground-truth item, plus, when asked, the
    lines the rules labeled with at least that confidence and nobody reviewed (weak labels).

    Rules are labeling functions: what they assert confidently is cheap training data
    (Snorkel's idea), and it lets the first model exist before people have reviewed
    two classes. Ground truth always wins over a rule.
    """
    pairs = [(decisions_by_id[rid], value, "truth") for rid, value in truth.items() if rid in decisions_by_id]
    if rule_labels_min_confidence is not None:
        for rid, d in decisions_by_id.items():
            source = d.sources.get(label) or ""
            if rid in truth or not source.startswith("rule:") or label not in d.labels:
                continue
            if float(d.confidences.get(label) or 0.0) >= rule_labels_min_confidence:
                pairs.append((d, d.labels[label], "rule"))
    return pairs
