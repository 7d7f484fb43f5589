"""``type: novelty``: how unlike the templates a model was trained on a line is.

    enrichers:
      - {name: novelty, type: novelty, key: event.content, file: models/m.joblib.novelty.json}
    rules:
      # after the rules that know their lines, before the model: route what nobody was built on to people
      - {id: novel, label: template, value: __novel__, when: novelty.novel, confidence: 0.5}

``file`` is a novelty index (`activelabel.quality.novelty.NoveltyIndex`), written by
``activelabel loop`` next to every model it trains. ``lookup(text)`` gives
``{"score": 0..1, "novel": bool, "templates": n}``: the score is 1 - the largest
Jaccard similarity between the words of the line's template (numbers, ids, paths and
addresses masked) and those of any template in the index, where a template's word
parameters learned from the training labels (``patterns``: "removing <*>") match any
word at their position; ``novel`` is
``score >= threshold`` (the index's); ``nearest`` is the class of the most similar
trained template (null when the index has no classes, or templates of several classes
are as similar). An index with no templates (before the first
model) scores every line 1.0: nothing has been learned yet. A key that is not a
string is scored as the empty text.

Why an enricher and not a model option: rules then decide what a novel line gets
(a review value, a flag label, nothing), in the order the policy already has, and
the engine needs no new hook; a model still predicts, but a rule placed before it
wins under ``first_match``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from activelabel.errors import EnricherError


def read_novelty_file(path: Path) -> tuple[dict[str, Any], str]:
    """(the index as plain data, SHA-256 of the file); EnricherError saying what is wrong."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise EnricherError(f"novelty index `{path.name}` not found ({path})",
                            suggestion="`activelabel loop` writes <model>.novelty.json next to each model; "
                                       "paths are relative to the policy file") from None
    except OSError as exc:
        raise EnricherError(f"cannot read `{path}`: {exc.strerror or exc}") from exc
    try:
        index = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise EnricherError(f"`{path.name}` is not JSON ({exc})") from exc
    if not (isinstance(index, dict) and isinstance(index.get("templates"), list)
            and all(isinstance(t, list) and all(isinstance(w, str) for w in t) for t in index["templates"])):
        raise EnricherError(f"`{path.name}` is not a novelty index (needs `templates`: lists of words)",
                            suggestion="point `file` at a <model>.novelty.json written by `activelabel loop`")
    patterns = index.get("patterns", [])
    if not (isinstance(patterns, list)
            and all(isinstance(t, list) and all(isinstance(w, str) for w in t) for t in patterns)):
        raise EnricherError(f"`{path.name}`: `patterns` must be lists of words",
                            suggestion="point `file` at a <model>.novelty.json written by `activelabel loop`")
    for key in ("classes", "pattern_classes"):
        got = index.get(key, [])
        if not (isinstance(got, list) and all(c is None or isinstance(c, str) for c in got)):
            raise EnricherError(f"`{path.name}`: `{key}` must be a list of class names (or null)",
                                suggestion="point `file` at a <model>.novelty.json written by `activelabel loop`")
    threshold = index.get("threshold", 0.4)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
        raise EnricherError(f"`{path.name}`: `threshold` must be a number from 0 to 1")
    return index, hashlib.sha256(data).hexdigest()


class NoveltyEnricher:
    """Answers ``lookup(text)`` with the line's novelty against a novelty index."""

    def __init__(self, name: str, index: Mapping[str, Any]) -> None:
        from activelabel.quality.novelty import NoveltyIndex

        self.name = name
        self._index = NoveltyIndex.from_json({**index, "text_features": []})
        self._size = len(self._index.templates)

    def lookup(self, key: Any) -> Mapping[str, Any]:
        from activelabel.quality.novelty import template_tokens

        text = key if key.__class__ is str else ""
        nearest, similarity = self._index.nearest(template_tokens(text))
        score = 1.0 - similarity
        return {"score": score, "novel": self._index.is_novel(score), "templates": self._size, "nearest": nearest}
