"""`OutputGuard`: the one call each output makes before writing a record.

Built once per output (a file, stdout, a Kafka topic, an HTTP caller's
clearance) from the loaded policy::

    guard = OutputGuard.of(policy, door="label-file", clearance=None, protector=protector)
    out = guard.record(event, decision.labels, labels_field="labels", explain=decision.explain())
    if out.event is None:   # event unchanged: splice the labels into the raw line (fast path)
        sink.write_raw(splice_fields(raw, event, out.fields))
    else:                   # redacted: write the redacted event with the fields
        sink.write({**out.event, **out.fields})

``clearance=None`` means the policy's ``outputs: {clearance: ...}``. When no
label is above the clearance and the policy has no ``redact:``,
`OutputGuard.passthrough` is true and `record` costs a dict copy: loops may
keep their columnar fast paths as they are.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from activelabel.governance.m9 import PrivacyCounters
from activelabel.governance.pii import VALIDATED, PiiScanner, walk_strings
from activelabel.governance.protect import Protector, is_pseudonym, text_of
from activelabel.governance.redact import Redactor
from activelabel.governance.sensitivity import (
    DROPPED,
    Clearance,
    SensitivityRegistry,
    Treatment,
    protect_explain,
    protect_value,
)
from activelabel.sinks.jsonl import splice_fields

#: Protected label values at least this long are also replaced wherever they occur in the event.
ECHO_MIN_CHARS = 4
#: What a dropped label's value becomes where the event repeats it.
WITHHELD = "[withheld]"


def _scrub(value: Any, echoes: Mapping[str, str]) -> tuple[Any, int]:
    """``value`` with every occurrence of an echo replaced inside its strings (maps, lists), and how many strings changed."""
    if isinstance(value, str):
        out = value
        for clear, seen in echoes.items():
            if clear in out:
                out = out.replace(clear, seen)
        return out, int(out is not value)
    if isinstance(value, Mapping):
        changed = 0
        d: dict[Any, Any] = {}
        for k, v in value.items():
            d[k], n = _scrub(v, echoes)
            changed += n
        return (d if changed else value), changed
    if isinstance(value, list):
        changed = 0
        items = []
        for v in value:
            item, n = _scrub(v, echoes)
            items.append(item)
            changed += n
        return (items if changed else value), changed
    return value, 0


def _already_protected(value: Any) -> bool:
    """Whether a value read back looks like the output of a treatment (a pseudonym, a marker)."""
    if not isinstance(value, str):
        return False
    return is_pseudonym(value) or value == WITHHELD or (value.startswith("[") and value.endswith("]")) or "[masked]" in value


class _ReadBack(Protector):
    """A protector that leaves values already protected (read back from an output) as they are."""

    def __init__(self, inner: Protector) -> None:
        self.__dict__.update(inner.__dict__)
        self._inner = inner

    def apply(self, treatment: Treatment, value: Any) -> Any:
        if _already_protected(value) or (isinstance(value, str) and treatment.marker in value):
            return value
        return self._inner.apply(treatment, value)


@dataclass(frozen=True)
class GuardedRecord:
    """What to write: ``event`` is None when the event leaves unchanged; ``fields`` go beside it."""

    event: Any
    fields: dict[str, Any]


class OutputGuard:
    """Protects labels, redacts the event and keeps the M9 counters for one output."""

    def __init__(
        self,
        registry: SensitivityRegistry,
        clearance: Clearance,
        protector: Protector,
        *,
        door: str = "output",
        redactor: Redactor | None = None,
        counters: PrivacyCounters | None = None,
        scanner: PiiScanner | None = None,
        undeclared_sample: float = 1.0,
        rng: random.Random | None = None,
        read_back: bool = False,
    ) -> None:
        self.registry = registry
        self.clearance = clearance
        # read_back: the values come from an output written before (a store, a labeled file):
        # a value already protected there stays as it is instead of being treated twice.
        self.read_back = read_back
        self.protector: Protector = _ReadBack(protector) if read_back else protector
        self.door = door
        self.redactor = redactor
        self.counters = counters if counters is not None else PrivacyCounters()
        self.scanner = scanner
        self.undeclared_sample = undeclared_sample
        self._rng = rng or random.Random()
        self.hidden = registry.above(clearance)
        self.passthrough = not self.hidden and redactor is None and scanner is None

    @classmethod
    def of(
        cls,
        policy: Any,
        *,
        door: str,
        protector: Protector,
        clearance: Clearance | str | None = None,
        counters: PrivacyCounters | None = None,
        scan_undeclared: bool = False,
    ) -> OutputGuard:
        """The guard of one output of ``policy``; ``clearance`` None: the policy's default for outputs."""
        if clearance is None:
            clearance = Clearance.parse(policy.outputs.clearance)
        elif isinstance(clearance, str):
            clearance = Clearance.parse(clearance)
        pii = policy.pii
        scanner = PiiScanner(pii.detectors, max_scan_chars=pii.max_scan_chars, entities=VALIDATED) if scan_undeclared else None
        return cls(
            SensitivityRegistry.of(policy),
            clearance,
            protector,
            door=door,
            redactor=Redactor.of(policy, protector),
            counters=counters,
            scanner=scanner,
            undeclared_sample=pii.undeclared_sample,
        )

    def labels(self, labels: Mapping[str, Any]) -> dict[str, Any]:
        """The labels as this output's reader may see them (dropped ones left out), checked and counted."""
        if not self.hidden:
            return dict(labels)
        out: dict[str, Any] = {}
        protected: dict[str, int] = {}  # per treatment, counted once per record (the counters take a lock)
        for name, value in labels.items():
            if self.read_back and name in self.hidden and _already_protected(value):
                out[name] = value
                continue
            seen = protect_value(name, value, self.registry, self.clearance, self.protector)
            if name in self.hidden:
                guard = self.registry.guard(name)
                kind = guard.treatment.kind if guard else "drop"
                protected[kind] = protected.get(kind, 0) + 1
                if seen is not DROPPED and text_of(seen) == text_of(value) and text_of(value):
                    # Only a mask marker equal to the value itself can get here; count it, never write it.
                    self.counters.add("declared", (self.door, name))
                    seen = DROPPED
            if seen is not DROPPED:
                out[name] = seen
        for kind, n in protected.items():
            self.counters.add("protected", (self.door, kind), n)
        return out

    @classmethod
    def reader(cls, specs: Mapping[str, Any], *, door: str, protector: Protector,
               clearance: Clearance | str | None = None, undeclared_sample: float = 0.1) -> OutputGuard:
        """The guard of a reader of stored decisions (report, review export): ``specs`` are label name →
        object with ``sensitivity`` and ``protect``; values protected when stored are left as they are."""
        level = Clearance.parse(clearance) if isinstance(clearance, str) else (clearance or Clearance())
        # M9's undeclared count over what the reader sees: a sample, seeded so a report is reproducible.
        return cls(SensitivityRegistry.of_labels(specs), level, protector, door=door, read_back=True,
                   scanner=PiiScanner(entities=VALIDATED), undeclared_sample=undeclared_sample, rng=random.Random(0))

    def stored_value(self, name: str, value: Any) -> Any:
        """One value of label ``name`` read back (a truth value, a rule's constant): as this reader may see it, or `DROPPED`."""
        if value is None or name not in self.hidden:
            return value if name in self.registry else DROPPED
        return protect_value(name, value, self.registry, self.clearance, self.protector)

    def explain(self, explain: Mapping[str, Any]) -> dict[str, Any]:
        return protect_explain(explain, self.registry, self.clearance, self.protector) if self.hidden else dict(explain)

    def single(self, name: str, value: Any) -> Any:
        """One label value for a one-value door (a header, an attribute): the value, treated, or `DROPPED`."""
        return protect_value(name, value, self.registry, self.clearance, self.protector)

    def record(
        self,
        event: Any,
        labels: Mapping[str, Any],
        *,
        labels_field: str = "labels",
        explain: Mapping[str, Any] | None = None,
        raw: bytes | None = None,
    ) -> GuardedRecord:
        """The record one output writes for ``event`` labeled ``labels``.

        ``raw``: the event's JSON bytes, when the caller has them: a record whose bytes
        hold none of the protected values (and no escapes) skips the search of its strings.
        """
        shown = self.labels(labels)
        fields: dict[str, Any] = {labels_field: shown}
        if explain is not None:
            fields["label_meta"] = self.explain(explain)
        out_event = None
        if self.redactor is not None:
            out_event, summary = self.redactor.redact(event)
            if self.redactor.summary_on:
                fields.update(summary.fields())
        if self.hidden:
            echoes = self._echoes(labels, shown)
            # Without escapes every string of the line is its UTF-8 bytes: absent there, absent everywhere.
            if (echoes and raw is not None and out_event is None and b"\\" not in raw
                    and not any(clear.encode() in raw for clear in echoes)):
                echoes = {}
            if echoes:
                scrubbed, changed = _scrub(event if out_event is None else out_event, echoes)
                if changed:
                    out_event = scrubbed
                    self.counters.add("protected", (self.door, "echo"), changed)
        if self.scanner is not None and (self.undeclared_sample >= 1.0 or self._rng.random() < self.undeclared_sample):
            self._scan_undeclared(event if out_event is None else out_event, fields[labels_field])
        return GuardedRecord(out_event, fields)

    def _echoes(self, labels: Mapping[str, Any], shown: Mapping[str, Any]) -> dict[str, str]:
        """Clear text of each protected label value → what the event shows instead.

        A value a rule copied from the event into a protected label is as sensitive
        in the event as in the label, so the event leaves with it replaced too.
        Values shorter than `ECHO_MIN_CHARS` are not searched (``"1"`` is everywhere).
        """
        echoes: dict[str, str] = {}
        for name in self.hidden:
            if name not in labels:
                continue
            clear = text_of(labels[name])
            if len(clear) < ECHO_MIN_CHARS or isinstance(labels[name], bool):
                continue
            echoes[clear] = text_of(shown[name]) if name in shown else WITHHELD
        return echoes

    def line(
        self,
        raw: bytes,
        event: dict[str, Any],
        labels: Mapping[str, Any],
        *,
        labels_field: str = "labels",
        explain: Mapping[str, Any] | None = None,
    ) -> bytes:
        """The JSON line this output writes: ``raw`` with the protected fields spliced in, or the redacted event."""
        out = self.record(event, labels, labels_field=labels_field, explain=explain, raw=raw)
        if out.event is None:
            return splice_fields(raw, event, out.fields)
        return orjson.dumps({**out.event, **out.fields}) if isinstance(out.event, Mapping) else orjson.dumps(out.fields)

    def _scan_undeclared(self, event: Any, labels: Mapping[str, Any]) -> None:
        assert self.scanner is not None
        before = self.scanner.truncated
        n = 0
        for name, value in labels.items():
            if name in self.hidden or not isinstance(value, str):
                continue
            n += 1
            for r in self.scanner.analyze(value):
                self.counters.add("undeclared", (self.door, f"labels.{name}", r.entity_type))
        for path, text in walk_strings(event):
            n += 1
            for r in self.scanner.analyze(text):
                if text[r.start:r.end].startswith("hm1:"):
                    continue
                self.counters.add("undeclared", (self.door, path or "body", r.entity_type))
        self.counters.add_scan(n, self.scanner.truncated - before)


_EVENT_FIELD = re.compile(r"\bevent\s*(?:\.\s*([A-Za-z_][A-Za-z0-9_]*)|\[\s*[\"']([^\"']+)[\"']\s*\])")


def sensitive_inputs_of(policy: Any, clearance: Clearance = Clearance()) -> dict[str, str]:
    """Top-level event fields a label above ``clearance`` is computed from (its rules' ``value_expr``, its ``from``),
    each with the most sensitive such label.

    A value copied into a pii label is pii in the event too: audit records at the
    Request level write these fields protected like that label.
    """
    registry = SensitivityRegistry.of(policy)
    hidden = registry.above(clearance)
    sources = [(r.label, str(r.value_expr)) for r in policy.rules if r.label in hidden and r.value_expr is not None]
    sources += [(name, str(spec.bucket_from)) for name, spec in policy.labels.items()
                if name in hidden and getattr(spec, "bucket_from", None) is not None]
    fields: dict[str, str] = {}
    for label, text in sources:
        for m in _EVENT_FIELD.finditer(text):
            name = m.group(1) or m.group(2)
            if name not in fields or registry.sensitivity(label) > registry.sensitivity(fields[name]):
                fields[name] = label
    return fields


def event_fields_read(policy: Any) -> list[str] | None:
    """The top-level event fields the policy reads (rules, enricher keys, buckets, model features), in policy order.

    None when an expression reads the event whole (``size(event)``, a macro over it, a
    computed key): then every field is an input.
    """
    from activelabel.cel import parse, references

    exprs: list[Any] = []
    for spec in policy.labels.values():
        exprs.append(spec.bucket_from)
    exprs += [e.key for e in policy.enrichers]
    for rule in policy.rules:
        exprs += [rule.when, rule.value_expr]
    for model in policy.models:
        exprs += list(model.features.values())
    fields: dict[str, None] = {}
    for expr in exprs:
        if expr is None:
            continue
        for ref in references(expr.ast if expr.ast is not None else parse(expr.source)):
            if ref.path[0].lstrip(".") != "event":
                continue
            if len(ref.path) == 1:
                return None
            fields[str(ref.path[1])] = None
    return list(fields)


def audit_privacy(policy: Any, protector: Protector, clearance: Clearance | str | None = None) -> dict[str, Any]:
    """Keyword arguments that give an `AuditLog` the privacy mechanism: ``AuditLog(dir, **audit_privacy(policy, protector))``.

    Full-level records then carry each pii label's pseudonym (or mask) instead of
    erasing it, secret labels are erased (their treatment is ``drop``), and the
    event fields those labels are computed from are protected the same way. Records
    at Request and above carry only the event fields the policy reads (OPA's ``input``),
    after the policy's ``redact:`` (the same redaction the labeled output gets).
    """
    level = Clearance.parse(clearance) if isinstance(clearance, str) else (clearance or Clearance.parse(policy.outputs.clearance))
    guard = OutputGuard(SensitivityRegistry.of(policy), level, protector, door="audit")
    inputs = sensitive_inputs_of(policy, level)

    def protect(name: str, value: Any) -> Any:
        # A label by its own treatment; an input field by the treatment of the label computed from it.
        seen = guard.single(name if name in guard.registry else inputs.get(name, name), value)
        return None if seen is DROPPED else seen

    from activelabel.governance.redact import Redactor

    redactor = Redactor.of(policy, protector)
    return {
        "sensitivity_of": {name: str(guard.registry.sensitivity(name)) for name in guard.registry},
        "sensitive_inputs": list(inputs),
        "protector": protect,
        "input_fields": event_fields_read(policy),
        "redact": None if redactor is None else _audit_redaction(redactor),
    }


def _audit_redaction(redactor: Any) -> Callable[[dict[str, Any]], tuple[dict[str, Any], list[str], list[str]]]:
    """The policy's ``redact:`` for an audit record's input: (fields, masked paths, removed paths) as OPA lists them."""

    def redact(fields: dict[str, Any]) -> tuple[dict[str, Any], list[str], list[str]]:
        out, summary = redactor.redact(fields)
        return (out, [f"/input/{k.replace('.', '/')}" for k in dict.fromkeys(summary.masked_keys)],
                [f"/input/{k.replace('.', '/')}" for k in summary.redacted_keys])

    return redact
