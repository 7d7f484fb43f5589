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
_WORDS = re.compile(r"[A-Za-z_<>#]+")


def template_words(text: str) -> frozenset[str]:
    """The words of a line's template (masks like ``<ip>`` and ``#`` count as words)."""
    return frozenset(w.lower() for w in _WORDS.findall(normalise_template(text)))


def row_text(row: Mapping[str, Any], names: Sequence[str]) -> str:
    """The text novelty reads from one feature row: the text features, in order."""
    return " | ".join("" if row.get(n) is None else str(row.get(n)) for n in names)


@dataclass
class NoveltyIndex:
    """The templates a model was trained on, and how to measure distance to them."""

    text_features: list[str]
    templates: list[frozenset[str]] = field(default_factory=list)
    threshold: float = DEFAULT_THRESHOLD
    _cache: dict[frozenset[str], float] = field(default_factory=dict, repr=False)

    @classmethod
    def build(cls, rows: Iterable[Mapping[str, Any]], text_features: Sequence[str], *,
              threshold: float = DEFAULT_THRESHOLD) -> NoveltyIndex:
        seen = {template_words(row_text(r, text_features)) for r in rows}
        return cls(list(text_features), sorted(seen, key=sorted), threshold)

    def score(self, row: Mapping[str, Any]) -> float:
        """0 (a trained template) … 1 (nothing in common with any trained template)."""
        words = template_words(row_text(row, self.text_features))
        hit = self._cache.get(words)
        if hit is not None:
            return hit
        best = 0.0
        for t in self.templates:
            union = len(words | t)
            sim = len(words & t) / union if union else 1.0
            if sim > best:
                best = sim
                if best == 1.0:
                    break
        self._cache[words] = 1.0 - best
        return 1.0 - best

    def scores(self, rows: Iterable[Mapping[str, Any]]) -> list[float]:
        return [self.score(r) for r in rows]

    def is_novel(self, score: float) -> bool:
        return score >= self.threshold

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.write_bytes(orjson.dumps({"text_features": self.text_features, "threshold": self.threshold,
                                    "templates": [sorted(t) for t in self.templates]}))
        return p

    @classmethod
    def load(cls, path: str | Path) -> NoveltyIndex:
        data = orjson.loads(Path(path).read_bytes())
        return cls(list(data["text_features"]), [frozenset(t) for t in data["templates"]],
                   float(data.get("threshold", DEFAULT_THRESHOLD)))


def novelty_path_for(artifact: str | Path) -> Path:
    """Where a model's novelty index lives: next to the artifact."""
    p = Path(artifact)
    return p.with_name(p.name + ".novelty.json")
