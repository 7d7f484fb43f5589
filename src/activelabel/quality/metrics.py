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


#: How many values a report shows by name in any table or plot; the rest are one "other" row.
#: Free-form string labels can have a value per record: every figure stays this size.
TOP_VALUES = 20

#: The row / column / bin that stands for every value past the top ones.
OTHER = "(other)"


def top_values(counts: Mapping[str, int], top: int = TOP_VALUES) -> list[str]:
    """The ``top`` values with the highest counts (ties by value), in that order."""
    return [v for v, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]]


def classification_summary(y_true: Sequence[Any], y_pred: Sequence[Any], *, top: int = TOP_VALUES) -> dict[str, Any]:
    """Accuracy, per-value precision/recall/F1/support, macro-F1 and the confusion matrix.

    Values are compared as strings; a prediction of None is the class ``(unset)``.
    Accuracy and macro-F1 are exact over every value that is true or predicted (macro-F1
    averages over all of them, as scikit-learn does). ``per_value`` and the confusion
    matrix show the ``top`` values with the most true plus predicted items; the rest are
    folded into one ``(other)`` row (and column), so memory and output stay linear in the
    number of items however many distinct values a label has. ``values_total`` counts them all.
    """
    t = [_key(v) for v in y_true]
    p = [_key(v) for v in y_pred]
    if not t:
        return {"n": 0, "accuracy": None, "macro_f1": None, "per_value": {}, "values_total": 0,
                "confusion": {"values": [], "matrix": [], "other_values": 0}}
    true_n: Counter[str] = Counter(t)
    pred_n: Counter[str] = Counter(p)
    hits: Counter[str] = Counter(a for a, b in zip(t, p, strict=True) if a == b)
    values = set(true_n) | set(pred_n)

    def figures(tp: int, n_pred: int, n_true: int) -> tuple[float, float, float]:
        prec = tp / n_pred if n_pred else 0.0
        rec = tp / n_true if n_true else 0.0
        return prec, rec, (2 * prec * rec / (prec + rec) if prec + rec else 0.0)

    f1_sum = sum(figures(hits[v], pred_n[v], true_n[v])[2] for v in values)
    shown = sorted(top_values(true_n + pred_n, top))
    rest = values - set(shown)
    per_value: dict[str, dict[str, Any]] = {}
    for v in shown:
        prec, rec, f1 = figures(hits[v], pred_n[v], true_n[v])
        per_value[v] = {"precision": prec, "recall": rec, "f1": f1, "support": true_n[v]}
    if rest:
        # The folded values as one class: an item is right when its own value was predicted.
        prec, rec, f1 = figures(sum(hits[v] for v in rest), sum(pred_n[v] for v in rest), sum(true_n[v] for v in rest))
        per_value[OTHER] = {"precision": prec, "recall": rec, "f1": f1, "support": sum(true_n[v] for v in rest),
                            "values": len(rest)}
    axis = [*shown, OTHER] if rest else shown
    index = {v: i for i, v in enumerate(shown)}
    other = len(shown)
    matrix = [[0] * len(axis) for _ in axis]
    for a, b in zip(t, p, strict=True):
        matrix[index.get(a, other)][index.get(b, other)] += 1
    return {
        "n": len(t),
        "accuracy": sum(hits.values()) / len(t),
        "macro_f1": f1_sum / len(values),
        "per_value": per_value,
        "values_total": len(values),
        "confusion": {"values": axis, "matrix": matrix, "other_values": len(rest)},
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
            "polarity": sorted(s.polarity)[:TOP_VALUES] + ([f"{OTHER} {len(s.polarity) - TOP_VALUES} more"]
                                                          if len(s.polarity) > TOP_VALUES else []),
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


def value_distribution(values: Iterable[Any], top: int | None = None) -> dict[str, int]:
    """Count per value, most common first; past ``top`` values the rest are summed under ``(other)``."""
    counts = Counter(_key(v) for v in values).most_common()
    if top is None or len(counts) <= top:
        return dict(counts)
    shown = dict(counts[:top])
    shown[OTHER] = sum(n for _, n in counts[top:])
    return shown
