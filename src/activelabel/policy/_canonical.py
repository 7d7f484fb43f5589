"""The canonical form of a merged policy, and the digest / version derived from it.

    digest  = "sha256:" + hex(SHA-256(canonical JSON))
    version = digest + "/" + metadata.version   (when metadata.version is set)
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import orjson

from ._spec import (
    EnricherSpec,
    LabelSpec,
    Metadata,
    ModelSpec,
    OutputsSpec,
    PiiSpec,
    PolicyTest,
    ProtectSpec,
    RedactSpec,
    RuleSpec,
)

# Fields of the spec dataclasses (policy/_spec.py) that are deliberately NOT part
# of the canonical form, with the reason. Every other field must change the form
# (and so the policy version) when it changes: tests/test_policy_canonical.py
# checks both, so a new field cannot silently leave the version unchanged.
NOT_HASHED: Mapping[tuple[str, str], str] = {
    ("Expr", "ast"): "parsed from `source`, which is hashed",
    ("ProtectSpec", "loc"): "where it was written",
    ("OutputsSpec", "loc"): "where it was written",
    ("DetectorSpec", "loc"): "where it was written",
    ("RedactSpec", "loc"): "where it was written",
    ("Expr", "loc"): "where it was written: formatting, not meaning",
    ("Metadata", "loc"): "where it was written",
    ("LabelSpec", "loc"): "where it was written",
    ("LabelSpec", "index"): "declaration order is the order of the hashed list",
    ("LabelSpec", "bounds"): "parsed from `bound_texts`, which are hashed as written",
    ("LabelSpec", "bucket_names"): "derived from `bound_texts`",
    ("RuleSpec", "loc"): "where it was written",
    ("RuleSpec", "index"): "file order is the order of the hashed list",
    ("EnricherSpec", "path"): "`file` resolved on this machine; `file` as written and the table's `sha256` are hashed",
    ("EnricherSpec", "loc"): "where it was written",
    ("EnricherSpec", "index"): "file order is the order of the hashed list",
    ("EnricherSpec", "_rows"): "the table read at load time; its content is hashed as `sha256`",
    ("ModelSpec", "path"): "`path_text` resolved on this machine; `path_text` is hashed",
    ("ModelSpec", "loc"): "where it was written",
    ("ModelSpec", "index"): "file order is the order of the hashed list",
    ("PolicyTest", "loc"): "where it was written",
    ("PolicyTest", "index"): "file order is the order of the hashed list",
    ("Policy", "digest"): "computed from the canonical form",
    ("Policy", "version"): "computed from the digest and metadata.version",
    ("Policy", "source"): "the path it was loaded from",
    ("Policy", "base_dir"): "the folder it was loaded from",
    ("Policy", "files"): "how the policy is split into includes does not change it",
    ("Policy", "dependencies"): "resolved paths on this machine; table contents are hashed per enricher",
    ("Policy", "warnings"): "derived from the hashed content",
    ("Policy", "canonical_json"): "the canonical form itself",
}


def digest_of(canonical: dict[str, Any]) -> tuple[bytes, str]:
    """The canonical JSON bytes (sorted keys, no whitespace) and their "sha256:<hex>" digest."""
    data = orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=_json_default)
    return data, "sha256:" + hashlib.sha256(data).hexdigest()


def version_of(digest: str, metadata: Metadata) -> str:
    """The policy version: the digest, plus "/<metadata.version>" when set."""
    return digest + (f"/{metadata.version}" if metadata.version else "")


def canonical_form(
    api_version: str,
    kind: str,
    metadata: Metadata,
    *,
    labels: dict[str, LabelSpec],
    rules: list[RuleSpec],
    enrichers: list[EnricherSpec],
    models: list[ModelSpec],
    tests: list[PolicyTest],
    outputs: OutputsSpec | None = None,
    redact: RedactSpec | None = None,
    pii: PiiSpec | None = None,
) -> dict[str, Any]:
    """The merged policy as plain data with every default filled in (what the digest hashes).

    The privacy sections (``outputs``, ``redact``, ``pii``) are written only when they
    differ from their defaults, so policies without them keep their versions.

    Formatting, comments, key order, how the policy is split into includes and
    whether a default is written out do not change it; enricher file contents do
    (through their SHA-256).
    """

    def expr(e: Any) -> str | None:
        return e.source.strip() if e is not None else None

    form: dict[str, Any] = {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {
            "name": metadata.name,
            "version": metadata.version,
            "owner": metadata.owner,
            "description": metadata.description,
        },
        "labels": [
            {
                "name": lab.name,
                "type": lab.type,
                "values": list(lab.values) if lab.values is not None else None,
                "default": {"value": lab.default} if lab.has_default else None,
                "resolve": lab.resolve,
                "description": lab.description,
                "owner": lab.owner,
                "sensitivity": lab.sensitivity,
                "max_cardinality": lab.max_cardinality,
                "overflow": lab.overflow,
                "window": lab.window,
                "from": expr(lab.bucket_from),
                "bounds": list(lab.bound_texts),
                # Written only when set, so policies without privacy syntax keep their versions.
                **({"protect": _protect(lab.protect)} if lab.protect is not None else {}),
                **({"open": True} if lab.open else {}),
            }
            for lab in labels.values()
        ],
        "enrichers": [
            {
                "name": e.name,
                "type": e.type,
                "file": e.file,
                "format": e.format,
                "key": expr(e.key),
                "key_field": e.key_field,
                "table": e.table,
                "key_column": e.key_column,
                "description": e.description,
                "sha256": e.sha256,
            }
            for e in enrichers
        ],
        "rules": [
            {
                "id": r.id,
                "label": r.label,
                "value": r.value,
                "value_expr": expr(r.value_expr),
                "when": expr(r.when),
                "confidence": r.confidence,
                "description": r.description,
            }
            for r in rules
        ],
        "models": [
            {
                "name": m.name,
                "label": m.label,
                "type": m.type,
                "path": m.path_text,
                "features": {k: expr(v) for k, v in m.features.items()},
                "min_confidence": m.min_confidence,
                "timeout_ms": m.timeout_ms,
                "on_error": m.on_error,
                # Only when set: the versions of policies written before the key existed stay the same.
                **({"below_confidence": m.below_confidence} if m.below_confidence != "abstain" else {}),
                "version": m.version,
                "description": m.description,
                "breaker_failures": m.breaker_failures,
                "breaker_cooldown_s": m.breaker_cooldown_s,
            }
            for m in models
        ],
        "tests": [{"name": t.name, "event": t.event, "expect": dict(t.expect)} for t in tests],
    }
    form.update(privacy_canonical(outputs or OutputsSpec(), redact, pii or PiiSpec()))
    return form


def _protect(p: ProtectSpec | None) -> dict[str, Any] | None:
    if p is None:
        return None
    return {"with": p.kind, "marker": p.marker, "keep_prefix": p.keep_prefix, "keep_suffix": p.keep_suffix}


def privacy_canonical(outputs: OutputsSpec, redact: RedactSpec | None, pii: PiiSpec) -> dict[str, Any]:
    """The ``outputs``, ``redact`` and ``pii`` sections in canonical form (merged into `canonical_form`'s result).

    A section left at its default is not written, so policies without privacy
    syntax keep the versions they had before it existed.
    """
    out = {
        "outputs": {"clearance": outputs.clearance},
        "redact": None
        if redact is None
        else {
            "allowed_keys": list(redact.allowed_keys) if redact.allowed_keys is not None else None,
            "ignored_keys": list(redact.ignored_keys),
            "blocked_values": list(redact.blocked_values),
            "entities": list(redact.entities),
            "with": redact.treatment,
            "marker": redact.marker,
            "summary": redact.summary,
        },
        "pii": {
            "detectors": [{"entity": d.entity, "pattern": d.pattern, "score": d.score} for d in pii.detectors],
            "max_scan_chars": pii.max_scan_chars,
            "undeclared_sample": pii.undeclared_sample,
        },
    }
    defaults = {"outputs": OutputsSpec(), "redact": None, "pii": PiiSpec()}
    given = {"outputs": outputs, "redact": redact, "pii": pii}
    return {k: v for k, v in out.items() if given[k] != defaults[k]}


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (bytes, bytearray)):
        return {"$bytes": bytes(obj).hex()}
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=repr)
    return repr(obj)
