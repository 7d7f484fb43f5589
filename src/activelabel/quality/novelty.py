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
    """Templates with their word parameters, from labeled lines (Drain's merge step, within one class).

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
    return sorted({tuple(p) for group in clusters.values() for p in group if WILDCARD in p})


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
    _cache: dict[tuple[str, ...], float] = field(default_factory=dict, repr=False)
    _by_length: dict[int, list[tuple[tuple[str, ...], frozenset[str]]]] | None = field(default=None, repr=False)

    @classmethod
    def build(cls, rows: Iterable[Mapping[str, Any]], text_features: Sequence[str], *,
              labels: Sequence[Any] | None = None, threshold: float = DEFAULT_THRESHOLD) -> NoveltyIndex:
        """The index of ``rows``; with ``labels`` (one per row: what the model learned), also the
        word parameters of each class's templates."""
        tokens = [template_tokens(row_text(r, text_features)) for r in rows]
        seen = {frozenset(t) for t in tokens}
        patterns = learn_patterns(tokens, labels) if labels is not None else []
        return cls(list(text_features), sorted(seen, key=sorted), threshold, patterns)

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
        key = tuple(tokens)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        words = frozenset(key)
        best = 0.0
        for t in self.templates:
            sim = _similarity(words, t)
            if sim > best:
                best = sim
                if best == 1.0:
                    break
        if best < 1.0 and self.patterns:
            if self._by_length is None:
                self._by_length = {}
                for p in self.patterns:
                    self._by_length.setdefault(len(p), []).append((p, frozenset(p)))
            for pattern, pattern_words in self._by_length.get(len(key), ()):
                masked = frozenset(WILDCARD if p == WILDCARD else w for p, w in zip(pattern, key, strict=True))
                best = max(best, _similarity(masked, pattern_words))
        self._cache[key] = 1.0 - best
        return 1.0 - best

    def scores(self, rows: Iterable[Mapping[str, Any]]) -> list[float]:
        return [self.score(r) for r in rows]

    def is_novel(self, score: float) -> bool:
        return score >= self.threshold

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.write_bytes(orjson.dumps({"text_features": self.text_features, "threshold": self.threshold,
                                    "templates": [sorted(t) for t in self.templates],
                                    "patterns": [list(t) for t in self.patterns]}))
        return p

    @classmethod
    def load(cls, path: str | Path) -> NoveltyIndex:
        data = orjson.loads(Path(path).read_bytes())
        return cls(list(data["text_features"]), [frozenset(t) for t in data["templates"]],
                   float(data.get("threshold", DEFAULT_THRESHOLD)), [tuple(t) for t in data.get("patterns", ())])


def novelty_path_for(artifact: str | Path) -> Path:
    """Where a model's novelty index lives: next to the artifact."""
    p = Path(artifact)
    return p.with_name(p.name + ".novelty.json")
