"""``type: pii``: an enricher that runs the PII detectors over a chosen field.

    enrichers:
      - {name: found, type: pii, key: event.message}
    rules:
      - {id: leaky, label: has_pii, value: true, when: 'found.count > 0'}
      - {id: card, label: has_card, value: true, when: '"CREDIT_CARD" in found.entities'}

``lookup(text)`` gives ``{"entities": [types found, each once], "count": n,
"validated": n found by a checksum or parse validator, "<ENTITY>": n}``; a
key that is not a string gives the empty map. To scan several fields, join
them in ``key`` (``event.message + " " + event.user_agent``). Nothing is
read from disk; the detectors are `activelabel.governance.pii`'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._lookup import EMPTY


class PiiEnricher:
    """Answers ``lookup(text)`` with what the detectors found in ``text`` (never the text itself)."""

    def __init__(self, name: str, scanner: Any = None) -> None:
        from activelabel.governance.pii import VALIDATED, PiiScanner

        self.name = name
        self._scanner = scanner if scanner is not None else PiiScanner()
        self._validated = VALIDATED

    def lookup(self, key: Any) -> Mapping[str, Any]:
        if key.__class__ is not str or not key:
            return EMPTY
        results = self._scanner.analyze(key)
        if not results:
            return {"entities": [], "count": 0, "validated": 0}
        out: dict[str, Any] = {"entities": list(dict.fromkeys(r.entity_type for r in results)), "count": len(results)}
        out["validated"] = sum(1 for r in results if r.entity_type in self._validated)
        for r in results:
            out[r.entity_type] = out.get(r.entity_type, 0) + 1
        return out
