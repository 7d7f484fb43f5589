"""The review queue: pick the items people should check, and write them as Label
Studio tasks with the matching labeling config.

Strategies rank the recorded decisions for one label:

- ``uncertainty``  lowest confidence first (an unset or defaulted label counts as confidence 0)
- ``margin``       smallest gap between the two most confident candidates
- ``entropy``      highest entropy of the candidates' confidence distribution
- ``disagreement`` labelers that disagreed (rule vs model, rule vs rule) first, then uncertainty
- ``random``       a seeded shuffle (the baseline)

Near-duplicates are suppressed: one item per template key (a chosen field, or the
event's text with digits masked), so a budget is not spent on fifty copies of one line.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import quoteattr

import orjson

from activelabel.quality.metrics import Vote, votes_from_explain
from activelabel.quality.report import field_value
from activelabel.quality.store import StoredDecision

STRATEGIES = ("uncertainty", "margin", "entropy", "disagreement", "random")
ID_KEY = "activelabel_id"
LABEL_KEY = "activelabel_label"
TEXT_KEY = "text"
# Any token holding a digit is a variable part: counts, ports, addresses, hex ids ("0244c1ec").
_VARIABLE = re.compile(r"\w*\d\w*")


def template_key(text: str) -> str:
    """Tokens with digits masked, then hashed: lines that differ only in ids, ports or times collide."""
    return hashlib.sha256(_VARIABLE.sub("#", text).encode()).hexdigest()[:16]


def dedup_key_for(field: str | None) -> Callable[[StoredDecision], str]:
    """Key function: template key of one event field, or of the whole event when no field is given."""
    def key(d: StoredDecision) -> str:
        value = field_value(d.event, field) if field else d.event
        text = value if isinstance(value, str) else orjson.dumps(value, option=orjson.OPT_SORT_KEYS, default=str).decode()
        return template_key(text)
    return key


@dataclass(frozen=True)
class ReviewItem:
    """One item chosen for review, with why (its score under the strategy)."""

    decision: StoredDecision
    label: str
    score: float
    predicted: Any
    confidence: float | None
    source: str | None


def _votes(d: StoredDecision, label: str, rule_values: Mapping[str, Any]) -> list[Vote]:
    exp = (d.explain.get("labels") or {}).get(label)
    if exp is None:
        return []
    return votes_from_explain(exp, rule_values)


def _confidence(d: StoredDecision, label: str) -> float:
    # A default is what a label falls back to when no rule or model decided: nobody is sure of it.
    if label not in d.labels or d.sources.get(label) == "default":
        return 0.0
    c = d.confidences.get(label)
    return 1.0 if c is None else float(c)


def _candidate_confidences(d: StoredDecision, label: str, votes: Sequence[Vote]) -> list[float]:
    confs = sorted((float(v.confidence) for v in votes if v.confidence is not None), reverse=True)
    return confs or [_confidence(d, label)]


def _score(strategy: str, d: StoredDecision, label: str, rule_values: Mapping[str, Any],
           model_dist: Mapping[Any, float] | None = None) -> float:
    """Higher means review sooner. ``model_dist`` is the model's full class distribution, when known."""
    if strategy == "uncertainty":
        return 1.0 - _confidence(d, label)
    votes = _votes(d, label, rule_values)
    if model_dist:
        probs = sorted(model_dist.values(), reverse=True)
    else:
        probs = _candidate_confidences(d, label, votes)
        probs = probs if len(probs) > 1 else [probs[0], 1.0 - probs[0]]
    if strategy == "margin":
        return 1.0 - abs(probs[0] - probs[1]) if len(probs) > 1 else 0.0
    if strategy == "entropy":
        total = sum(probs) or 1.0
        return -sum((p / total) * math.log(p / total) for p in probs if p > 0)
    if strategy == "disagreement":
        values = {str(v.value) for v in votes if v.value is not None}
        if model_dist and label in d.labels:
            # The model's own pick, even where a rule won the label: rule–model disagreement.
            values.add(str(max(model_dist, key=model_dist.__getitem__)))
            values.add(str(d.labels[label]))
        return (1.0 if len(values) > 1 else 0.0) + (1.0 - _confidence(d, label)) / 2
    raise ValueError(f"unknown strategy {strategy!r}")


def select_for_review(
    decisions: Sequence[StoredDecision],
    *,
    label: str,
    budget: int,
    strategy: str = "uncertainty",
    dedup: Callable[[StoredDecision], str] | None = None,
    exclude: set[str] | frozenset[str] = frozenset(),
    rule_values: Mapping[str, Any] | None = None,
    model_distributions: Mapping[str, Mapping[Any, float]] | None = None,
    seed: int = 0,
) -> list[ReviewItem]:
    """The ``budget`` items to review for ``label``, best first, one per dedup key.

    ``model_distributions`` (record id → class probabilities of the label's model)
    lets margin, entropy and disagreement use the model's whole distribution and
    see its opinion where a rule won.
    """
    dists = model_distributions or {}
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    pool = [d for d in decisions if d.record_id not in exclude]
    rule_values = rule_values or {}
    rng = random.Random(seed)
    if strategy == "random":
        rng.shuffle(pool)
        ranked = [(0.0, d) for d in pool]
    else:
        # Random tie-break: many items share a score (e.g. every unmatched line has confidence 0).
        keyed = [(_score(strategy, d, label, rule_values, dists.get(d.record_id)), rng.random(), d) for d in pool]
        keyed.sort(key=lambda t: (-t[0], t[1]))
        ranked = [(s, d) for s, _, d in keyed]
    chosen: list[ReviewItem] = []
    seen: set[str] = set()
    for score, d in ranked:
        if len(chosen) >= budget:
            break
        if dedup is not None:
            k = dedup(d)
            if k in seen:
                continue
            seen.add(k)
        chosen.append(ReviewItem(d, label, score, d.labels.get(label), d.confidences.get(label), d.sources.get(label)))
    return chosen


# -- Label Studio ----------------------------------------------------------------------------------

def _flat_fields(event: Mapping[str, Any]) -> dict[str, Any]:
    """Top-level event fields; nested values become JSON text (Label Studio shows strings best)."""
    out = {}
    for k, v in event.items():
        out[str(k)] = v if isinstance(v, (str, int, float, bool)) or v is None else orjson.dumps(v, default=str).decode()
    return out


def label_studio_tasks(items: Sequence[ReviewItem], *, text_field: str | None = None,
                       model_version: str | None = None, free_text: bool = False) -> list[dict[str, Any]]:
    """Label Studio tasks: ``data`` (our id, the label, the event's fields, a ``text`` to show) and
    ``predictions`` (our current value as a ``choices`` result, ``score`` = our confidence).

    ``free_text``: the label is above the reviewers' clearance (see `label_studio_config`): no
    prediction is offered to accept; the value as they may see it (a pseudonym) is in ``meta``.
    """
    tasks = []
    for item in items:
        d = item.decision
        text = field_value(d.event, text_field) if text_field else None
        if not isinstance(text, str):
            text = orjson.dumps(d.event, option=orjson.OPT_SORT_KEYS, default=str).decode() if text is None else str(text)
        data = {**_flat_fields(d.event), TEXT_KEY: text, ID_KEY: d.record_id, LABEL_KEY: item.label}
        task: dict[str, Any] = {"data": data, "meta": {"strategy_score": item.score, "source": item.source}}
        if free_text:
            if item.predicted is not None:
                task["meta"]["current_value"] = str(item.predicted)
        elif item.predicted is not None:
            task["predictions"] = [{
                "model_version": model_version or item.source or d.policy_version or "activelabel",
                "score": float(item.confidence) if item.confidence is not None else 0.0,
                "result": [{
                    "from_name": item.label, "to_name": TEXT_KEY, "type": "choices",
                    "value": {"choices": [str(item.predicted)]},
                }],
            }]
        tasks.append(task)
    return tasks


def label_studio_config(label: str, values: Sequence[Any], *, free_text: bool = False) -> str:
    """The labeling-config XML matching the tasks: the text, and one single choice per value.

    ``free_text``: a free-text box instead of choices, for a label above the reviewers'
    clearance (its values, pii or secret, are never listed).
    """
    if free_text:
        return (
            "<View>\n"
            f"  <Header value={quoteattr('Check the label: ' + label)}/>\n"
            f"  <Text name=\"{TEXT_KEY}\" value=\"${TEXT_KEY}\"/>\n"
            f"  <TextArea name={quoteattr(label)} toName=\"{TEXT_KEY}\" maxSubmissions=\"1\" editable=\"true\"/>\n"
            "</View>\n"
        )
    choices = "\n".join(f"    <Choice value={quoteattr(str(v))}/>" for v in values)
    return (
        "<View>\n"
        f"  <Header value={quoteattr('Check the label: ' + label)}/>\n"
        f"  <Text name=\"{TEXT_KEY}\" value=\"${TEXT_KEY}\"/>\n"
        f"  <Choices name={quoteattr(label)} toName=\"{TEXT_KEY}\" choice=\"single\" showInLine=\"true\">\n"
        f"{choices}\n"
        "  </Choices>\n"
        "</View>\n"
    )
