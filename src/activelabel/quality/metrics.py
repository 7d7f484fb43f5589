"""Quality figures: accuracy, per-value precision/recall/F1, macro-F1, confusion,
coverage, the per-source summary (Snorkel's LF summary) and conflict rate.

Inputs are plain sequences so the same functions serve the store, JSONL files
and the BGL experiment.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: How an unset label is shown in confusion matrices (the labeler abstained).
UNSET = "(unset)"


def _key(v: Any) -> str:
    return UNSET if v is None else str(v)


def classification_summary(y_true: Sequence[Any], y_pred: Sequence[Any]) -> dict[str, Any]:
    """Accuracy, per-value precision/recall/F1/support, macro-F1 and the confusion matrix.

    Values are compared as strings; a prediction of None is the class ``(unset)``.
    Macro-F1 averages over every value that is true or predicted, as scikit-learn does.
    """
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    t = [_key(v) for v in y_true]
    p = [_key(v) for v in y_pred]
    if not t:
        return {"n": 0, "accuracy": None, "macro_f1": None, "per_value": {}, "confusion": {"values": [], "matrix": []}}
    values = sorted(set(t) | set(p))
    import warnings

    with warnings.catch_warnings():
        # sklearn warns when only one value occurs; with explicit labels the figures are still right.
        warnings.simplefilter("ignore", UserWarning)
        prec, rec, f1, support = precision_recall_fscore_support(t, p, labels=values, zero_division=0)
        matrix = confusion_matrix(t, p, labels=values).tolist()
    per_value = {v: {"precision": float(prec[i]), "recall": float(rec[i]), "f1": float(f1[i]), "support": int(support[i])}
                 for i, v in enumerate(values)}
    correct = sum(1 for a, b in zip(t, p, strict=True) if a == b)
    return {
        "n": len(t),
        "accuracy": correct / len(t),
        "macro_f1": float(sum(f1) / len(values)),
        "per_value": per_value,
        "confusion": {"values": values, "matrix": matrix},
    }


@dataclass
class Vote:
    """One labeler's say on one label of one record: its source, value (None if unknown) and confidence."""

    source: str
    value: Any
    confidence: float | None = None


@dataclass
class SourceStats:
    polarity: set[str] = field(default_factory=set)
    fired: int = 0
    overlaps: int = 0
    conflicts: int = 0
    correct: int = 0
    incorrect: int = 0


def votes_from_explain(label_explain: Mapping[str, Any], rule_values: Mapping[str, Any]) -> list[Vote]:
    """Every labeler that spoke for one label, from ``decision.explain()['labels'][label]``.

    The winner's value is known; matched-but-lost rules get their constant value
    from the policy when it has one. An explain that lists ``candidates`` (source,
    value, confidence) is used as is.
    """
    candidates = label_explain.get("candidates")
    if candidates:
        return [Vote(str(c.get("source")), c.get("value"), c.get("confidence")) for c in candidates]
    votes: list[Vote] = []
    winner = label_explain.get("source")
    if winner and winner != "default":
        votes.append(Vote(str(winner), label_explain.get("value"), label_explain.get("confidence")))
    for ref in [*label_explain.get("matched", []), *label_explain.get("lost", [])]:
        # The engine lists sources ("rule:<id>", "model:<name>@<v>"); bare rule ids are accepted too.
        source = ref if str(ref).startswith(("rule:", "model:", "enricher:")) else f"rule:{ref}"
        if any(v.source == source for v in votes):
            continue
        rule_id = source[len("rule:"):] if source.startswith("rule:") else None
        votes.append(Vote(source, rule_values.get(rule_id) if rule_id else None))
    return votes


def _conflicting(votes: Sequence[Vote]) -> bool:
    known = {_key(v.value) for v in votes if v.value is not None}
    return len(known) > 1


def source_summary(records: Iterable[tuple[Sequence[Vote], Any]], total: int) -> dict[str, dict[str, Any]]:
    """Per source, in the shape of Snorkel's LF summary.

    ``records`` yields (votes for one record's label, its true value or None).
    Coverage, overlaps and conflicts are fractions of ``total`` records; correct and
    incorrect count records with ground truth; empirical accuracy is correct over both.
    """
    stats: dict[str, SourceStats] = {}
    for votes, truth in records:
        for vote in votes:
            s = stats.setdefault(vote.source, SourceStats())
            s.fired += 1
            if vote.value is not None:
                s.polarity.add(_key(vote.value))
            others = [o for o in votes if o.source != vote.source]
            if others:
                s.overlaps += 1
            if others and vote.value is not None and any(o.value is not None and _key(o.value) != _key(vote.value)
                                                         for o in others):
                s.conflicts += 1
            if truth is not None and vote.value is not None:
                if _key(vote.value) == _key(truth):
                    s.correct += 1
                else:
                    s.incorrect += 1
    denom = max(total, 1)
    return {
        src: {
            "polarity": sorted(s.polarity),
            "coverage": s.fired / denom,
            "overlaps": s.overlaps / denom,
            "conflicts": s.conflicts / denom,
            "correct": s.correct,
            "incorrect": s.incorrect,
            "empirical_accuracy": (s.correct / (s.correct + s.incorrect)) if (s.correct + s.incorrect) else None,
        }
        for src, s in sorted(stats.items())
    }


def conflict_rate(per_record_votes: Iterable[Sequence[Vote]]) -> tuple[float, int]:
    """(fraction of records whose labelers disagreed on the value, number of records)."""
    n = conflicts = 0
    for votes in per_record_votes:
        n += 1
        conflicts += _conflicting(votes)
    return (conflicts / n if n else 0.0), n


def value_distribution(values: Iterable[Any]) -> dict[str, int]:
    return dict(Counter(_key(v) for v in values).most_common())
