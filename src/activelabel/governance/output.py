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
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from activelabel.governance.m9 import PrivacyCounters
from activelabel.governance.pii import VALIDATED, PiiScanner, walk_strings
from activelabel.governance.protect import Protector, text_of
from activelabel.governance.redact import Redactor
from activelabel.governance.sensitivity import (
    DROPPED,
    Clearance,
    SensitivityRegistry,
    protect_explain,
    protect_value,
)


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
    ) -> None:
        self.registry = registry
        self.clearance = clearance
        self.protector = protector
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
        for name, value in labels.items():
            seen = protect_value(name, value, self.registry, self.clearance, self.protector)
            if name in self.hidden:
                guard = self.registry.guard(name)
                self.counters.add("protected", (self.door, guard.treatment.kind if guard else "drop"))
                if seen is not DROPPED and text_of(seen) == text_of(value) and text_of(value):
                    # Only a mask marker equal to the value itself can get here; count it, never write it.
                    self.counters.add("declared", (self.door, name))
                    seen = DROPPED
            if seen is not DROPPED:
                out[name] = seen
        return out

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
    ) -> GuardedRecord:
        """The record one output writes for ``event`` labeled ``labels``."""
        fields: dict[str, Any] = {labels_field: self.labels(labels)}
        if explain is not None:
            fields["label_meta"] = self.explain(explain)
        out_event = None
        if self.redactor is not None:
            out_event, summary = self.redactor.redact(event)
            if self.redactor.summary_on:
                fields.update(summary.fields())
        if self.scanner is not None and (self.undeclared_sample >= 1.0 or self._rng.random() < self.undeclared_sample):
            self._scan_undeclared(event if out_event is None else out_event, fields[labels_field])
        return GuardedRecord(out_event, fields)

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
