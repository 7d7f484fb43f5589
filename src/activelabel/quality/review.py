"""The review queue: pick the items people should check, and write them as Label
Studio tasks with the matching labeling config.

Strategies rank the recorded decisions for one label:

- ``uncertainty``  lowest confidence first (an unset or defaulted label counts as confidence 0)
- ``margin``       smallest gap between the two most confident candidates
- ``entropy``      highest entropy of the candidates' confidence distribution
- ``disagreement`` labelers that disagreed (rule vs model, rule vs rule) first, then uncertainty
- ``novelty``      lines least like anything the model was trained on first, then uncertainty
- ``random``       a seeded shuffle (the baseline)

Near-duplicates are suppressed: one item per template key (a chosen field, or the
event's text with IPs, paths, hex ids and signed numbers masked), so a budget is not
spent on fifty copies of one line.
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

STRATEGIES = ("uncertainty", "margin", "entropy", "disagreement", "novelty", "random")
#: Strategies that rank on the model's class distribution: without the policy's model they rank like uncertainty.
NEEDS_MODEL = ("margin", "entropy", "disagreement")
ID_KEY = "activelabel_id"
LABEL_KEY = "activelabel_label"
TEXT_KEY = "text"
# Variable parts, most specific first: IPs (with a port), paths, hex ids, then any token holding a
# digit with its sign ("blk_-123" and "blk_123" are one template, "0244c1ec" is an id).
_VARIABLES = (
    (re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?::\d+)?"), "<ip>"),
    (re.compile(r"\b[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){3,}\b"), "<hex>"),
    (re.compile(r"(?:[\w.~-]*/)+[\w.~-]*"), "<path>"),
    (re.compile(r"\b0[xX][0-9a-fA-F]+\b"), "<hex>"),
    (re.compile(r"[\w+-]*\d[\w+-]*"), "#"),
)
# A list of ids ("blk_1 blk_2 blk_3") is one variable part, however long.
_REPEATS = re.compile(r"(\S+)(?:\s+\1)+")


def normalise_template(text: str) -> str:
    """The text with its variable parts masked: what stays is the template a logger printed from."""
    for pattern, mask in _VARIABLES:
        text = pattern.sub(mask, text)
    return _REPEATS.sub(r"\1", text)


def template_key(text: str) -> str:
    """The normalised template, hashed: lines that differ only in ids, ports, paths or times collide."""
    return hashlib.sha256(normalise_template(text).encode()).hexdigest()[:16]


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
           model_dist: Mapping[Any, float] | None = None, novelty: Mapping[str, float] | None = None) -> float:
    """Higher means review sooner. ``model_dist`` is the model's full class distribution, when known."""
    if strategy == "uncertainty":
        return 1.0 - _confidence(d, label)
    if strategy == "novelty":
        # Novel lines first (a whole point above any uncertainty), then the least certain.
        n = (novelty or {}).get(d.record_id, 0.0)
        return n + (1.0 - _confidence(d, label)) / 2
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
    novelty: Mapping[str, float] | None = None,
    template_words: Mapping[str, frozenset[str]] | None = None,
    seed: int = 0,
    fill: bool = False,
    confidence: Mapping[str, float] | None = None,
    uncertainty_share: float = 0.0,
    second_examples: Mapping[str, tuple[str, float]] | None = None,
    novelty_threshold: float | None = None,
) -> list[ReviewItem]:
    """The ``budget`` items to review for ``label``, best first, one per dedup key.

    ``model_distributions`` (record id → class probabilities of the label's model)
    lets margin, entropy and disagreement use the model's whole distribution and
    see its opinion where a rule won. ``novelty`` (record id → 0..1, see ``quality.novelty``)
    ranks the ``novelty`` strategy; without it that strategy ranks like uncertainty. With
    ``fill``, a pool with fewer templates than ``budget`` gets the rest from the duplicates.
    With ``template_words`` (record id → the words of its template) the ``novelty`` strategy
    picks greedily: after each pick, the others' novelty is lowered to their distance from
    the picked line too (farthest-first), so one round does not spend its budget on ten
    variants of one new template. With ``confidence`` (record id → how sure the labeling is,
    e.g. the model's top probability) and ``uncertainty_share`` > 0, that share of the budget
    goes first to the least certain lines (one per template), and farthest-first fills the rest
    counting them as picked: novelty alone passes over a new class whose lines look like a known
    one ("Connection timed out" next to "Link has been severed"), uncertainty alone over a
    template nobody has seen that the model happens to be sure of. With ``second_examples``
    (record id → (class, priority): lines that would be a second, different example of a class
    reviewed once, see `Loop._second_examples`) and ``novelty_threshold``, the farthest-first
    part, once no line left is novel (below the threshold against training and the picks so
    far), takes those first, the highest priority of each class, one per class: the budget
    then goes to what a second example teaches (the class's word parameters, a second line
    for the model) instead of to lines the model already gets right.
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
    elif strategy == "novelty" and novelty is not None and template_words is not None:
        return _novelty_greedy(pool, label, budget, novelty, template_words, dedup, rng, fill,
                               confidence=confidence, uncertainty_share=uncertainty_share,
                               second_examples=second_examples, novelty_threshold=novelty_threshold)
    else:
        # Random tie-break: many items share a score (e.g. every unmatched line has confidence 0).
        keyed = [(_score(strategy, d, label, rule_values, dists.get(d.record_id), novelty), rng.random(), d)
                 for d in pool]
        keyed.sort(key=lambda t: (-t[0], t[1]))
        ranked = [(s, d) for s, _, d in keyed]
    chosen: list[ReviewItem] = []
    seen: set[str] = set()
    skipped: list[tuple[float, StoredDecision]] = []
    for score, d in ranked:
        if len(chosen) >= budget:
            break
        if dedup is not None:
            k = dedup(d)
            if k in seen:
                skipped.append((score, d))
                continue
            seen.add(k)
        chosen.append(ReviewItem(d, label, score, d.labels.get(label), d.confidences.get(label), d.sources.get(label)))
    # Fewer templates than budget: spend the rest on the best of the duplicates, in rank order.
    for score, d in skipped[: max(0, budget - len(chosen))] if fill else ():
        chosen.append(ReviewItem(d, label, score, d.labels.get(label), d.confidences.get(label), d.sources.get(label)))
    return chosen


def _jaccard_distance(a: frozenset[str], b: frozenset[str]) -> float:
    union = len(a | b)
    return 1.0 - (len(a & b) / union if union else 1.0)


def _novelty_greedy(pool: Sequence[StoredDecision], label: str, budget: int, novelty: Mapping[str, float],
                    words: Mapping[str, frozenset[str]], dedup: Callable[[StoredDecision], str] | None,
                    rng: random.Random, fill: bool = False, *, confidence: Mapping[str, float] | None = None,
                    uncertainty_share: float = 0.0, second_examples: Mapping[str, tuple[str, float]] | None = None,
                    novelty_threshold: float | None = None) -> list[ReviewItem]:
    """Farthest-first: the most novel line, then the line most novel against training *and* the picks so far
    (after the least certain lines, when ``confidence`` and ``uncertainty_share`` ask for them; and once
    nothing left is novel, second examples of classes reviewed once first, when ``second_examples`` are given)."""
    tie = {d.record_id: rng.random() for d in pool}
    current = {d.record_id: novelty.get(d.record_id, 0.0) for d in pool}
    empty: frozenset[str] = frozenset()
    remaining = list(pool)
    chosen: list[ReviewItem] = []
    seen: set[str] = set()
    skipped: list[StoredDecision] = []

    def score(d: StoredDecision) -> float:
        return current[d.record_id] + (1.0 - _confidence(d, label)) / 2

    unsure = round(budget * uncertainty_share) if confidence else 0
    # Least certain last, so pop() takes the next one; ids taken so far are skipped.
    by_doubt = sorted(pool, key=lambda d: ((confidence or {}).get(d.record_id, 0.0), tie[d.record_id]), reverse=True)
    taken: set[str] = set()
    # Second examples, best last (pop() takes the next); a class gets one per round.
    seconds = sorted((d for d in pool if d.record_id in (second_examples or {})),
                     key=lambda d: ((second_examples or {})[d.record_id][1], tie[d.record_id]))
    classes_taken: set[str] = set()
    while remaining and len(chosen) < budget:
        if len(chosen) < unsure and by_doubt:
            best = by_doubt.pop()
            if best.record_id in taken:
                continue
        else:
            best = max(remaining, key=lambda d: (score(d), tie[d.record_id]))
            if seconds and novelty_threshold is not None and current[best.record_id] < novelty_threshold:
                second = seconds.pop()
                cls = (second_examples or {})[second.record_id][0]
                if second.record_id in taken or cls in classes_taken:
                    continue
                classes_taken.add(cls)
                best = second
        remaining.remove(best)
        taken.add(best.record_id)
        if dedup is not None:
            k = dedup(best)
            if k in seen:
                skipped.append(best)
                continue
            seen.add(k)
        chosen.append(ReviewItem(best, label, score(best), best.labels.get(label), best.confidences.get(label),
                                 best.sources.get(label)))
        picked = words.get(best.record_id, empty)
        cache: dict[frozenset[str], float] = {}
        for d in remaining:
            w = words.get(d.record_id, empty)
            dist = cache.get(w)
            if dist is None:
                dist = cache[w] = _jaccard_distance(w, picked)
            if dist < current[d.record_id]:
                current[d.record_id] = dist
    # Fewer templates than budget: the rest from the duplicates, in the order they came up.
    for d in skipped[: max(0, budget - len(chosen))] if fill else ():
        chosen.append(ReviewItem(d, label, score(d), d.labels.get(label), d.confidences.get(label), d.sources.get(label)))
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


def label_choices(store: Any, label: str, decisions: Sequence[StoredDecision] | None = None) -> tuple[list[str], bool]:
    """(the values a reviewer picks from, whether a new value may be typed) for ``label``.

    A closed enum offers its values; an enum with ``open: true`` its values, then the ones
    people added (first come first); a string label (no values) what people gave and what the
    labelers produced, sorted. Open sets take a typed value.
    """
    registry = store.registry()
    info = registry.labels.get(label) if registry else None
    learned = [str(v["value"]) for v in store.learned_values(label)]
    if info is not None and info.values:
        listed = [str(v) for v in info.values]
        if not info.open:
            return listed, False
        return listed + [v for v in dict.fromkeys(learned) if v not in listed], True
    ds = decisions if decisions is not None else list(store.decisions())
    return sorted(set(learned) | {str(d.labels[label]) for d in ds if label in d.labels}), True


def label_studio_config(label: str, values: Sequence[Any], *, open_set: bool = False, free_text: bool = False) -> str:
    """The labeling-config XML matching the tasks: the text, and one single choice per value.

    ``open_set`` (a label whose values are learned: ``type: string``, or an enum with
    ``open: true``) adds a free-text box
    named ``<label>__new``: a value typed there wins over the choice on import, so the
    first reviewer of an empty label set can answer at all.
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
    free = (f"  <TextArea name={quoteattr(label + '__new')} toName=\"{TEXT_KEY}\" maxSubmissions=\"1\" "
            f"placeholder=\"or type a new value\"/>\n") if open_set else ""
    body = f"  <Choices name={quoteattr(label)} toName=\"{TEXT_KEY}\" choice=\"single\" showInLine=\"true\">\n" \
           f"{choices}\n  </Choices>\n" if values else ""
    return (
        "<View>\n"
        f"  <Header value={quoteattr('Check the label: ' + label)}/>\n"
        f"  <Text name=\"{TEXT_KEY}\" value=\"${TEXT_KEY}\"/>\n"
        f"{body}{free}"
        "</View>\n"
    )
