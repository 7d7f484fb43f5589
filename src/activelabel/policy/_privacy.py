"""Shape checks of the privacy syntax: a label's ``protect:`` and the ``outputs:``, ``redact:``, ``pii:`` sections.

Kept beside `_build` (which calls in here) so the privacy syntax is in one
place; `check_protect` runs over the merged policy because it compares each
label's treatment with the policy-level clearance.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._spec import (
    DEFAULT_MARKER,
    DEFAULT_MAX_SCAN_CHARS,
    PROTECT_KINDS,
    REDACT_SUMMARIES,
    SENSITIVITIES,
    DetectorSpec,
    OutputsSpec,
    PiiSpec,
    ProtectSpec,
    RedactSpec,
)
from ._suggest import did_you_mean
from ._values import describe
from ._yaml import Loc, YMap, YNode, YScalar

if TYPE_CHECKING:
    from ._build import FileBuilder
    from ._report import Reporter

PROTECT_KEYS = ("with", "marker", "keep_prefix", "keep_suffix")
OUTPUTS_KEYS = ("clearance",)
REDACT_KEYS = ("allowed_keys", "ignored_keys", "blocked_values", "entities", "with", "marker", "summary")
PII_KEYS = ("detectors", "max_scan_chars", "undeclared_sample")
DETECTOR_KEYS = ("entity", "pattern", "score")
REDACT_TREATMENTS = ("mask", "pseudonymize")


def build_protect(b: FileBuilder, node: YNode | None, what: str) -> ProtectSpec | None:
    """``protect: mask`` or ``protect: {with: mask, marker: "[ip]", keep_prefix: 3}``."""
    if node is None or (isinstance(node, YScalar) and node.value is None):
        return None
    if isinstance(node, YScalar):
        if not isinstance(node.value, str) or node.value not in PROTECT_KINDS:
            b.rep.add(
                f"`protect` of {what} must be one of {', '.join(PROTECT_KINDS)}, not {node.raw}",
                node.loc,
                suggestion=did_you_mean(str(node.value), PROTECT_KINDS) or "e.g. `protect: pseudonymize`",
            )
            return None
        return ProtectSpec(kind=node.value, loc=node.loc)
    m = b.mapping(node, f"`protect` of {what}")
    if m is None:
        return None
    inner = f"`protect` of {what}"
    b.keys(m, PROTECT_KEYS, ("with",), inner)
    kind = b.choice(m, "with", PROTECT_KINDS, inner)
    marker = b.string(m, "marker", inner)
    head = b.number(m, "keep_prefix", inner, lo=0, integer=True)
    tail = b.number(m, "keep_suffix", inner, lo=0, integer=True)
    if (head or tail) and kind not in (None, "mask"):
        b.rep.add(f"`keep_prefix`/`keep_suffix` of {inner} only apply to `with: mask`", m.loc)
    if kind is None:
        return None
    return ProtectSpec(kind, marker if marker is not None else DEFAULT_MARKER, int(head or 0), int(tail or 0), loc=m.loc)


def build_outputs(b: FileBuilder, node: YNode | None) -> OutputsSpec | None:
    m = b.mapping(node, "`outputs`")
    if m is None:
        return None
    b.keys(m, OUTPUTS_KEYS, (), "`outputs`")
    clearance = b.choice(m, "clearance", SENSITIVITIES, "`outputs`")
    return OutputsSpec(clearance or "internal", loc=m.loc)


def _strings(b: FileBuilder, m: YMap, key: str, what: str) -> tuple[tuple[str, Loc], ...] | None:
    seq = b.sequence(m.get(key), f"`{key}` of {what}")
    if seq is None:
        return None
    out = []
    for item in seq:
        if isinstance(item, YScalar) and isinstance(item.value, str) and item.value:
            out.append((item.value, item.loc))
        else:
            b.rep.add(f"`{key}` of {what} must list strings, not {describe(item)}", item.loc)
    return tuple(out)


def _regex_ok(b: FileBuilder, pattern: str, loc: Loc, what: str) -> bool:
    from activelabel.governance.pii import compile_re2

    try:
        compile_re2(pattern)
    except ValueError as exc:
        b.rep.add(f"{what}: {exc}", loc, suggestion="detector patterns are RE2: no backreferences or lookaround")
        return False
    return True


def build_pii(b: FileBuilder, node: YNode | None) -> PiiSpec | None:
    from activelabel.governance.pii import entity_name

    m = b.mapping(node, "`pii`")
    if m is None:
        return None
    b.keys(m, PII_KEYS, (), "`pii`")
    detectors = []
    for item in b.sequence(m.get("detectors"), "`detectors` of `pii`") or ():
        d = b.mapping(item, "a `pii` detector")
        if d is None:
            continue
        b.keys(d, DETECTOR_KEYS, ("entity", "pattern"), "a `pii` detector")
        entity = b.string(d, "entity", "a `pii` detector")
        pattern = b.string(d, "pattern", "a `pii` detector")
        score = b.number(d, "score", "a `pii` detector", lo=0, hi=1)
        if entity is not None and not entity.replace("_", "").isalnum():
            b.rep.add(f"detector entity `{entity}` must be letters, digits and _ (like EMAIL_ADDRESS)", d.loc)
            continue
        pnode = d.get("pattern")
        if entity and pattern and pnode is not None and _regex_ok(b, pattern, pnode.loc, f"pattern of detector `{entity}`"):
            detectors.append(DetectorSpec(entity_name(entity), pattern, 0.5 if score is None else float(score), loc=d.loc))
    limit = b.number(m, "max_scan_chars", "`pii`", lo=1, integer=True)
    sample = b.number(m, "undeclared_sample", "`pii`", lo=0, hi=1)
    return PiiSpec(
        detectors=tuple(detectors),
        max_scan_chars=int(limit) if limit is not None else DEFAULT_MAX_SCAN_CHARS,
        undeclared_sample=float(sample) if sample is not None else 1.0,
    )


def build_redact(b: FileBuilder, node: YNode | None, pii: PiiSpec | None) -> RedactSpec | None:
    m = b.mapping(node, "`redact`")
    if m is None:
        return None
    what = "`redact`"
    b.keys(m, REDACT_KEYS, (), what)
    allowed = _strings(b, m, "allowed_keys", what)
    ignored = _strings(b, m, "ignored_keys", what) or ()
    blocked = []
    for pattern, loc in _strings(b, m, "blocked_values", what) or ():
        if _regex_ok(b, pattern, loc, "a `blocked_values` pattern"):
            blocked.append(pattern)
    from activelabel.governance.pii import BUILTIN_ENTITIES, entity_name

    known = set(BUILTIN_ENTITIES) | {d.entity for d in (pii.detectors if pii else ())}
    entities = []
    for entity, loc in _strings(b, m, "entities", what) or ():
        if entity_name(entity) not in known:
            b.rep.add(
                f"unknown detector entity `{entity}` in {what}",
                loc,
                suggestion=did_you_mean(entity.upper(), sorted(known)) or "known: " + ", ".join(sorted(known)),
            )
        else:
            entities.append(entity_name(entity))
    return RedactSpec(
        allowed_keys=tuple(k for k, _ in allowed) if allowed is not None else None,
        ignored_keys=tuple(k for k, _ in ignored),
        blocked_values=tuple(blocked),
        entities=tuple(entities),
        treatment=b.choice(m, "with", REDACT_TREATMENTS, what) or "mask",
        marker=b.string(m, "marker", what) or "[redacted]",
        summary=b.choice(m, "summary", REDACT_SUMMARIES, what) or "silent",
        loc=m.loc,
    )


def check_protect(rep: Reporter, labels: dict[str, Any], outputs: OutputsSpec) -> None:
    """``protect: keep`` is only valid for a label the policy's outputs are cleared for."""
    order = list(SENSITIVITIES)
    cleared = order.index(outputs.clearance)
    for p in labels.values():
        spec = p.spec
        if spec.protect is None or spec.protect.kind != "keep":
            continue
        if order.index(spec.sensitivity) > cleared:
            rep.add(
                f"`protect: keep` would write {spec.sensitivity} label `{spec.name}` in clear, "
                f"but outputs are cleared only up to `{outputs.clearance}`",
                spec.protect.loc,
                suggestion=f"use `protect: pseudonymize`, `mask` or `drop`, or set `outputs: {{clearance: {spec.sensitivity}}}`",
            )
