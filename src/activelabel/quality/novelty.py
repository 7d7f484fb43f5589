"""Novelty: how unlike anything the model was trained on a line is.

A model asked about a template it never saw still answers, often with high
confidence (a new template in BGL was called "not an alert" at 0.97). The signal
here is a distance to the training data: each line's text is reduced to its
template (variable parts masked, as the review queue's near-duplicate key does),
and its novelty is 1 − the largest Jaccard similarity between its template's words
and those of any template the model was trained on. 0 is "a template it was trained
on", 1 is "no word in common". A line at or above ``threshold`` is *novel*: the loop
flags it, the ``novelty`` review strategy sends it to people first, and drift
watches the novel share.

The masks catch numbers, ids, paths and addresses, not a variable part that is a
word (a user, a service, a table name: "removing kshell", "removing echo"). Those
are learned from the labels the model was trained on, as Drain does without them:
two training lines of the same class with the same number of words, agreeing in at
least ``MERGE_SIMILARITY`` of their positions, are one template, and the positions
where they differ are parameters (``<*>``). A line of that length then matches the
pattern whatever it has at those positions. Only what reviewers (or rules) said is
one class is merged, so two templates of one class that share little stay apart.

The index also knows each template's class (``classes``, from the training labels), so
`NoveltyIndex.nearest` answers the class of the most similar trained template: a label
source for lines the model is unsure of (a model's ``below_confidence: nearest-template``).

The index is a JSON file next to the model artifact (``<artifact>.novelty.json``),
written at training time from the same feature rows the model learned from.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from activelabel.quality.review import normalise_template

DEFAULT_THRESHOLD = 0.4
#: Drain3's default similarity threshold (``sim_th``): the share of positions two lines of one class
#: must agree in to be one template. Taken from Drain3, not measured on our data.
MERGE_SIMILARITY = 0.4
WILDCARD = "<*>"
_WORDS = re.compile(r"[A-Za-z_<>#]+")


def template_tokens(text: str) -> tuple[str, ...]:
    """The words of a line's template in order (masks like ``<ip>`` and ``#`` count as words)."""
    return tuple(w.lower() for w in _WORDS.findall(normalise_template(text)))


def template_words(text: str) -> frozenset[str]:
    """The words of a line's template (masks like ``<ip>`` and ``#`` count as words)."""
    return frozenset(template_tokens(text))


def learn_patterns(tokens: Iterable[Sequence[str]], labels: Iterable[Any]) -> list[tuple[str, ...]]:
    """The patterns of `learn_class_patterns`, without their classes."""
    return sorted({p for _, p in learn_class_patterns(tokens, labels)})


def learn_class_patterns(tokens: Iterable[Sequence[str]], labels: Iterable[Any]) -> list[tuple[str, tuple[str, ...]]]:
    """(class, template) pairs: templates with their word parameters, from labeled lines (Drain's merge step, within one class).

    Lines are taken in a fixed order (by class, then words), so the same training set gives the
    same patterns; a line joins the pattern of its class and length whose constant words it
    matches most, when they are at least ``MERGE_SIMILARITY`` of its positions (parameters do not
    count, as in Drain3, so a pattern never becomes mostly parameters). Only patterns with a
    parameter are returned: the others are plain templates already.
    """
    clusters: dict[tuple[str, int], list[list[str]]] = {}
    for label, toks in sorted({(str(v), tuple(t)) for t, v in zip(tokens, labels, strict=True) if t}):
        group = clusters.setdefault((label, len(toks)), [])
        best, best_same = None, -1
        for pattern in group:
            same = sum(1 for a, b in zip(pattern, toks, strict=True) if a == b)
            if same > best_same:
                best, best_same = pattern, same
        if best is not None and best_same >= MERGE_SIMILARITY * len(toks):
            for i, tok in enumerate(toks):
                if best[i] != tok:
                    best[i] = WILDCARD
        else:
            group.append(list(toks))
    return sorted({(label, tuple(p)) for (label, _), group in clusters.items() for p in group if WILDCARD in p})


def row_text(row: Mapping[str, Any], names: Sequence[str]) -> str:
    """The text novelty reads from one feature row: the text features, in order."""
    return " | ".join("" if row.get(n) is None else str(row.get(n)) for n in names)


def _similarity(a: frozenset[str], b: frozenset[str]) -> float:
    union = len(a | b)
    return len(a & b) / union if union else 1.0


@dataclass
class NoveltyIndex:
    """The templates a model was trained on, and how to measure distance to them."""

    text_features: list[str]
    templates: list[frozenset[str]] = field(default_factory=list)
    threshold: float = DEFAULT_THRESHOLD
    #: Templates with learned word parameters (``<*>``), see `learn_patterns`.
    patterns: list[tuple[str, ...]] = field(default_factory=list)
    #: The class of each template (same order as ``templates``; None: lines of several classes had it, or
    #: the index was built without labels) and of each pattern (same order as ``patterns``).
    classes: list[str | None] = field(default_factory=list)
    pattern_classes: list[str | None] = field(default_factory=list)
    _cache: dict[tuple[str, ...], tuple[float, str | None]] = field(default_factory=dict, repr=False)
    _by_length: dict[int, list[tuple[tuple[str, ...], frozenset[str], str | None]]] | None = field(default=None, repr=False)

    @classmethod
    def build(cls, rows: Iterable[Mapping[str, Any]], text_features: Sequence[str], *,
              labels: Sequence[Any] | None = None, threshold: float = DEFAULT_THRESHOLD) -> NoveltyIndex:
        """The index of ``rows``; with ``labels`` (one per row: what the model learned), also the
        word parameters of each class's templates and each template's (and pattern's) class."""
        tokens = [template_tokens(row_text(r, text_features)) for r in rows]
        seen = sorted({frozenset(t) for t in tokens}, key=sorted)
        if labels is None:
            return cls(list(text_features), seen, threshold, [], [None] * len(seen), [])
        owner: dict[frozenset[str], set[str]] = {}
        for t, v in zip(tokens, labels, strict=True):
            owner.setdefault(frozenset(t), set()).add(str(v))
        classes = [next(iter(owner[t])) if len(owner[t]) == 1 else None for t in seen]
        by_pattern: dict[tuple[str, ...], set[str]] = {}
        for c, pat in learn_class_patterns(tokens, labels):
            by_pattern.setdefault(pat, set()).add(c)
        patterns = sorted(by_pattern)
        pattern_classes = [next(iter(by_pattern[p])) if len(by_pattern[p]) == 1 else None for p in patterns]
        return cls(list(text_features), seen, threshold, patterns, classes, pattern_classes)

    def score(self, row: Mapping[str, Any]) -> float:
        """0 (a trained template) … 1 (nothing in common with any trained template)."""
        return self.score_tokens(template_tokens(row_text(row, self.text_features)))

    def score_text(self, text: str) -> float:
        """The novelty of one text (what the ``type: novelty`` enricher reads from its key)."""
        return self.score_tokens(template_tokens(text))

    def score_tokens(self, tokens: Sequence[str]) -> float:
        """The novelty of a template given as its words in order (an empty index scores everything 1.0).

        Against a learned pattern of the same length, the line's words at the pattern's parameter
        positions count as the parameter: "removing echo" is the pattern "removing <*>"."""
        return 1.0 - self._best(tokens)[0]

    def nearest(self, tokens: Sequence[str]) -> tuple[str | None, float]:
        """(the class of the most similar trained template, its similarity 0..1): what `score_tokens`
        measured, with whose template. The class is None when templates of several classes are
        equally similar, or when the index has no classes (built without labels)."""
        similarity, cls = self._best(tokens)
        return cls, similarity

    def _best(self, tokens: Sequence[str]) -> tuple[float, str | None]:
        key = tuple(tokens)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        words = frozenset(key)
        best, owners = 0.0, set()

        def consider(sim: float, owner: str | None) -> None:
            nonlocal best, owners
            if sim > best:
                best, owners = sim, {owner}
            elif sim == best and sim > 0:
                owners.add(owner)

        has_classes = len(self.classes) == len(self.templates)
        for n, t in enumerate(self.templates):
            consider(_similarity(words, t), self.classes[n] if has_classes else None)
        if self.patterns:
            if self._by_length is None:
                self._by_length = {}
                has = len(self.pattern_classes) == len(self.patterns)
                for n, p in enumerate(self.patterns):
                    self._by_length.setdefault(len(p), []).append((p, frozenset(p), self.pattern_classes[n] if has else None))
            for pattern, pattern_words, owner in self._by_length.get(len(key), ()):
                masked = frozenset(WILDCARD if p == WILDCARD else w for p, w in zip(pattern, key, strict=True))
                consider(_similarity(masked, pattern_words), owner)
        out = (best, next(iter(owners)) if len(owners) == 1 else None)
        self._cache[key] = out
        return out

    def scores(self, rows: Iterable[Mapping[str, Any]]) -> list[float]:
        return [self.score(r) for r in rows]

    def is_novel(self, score: float) -> bool:
        return score >= self.threshold

    def to_json(self) -> dict[str, Any]:
        return {"text_features": self.text_features, "threshold": self.threshold,
                "templates": [sorted(t) for t in self.templates],
                "patterns": [list(t) for t in self.patterns],
                "classes": list(self.classes), "pattern_classes": list(self.pattern_classes)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> NoveltyIndex:
        return cls(list(data.get("text_features", ())), [frozenset(t) for t in data.get("templates", ())],
                   float(data.get("threshold", DEFAULT_THRESHOLD)), [tuple(t) for t in data.get("patterns", ())],
                   [None if c is None else str(c) for c in data.get("classes", ())],
                   [None if c is None else str(c) for c in data.get("pattern_classes", ())])

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.write_bytes(orjson.dumps(self.to_json()))
        return p

    @classmethod
    def load(cls, path: str | Path) -> NoveltyIndex:
        return cls.from_json(orjson.loads(Path(path).read_bytes()))


def novelty_path_for(artifact: str | Path) -> Path:
    """Where a model's novelty index lives: next to the artifact."""
    p = Path(artifact)
    return p.with_name(p.name + ".novelty.json")
