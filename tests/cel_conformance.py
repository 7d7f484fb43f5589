"""Helpers for the CEL conformance test: decode the typed JSON values of
``../shared/data/cel-spec/cel_conformance_simple.jsonl`` and compare CEL values strictly."""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path
from typing import Any

from activelabel.cel import CelType, UInt
from activelabel.cel._values import TYPE_NAMES

DATA = Path(__file__).resolve().parent.parent / ".." / "shared" / "data" / "cel-spec" / "cel_conformance_simple.jsonl"

# Features docs/cel.md lists as unsupported; cases requiring them are skipped.
UNSUPPORTED_REQUIRES = frozenset({"proto_messages"})

# Cases docs/cel.md lists as known deviations, with the reason (run as xfail).
KNOWN_DEVIATIONS = {
    "parse/bytes_literals/triple_single_quoted_unescaped_punctuation":
        "expected bytes contain a backslash the expression does not (spec data quirk; cel-cpp skips it too)",
    "parse/bytes_literals/triple_double_quoted_unescaped_punctuation":
        "expected bytes contain a backslash the expression does not (spec data quirk; cel-cpp skips it too)",
}


def load_cases() -> list[dict[str, Any]]:
    """Every conformance record, in file order."""
    with open(DATA, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def decode(typed: dict[str, Any]) -> Any:
    """A typed JSON value (README 'Typed value encoding') as the Python value activelabel.cel uses."""
    ((kind, v),) = typed.items()
    if kind == "int64":
        return int(v)
    if kind == "uint64":
        return UInt(int(v))
    if kind == "double":
        return float({"NaN": "nan", "Infinity": "inf", "-Infinity": "-inf"}.get(v, v)) if isinstance(v, str) else float(v)
    if kind == "string":
        return v
    if kind == "bytes":
        return base64.b64decode(v)
    if kind == "bool":
        return bool(v)
    if kind == "null":
        return None
    if kind == "list":
        return [decode(x) for x in v]
    if kind == "map":
        return {decode(e["key"]): decode(e["value"]) for e in v}
    if kind == "type":
        return TYPE_NAMES.get(v) or CelType(v)
    raise ValueError(f"unsupported typed value kind {kind!r}")


def same_value(expected: Any, actual: Any) -> bool:
    """Strict CEL-typed equality: same type (int / uint / double / bool kept apart), NaN equals NaN."""
    if expected.__class__ is not actual.__class__:
        if isinstance(expected, list) and isinstance(actual, (list, tuple)):
            pass
        else:
            return False
    if isinstance(expected, float):
        if math.isnan(expected):
            return math.isnan(actual)
        return expected == actual and math.copysign(1, expected) == math.copysign(1, actual)
    if isinstance(expected, list):
        return len(expected) == len(actual) and all(same_value(e, a) for e, a in zip(expected, actual))
    if isinstance(expected, dict):
        if len(expected) != len(actual):
            return False
        for k, v in expected.items():
            match = [ak for ak in actual if ak.__class__ is k.__class__ and ak == k]
            if not match or not same_value(v, actual[match[0]]):
                return False
        return True
    return bool(expected == actual)
