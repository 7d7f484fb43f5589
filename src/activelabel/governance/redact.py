"""Redaction of events on their way out: the policy's ``redact:`` section.

Modelled on the OpenTelemetry Collector's redaction processor:

* ``allowed_keys``: when given, only these fields leave (dotted paths; a
  listed map passes with everything under it); every other field is removed -
  the list fails closed. Without it every field leaves, scanned.
* ``ignored_keys``: fields that leave untouched, never scanned.
* ``blocked_values`` (RE2 patterns) and ``entities`` (detector entity types):
  every match inside any string that leaves - nested fields, list items and a
  plain-text log body included - is replaced with ``marker`` (``with: mask``)
  or with its keyed pseudonym (``with: pseudonymize``).
* ``summary: info`` adds ``redaction.masked.count`` / ``.keys`` and
  ``redaction.redacted.count`` / ``.keys`` (removed fields) to the output.

Redaction runs after labeling: rules see the original event, outputs do not.
The input event is never modified.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from activelabel.governance.pii import PiiScanner, compile_re2
from activelabel.governance.protect import Protector
from activelabel.governance.sensitivity import Treatment


@dataclass
class RedactionSummary:
    """What redaction did to one event (field paths, never values)."""

    masked_keys: list[str] = field(default_factory=list)
    masked_count: int = 0
    redacted_keys: list[str] = field(default_factory=list)

    def fields(self) -> dict[str, Any]:
        """The OTel-style summary attributes."""
        return {
            "redaction.masked.count": self.masked_count,
            "redaction.masked.keys": sorted(set(self.masked_keys)),
            "redaction.redacted.count": len(self.redacted_keys),
            "redaction.redacted.keys": sorted(self.redacted_keys),
        }


class Redactor:
    """Applies a `RedactSpec`; thread-safe (no per-event state kept)."""

    def __init__(self, spec: Any, protector: Protector, scanner: PiiScanner | None = None) -> None:
        self.spec = spec
        self.protector = protector
        self.allowed = tuple(spec.allowed_keys) if spec.allowed_keys is not None else None
        self.ignored = frozenset(spec.ignored_keys)
        self.blocked = tuple(compile_re2(p) for p in spec.blocked_values)
        self.scanner = scanner if spec.entities else None
        self.entities = frozenset(spec.entities)
        self.summary_on = spec.summary == "info"
        self._treatment = Treatment("mask", marker=spec.marker)

    @classmethod
    def of(cls, policy: Any, protector: Protector) -> Redactor | None:
        """The redactor of a loaded policy, or None when it has no ``redact:``."""
        spec = getattr(policy, "redact", None)
        if spec is None:
            return None
        pii = policy.pii
        scanner = PiiScanner(pii.detectors, max_scan_chars=pii.max_scan_chars, entities=spec.entities)
        return cls(spec, protector, scanner)

    def redact(self, event: Any) -> tuple[Any, RedactionSummary]:
        """A redacted copy of ``event`` and what was done."""
        summary = RedactionSummary()
        return self._value(event, "", summary, allowed=self.allowed is None), summary

    # A field is *allowed* when it or an ancestor is listed; a map on the way to a listed field is entered.
    def _allowed(self, path: str) -> bool:
        assert self.allowed is not None
        return any(path == a or path.startswith(a + ".") for a in self.allowed)

    def _on_the_way(self, path: str) -> bool:
        assert self.allowed is not None
        return any(a.startswith(path + ".") for a in self.allowed)

    def _value(self, value: Any, path: str, summary: RedactionSummary, *, allowed: bool) -> Any:
        if path and path in self.ignored:
            return value
        if isinstance(value, dict):
            out = {}
            for k, v in value.items():
                child = f"{path}.{k}" if path else str(k)
                if child in self.ignored:
                    out[k] = v
                    continue
                child_allowed = allowed or self._allowed(child)
                if not child_allowed and not (isinstance(v, dict) and self._on_the_way(child)):
                    summary.redacted_keys.append(child)
                    continue
                out[k] = self._value(v, child, summary, allowed=child_allowed)
            return out
        if isinstance(value, list):
            return [self._value(v, f"{path}.{i}" if path else str(i), summary, allowed=allowed) for i, v in enumerate(value)]
        if isinstance(value, str):
            return self._text(value, path or "body", summary)
        return value

    def _text(self, text: str, path: str, summary: RedactionSummary) -> str:
        spans: list[tuple[int, int]] = []
        for rx in self.blocked:
            spans.extend((m.start(), m.end()) for m in rx.finditer(text) if m.end() > m.start())
        if self.scanner is not None:
            spans.extend((r.start, r.end) for r in self.scanner.analyze(text) if r.entity_type in self.entities)
        if not spans:
            return text
        spans.sort()
        merged: list[list[int]] = []
        for start, end in spans:
            if merged and start < merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        parts, last = [], 0
        for start, end in merged:
            parts.append(text[last:start])
            match = text[start:end]
            if self.spec.treatment == "pseudonymize":
                parts.append(self.protector.pseudonymize(match, self._treatment))
            else:
                parts.append(self.spec.marker)
            last = end
        parts.append(text[last:])
        summary.masked_count += len(merged)
        summary.masked_keys.append(path)
        return "".join(parts)
