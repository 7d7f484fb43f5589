"""The one home for what a sensitivity allows.

Levels are ordered ``public < internal < pii < secret``. Every output has a
`Clearance`: the highest sensitivity its reader may see in clear. A label above
the clearance never leaves in clear: it gets its ``protect:`` treatment
(`Treatment`; by default ``pseudonymize`` for ``pii``, ``drop`` for ``secret``,
``mask`` below that). The check is an allow-list that fails closed: a label the
registry does not know is dropped.

Every door calls one function::

    registry = SensitivityRegistry.of(policy)
    out = protect_labels(decision.labels, registry, clearance, protector)

and `protect_value` for doors that write one value at a time (headers,
attributes). `is_sensitive` is what messages use to decide whether a value may
be quoted to a default reader.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from activelabel.governance.protect import Protector

LEVELS = ("public", "internal", "pii", "secret")
TREATMENTS = ("pseudonymize", "mask", "drop", "keep")


class Sensitivity(IntEnum):
    """A label's declared sensitivity; comparisons follow the order of `LEVELS`."""

    PUBLIC = 0
    INTERNAL = 1
    PII = 2
    SECRET = 3

    @classmethod
    def parse(cls, text: str) -> Sensitivity:
        """``"pii"`` → `Sensitivity.PII`; ValueError naming the known levels otherwise."""
        try:
            return cls(LEVELS.index(str(text).strip().lower()))
        except ValueError:
            raise ValueError(f"unknown sensitivity {text!r}; known: {', '.join(LEVELS)}") from None

    def __str__(self) -> str:
        return LEVELS[self.value]


@dataclass(frozen=True, order=True)
class Clearance:
    """The highest sensitivity a reader may see in clear."""

    level: Sensitivity = Sensitivity.INTERNAL

    @classmethod
    def parse(cls, text: str) -> Clearance:
        return cls(Sensitivity.parse(text))

    @classmethod
    def of_grants(cls, grants: Iterable[str], floor: Sensitivity = Sensitivity.INTERNAL) -> Clearance:
        """The clearance of a caller granted ``grants`` (e.g. a token's ``clearances: [pii]``): the highest one."""
        if isinstance(grants, frozenset):
            return _of_grants(grants, floor)  # per request in the service: remembered
        return _of_grants(frozenset(grants), floor)

    def allows(self, sensitivity: Sensitivity | str) -> bool:
        """Whether a value of ``sensitivity`` may be written in clear for this reader."""
        level = sensitivity if isinstance(sensitivity, Sensitivity) else Sensitivity.parse(sensitivity)
        return level <= self.level

    def __str__(self) -> str:
        return str(self.level)


@functools.lru_cache(maxsize=256)
def _of_grants(grants: frozenset[str], floor: Sensitivity) -> Clearance:
    level = floor
    for grant in grants:
        level = max(level, Sensitivity.parse(grant))
    return Clearance(level)


# What readers get when nobody said otherwise: ``internal`` (the policy's
# ``outputs: {clearance: ...}`` and each door's option can change it).
DEFAULT_CLEARANCE = Clearance(Sensitivity.INTERNAL)
# Cleared for everything: the decision's own owner (tests, in-process callers).
FULL_CLEARANCE = Clearance(Sensitivity.SECRET)


def is_sensitive(sensitivity: Sensitivity | str) -> bool:
    """Whether a default reader (`DEFAULT_CLEARANCE`) may not see values of ``sensitivity``: quote none in messages."""
    return not DEFAULT_CLEARANCE.allows(sensitivity)


@dataclass(frozen=True)
class Treatment:
    """What happens to a value above the output's clearance (a label's ``protect:``)."""

    kind: str = "pseudonymize"
    marker: str = "[masked]"
    keep_prefix: int = 0
    keep_suffix: int = 0

    def __post_init__(self) -> None:
        if self.kind not in TREATMENTS:
            raise ValueError(f"unknown treatment {self.kind!r}; known: {', '.join(TREATMENTS)}")


def default_treatment(sensitivity: Sensitivity) -> Treatment:
    """``pseudonymize`` for ``pii`` (joins still work), ``drop`` for ``secret``, ``mask`` for the rest."""
    if sensitivity >= Sensitivity.SECRET:
        return Treatment("drop")
    if sensitivity >= Sensitivity.PII:
        return Treatment("pseudonymize")
    return Treatment("mask")


@dataclass(frozen=True)
class LabelGuard:
    """One label's sensitivity and treatment."""

    name: str
    sensitivity: Sensitivity
    treatment: Treatment


class _Dropped:
    __slots__ = ()

    def __repr__(self) -> str:
        return "DROPPED"


DROPPED: Any = _Dropped()
"""What `protect_value` returns for a value that must not be written at all."""


class SensitivityRegistry:
    """The sensitivity and treatment of every label of a policy, computed once per load."""

    __slots__ = ("_above", "_guards")

    def __init__(self, guards: Iterable[LabelGuard]) -> None:
        self._guards = {g.name: g for g in guards}
        self._above = {level: frozenset(n for n, g in self._guards.items() if g.sensitivity > level) for level in Sensitivity}

    @classmethod
    def of(cls, policy: Any) -> SensitivityRegistry:
        """The registry of a loaded `Policy` (or anything with ``.labels`` of `LabelSpec`)."""
        return cls.of_labels(policy.labels)

    @classmethod
    def of_labels(cls, labels: Mapping[str, Any]) -> SensitivityRegistry:
        guards = []
        for name, spec in labels.items():
            level = Sensitivity.parse(spec.sensitivity)
            protect = getattr(spec, "protect", None)
            treatment = (
                Treatment(protect.kind, protect.marker, protect.keep_prefix, protect.keep_suffix)
                if protect is not None
                else default_treatment(level)
            )
            guards.append(LabelGuard(name, level, treatment))
        return cls(guards)

    def __contains__(self, name: object) -> bool:
        return name in self._guards

    def __iter__(self) -> Any:
        return iter(self._guards)

    def guard(self, name: str) -> LabelGuard | None:
        return self._guards.get(name)

    def sensitivity(self, name: str) -> Sensitivity:
        """A label's sensitivity; an unknown name counts as ``secret`` (fail closed)."""
        guard = self._guards.get(name)
        return guard.sensitivity if guard is not None else Sensitivity.SECRET

    def above(self, clearance: Clearance) -> frozenset[str]:
        """The labels a reader of ``clearance`` may not see in clear."""
        return self._above[clearance.level]

    def names(self, sensitivity: Sensitivity) -> frozenset[str]:
        return frozenset(n for n, g in self._guards.items() if g.sensitivity == sensitivity)


def key_use_problems(registry: SensitivityRegistry, names: Iterable[str], use: str) -> list[str]:
    """Why labels ``names`` may not be used as ``use`` (a Kafka message key, a metric label): each is above ``internal``.

    A key or a metric label is seen by every reader of the topic or the
    metrics, whatever their clearance, and cannot be protected after the fact.
    """
    problems = []
    for name in names:
        level = registry.sensitivity(name)
        if level > Sensitivity.INTERNAL:
            problems.append(
                f"label `{name}` is declared {level} and cannot be used as {use}: every reader sees {use}s in clear; "
                f"use a label declared public or internal (or a pseudonymized copy set by a rule)"
            )
    return problems


def policy_key_use_problems(policy: Any, names: Iterable[str], use: str, *, option: str) -> list[str]:
    """`key_use_problems` for labels of a loaded policy, each at the ``file:line`` where the label is declared.

    ``option`` says where the use was asked for (``--key-label``), for a name the policy does not declare.
    """
    registry = SensitivityRegistry.of(policy)
    problems = []
    for name in names:
        spec = policy.labels.get(name)
        if spec is None:
            problems.append(f"{option}: the policy declares no label `{name}`; declared: {', '.join(policy.labels) or 'none'}")
            continue
        loc = getattr(spec, "loc", None)
        where = f"{loc.file}:{loc.line}: " if loc is not None and loc.file else ""
        problems.extend(f"{where}{p} (asked for by {option})" for p in key_use_problems(registry, [name], use))
    return problems


def protect_value(name: str, value: Any, registry: SensitivityRegistry, clearance: Clearance, protector: Protector) -> Any:
    """``value`` as a reader of ``clearance`` may see it: in clear, treated, or `DROPPED`."""
    guard = registry.guard(name)
    if guard is None:
        return DROPPED  # not a declared label: fail closed
    if clearance.allows(guard.sensitivity):
        return value
    return protector.apply(guard.treatment, value)


def protect_labels(
    labels: Mapping[str, Any], registry: SensitivityRegistry, clearance: Clearance, protector: Protector
) -> dict[str, Any]:
    """The labels as a reader of ``clearance`` may see them; dropped ones are left out.

    The fast path (every label cleared) returns a plain copy.
    """
    hidden = registry.above(clearance)
    if not hidden:
        # Still fail closed on names the registry does not know.
        return {n: v for n, v in labels.items() if n in registry}
    out: dict[str, Any] = {}
    for name, value in labels.items():
        if name in hidden:
            seen = protector.apply(registry._guards[name].treatment, value)
            if seen is not DROPPED:
                out[name] = seen
        elif name in registry:
            out[name] = value
    return out


def protect_explain(
    explain: Mapping[str, Any], registry: SensitivityRegistry, clearance: Clearance, protector: Protector
) -> dict[str, Any]:
    """``Decision.explain()`` for a reader of ``clearance``.

    Entries of labels above the clearance keep only what says *how* the label
    was decided (rule id, source, confidence); every value in them (the value,
    a candidate's value, a default) is treated like the label itself, and a
    dropped label's entry is left out.
    """
    out = dict(explain)
    per_label = explain.get("labels")
    if not isinstance(per_label, Mapping):
        return out
    shown: dict[str, Any] = {}
    for name, entry in per_label.items():
        guard = registry.guard(name)
        if guard is not None and clearance.allows(guard.sensitivity):
            shown[name] = entry
            continue
        if guard is None or guard.treatment.kind in ("drop", "keep"):
            continue
        shown[name] = _treat_entry(entry, guard, protector)
    out["labels"] = shown
    return out


_VALUE_KEYS = frozenset({"value", "default", "fallback", "expected", "got", "candidates", "values"})


def _treat_entry(entry: Any, guard: LabelGuard, protector: Protector) -> Any:
    if isinstance(entry, Mapping):
        return {k: (_treat_all(v, guard, protector) if k in _VALUE_KEYS else _treat_entry(v, guard, protector)) for k, v in entry.items()}
    if isinstance(entry, list):
        return [_treat_entry(v, guard, protector) for v in entry]
    return entry


def _treat_all(value: Any, guard: LabelGuard, protector: Protector) -> Any:
    if isinstance(value, Mapping):
        return {k: (_treat_all(v, guard, protector) if k in _VALUE_KEYS else _treat_entry(v, guard, protector)) for k, v in value.items()}
    if isinstance(value, list):
        return [_treat_all(v, guard, protector) for v in value]
    if value is None:
        return None
    treated = protector.apply(guard.treatment, value)
    return None if treated is DROPPED else treated
