"""A JSON Schema of the policy format, for editors (completion and inline checks).

It describes shape only; `load_policy` remains the judge (references, CEL,
constants against label types, files). Property lists come from the same key
tuples the loader checks, so the two cannot drift apart.
"""

from __future__ import annotations

from typing import Any

from ._build import ENRICHER_KEYS, LABEL_KEYS, METADATA_KEYS, MODEL_KEYS, RULE_KEYS, TEST_KEYS, TOP_KEYS
from ._privacy import DETECTOR_KEYS, OUTPUTS_KEYS, PII_KEYS, PROTECT_KEYS, REDACT_KEYS, REDACT_TREATMENTS
from ._spec import (
    API_VERSION,
    ENRICHER_TYPES,
    KIND,
    LABEL_TYPES,
    LOOKUP_FORMATS,
    MODEL_TYPES,
    PROTECT_KINDS,
    REDACT_SUMMARIES,
    RESOLVE_MODES,
    SENSITIVITIES,
)

_CEL = {"type": "string", "description": "a CEL expression"}
_TEXT = {"type": "string"}
_SCALAR = {"type": ["string", "number", "boolean"]}
_UNIT = {"type": "number", "minimum": 0, "maximum": 1}


def _object(props: dict[str, Any], keys: tuple[str, ...], required: tuple[str, ...] = (), **extra: Any) -> dict[str, Any]:
    assert set(props) == set(keys), set(props) ^ set(keys)  # the loader's keys and the schema's stay in step
    return {"type": "object", "properties": props, "required": list(required), "additionalProperties": False, **extra}


def policy_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a policy file.

    Point an editor at it, e.g. with the YAML language server:
    ``# yaml-language-server: $schema=policy.schema.json`` on the policy's first line.
    """
    label = _object(
        {
            "type": {"enum": list(LABEL_TYPES)},
            "values": {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1, "uniqueItems": True},
            "open": {"type": "boolean", "default": False,
                     "description": "enum only: values beyond `values` are learned (review, models); max_cardinality still applies"},
            "default": {"description": "used when nothing sets the label; must fit the type"},
            "description": _TEXT,
            "owner": _TEXT,
            "sensitivity": {"enum": list(SENSITIVITIES), "default": "internal"},
            "max_cardinality": {"type": "integer", "minimum": 1},
            "overflow": {"type": "string", "default": "__other__"},
            "window": {"type": "number", "exclusiveMinimum": 0, "description": "seconds"},
            "resolve": {"enum": list(RESOLVE_MODES), "default": "first_match"},
            "from": _CEL,
            "bounds": {"type": "array", "items": {"type": "number"}, "minItems": 1},
            "protect": _protect_schema(),
        },
        LABEL_KEYS,
        ("type",),
    )
    rule = _object(
        {
            "id": {"type": "string", "minLength": 1},
            "label": _TEXT,
            "value": _SCALAR,
            "value_expr": _CEL,
            "when": _CEL,
            "confidence": {**_UNIT, "default": 1.0},
            "description": _TEXT,
        },
        RULE_KEYS,
        ("id", "label"),
        oneOf=[{"required": ["value"]}, {"required": ["value_expr"]}],
    )
    enricher = _object(
        {
            "name": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$", "not": {"enum": ["event", "labels", "now"]}},
            "type": {"enum": list(ENRICHER_TYPES)},
            "file": {"type": "string", "description": "relative to the policy file"},
            "format": {"enum": list(LOOKUP_FORMATS)},
            "key": _CEL,
            "key_field": _TEXT,
            "table": _TEXT,
            "key_column": _TEXT,
            "description": _TEXT,
        },
        ENRICHER_KEYS,
        ("name", "type", "key"),
    )
    model = _object(
        {
            "name": _TEXT,
            "label": _TEXT,
            "type": {"enum": list(MODEL_TYPES)},
            "path": {"type": "string", "description": "relative to the policy file"},
            "features": {"type": "object", "additionalProperties": _CEL},
            "min_confidence": {**_UNIT, "default": 0},
            "timeout_ms": {"type": "number", "exclusiveMinimum": 0, "default": 50},
            "on_error": {**_SCALAR, "default": "abstain"},
            "below_confidence": {"enum": ["abstain", "nearest-template"], "default": "abstain"},
            "version": {"type": ["string", "number"]},
            "description": _TEXT,
            "breaker_failures": {"type": "integer", "minimum": 1, "default": 5},
            "breaker_cooldown_s": {"type": "number", "exclusiveMinimum": 0, "default": 30},
        },
        MODEL_KEYS,
        ("name", "label", "type", "path"),
    )
    test = _object(
        {
            "name": _TEXT,
            "event": {"type": "object"},
            "expect": {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean", "null"]}},
        },
        TEST_KEYS,
        ("name", "event", "expect"),
    )
    metadata = _object(
        {"name": _TEXT, "version": {"type": ["string", "number"]}, "owner": _TEXT, "description": _TEXT},
        METADATA_KEYS,
    )
    root = _object(
        {
            "apiVersion": {"const": API_VERSION},
            "kind": {"const": KIND},
            "metadata": metadata,
            "include": {"type": "array", "items": {"type": "string"}},
            "labels": {
                "type": "object",
                "propertyNames": {"pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
                "additionalProperties": label,
            },
            "enrichers": {"type": "array", "items": enricher},
            "rules": {"type": "array", "items": rule},
            "tests": {"type": "array", "items": test},
            "models": {"type": "array", "items": model},
            **_privacy_sections(),
        },
        TOP_KEYS,
    )
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "activelabel policy (activelabel/v1)",
        **root,
    }


def _protect_schema() -> dict[str, Any]:
    return {
        "description": "what outputs not cleared for the label write instead of its value",
        "oneOf": [
            {"enum": list(PROTECT_KINDS)},
            _object(
                {
                    "with": {"enum": list(PROTECT_KINDS)},
                    "marker": _TEXT,
                    "keep_prefix": {"type": "integer", "minimum": 0},
                    "keep_suffix": {"type": "integer", "minimum": 0},
                },
                PROTECT_KEYS,
                ("with",),
            ),
        ],
    }


def _privacy_sections() -> dict[str, Any]:
    strings = {"type": "array", "items": {"type": "string", "minLength": 1}}
    detector = _object(
        {"entity": {"type": "string", "pattern": "^[A-Za-z0-9_]+$"}, "pattern": {"type": "string", "description": "RE2"}, "score": _UNIT},
        DETECTOR_KEYS,
        ("entity", "pattern"),
    )
    return {
        "outputs": _object({"clearance": {"enum": list(SENSITIVITIES), "default": "internal"}}, OUTPUTS_KEYS),
        "redact": _object(
            {
                "allowed_keys": strings,
                "ignored_keys": strings,
                "blocked_values": {**strings, "description": "RE2 patterns"},
                "entities": strings,
                "with": {"enum": list(REDACT_TREATMENTS), "default": "mask"},
                "marker": _TEXT,
                "summary": {"enum": list(REDACT_SUMMARIES), "default": "silent"},
            },
            REDACT_KEYS,
        ),
        "pii": _object(
            {
                "detectors": {"type": "array", "items": detector},
                "max_scan_chars": {"type": "integer", "minimum": 1},
                "undeclared_sample": _UNIT,
            },
            PII_KEYS,
        ),
    }

