"""Constants against label types, and how values are shown in messages."""

from __future__ import annotations

from typing import Any

from ._spec import LabelSpec, value_fits
from ._suggest import did_you_mean
from ._yaml import YMap, YNode, YScalar, YSeq


def describe(node: YNode | None) -> str:
    """A short description of a node's value for messages: "a list", "the number 5"..."""
    if node is None:
        return "nothing"
    if isinstance(node, YSeq):
        return "a list"
    if isinstance(node, YMap):
        return "a mapping"
    assert isinstance(node, YScalar)
    v = node.value
    if v is None:
        return "null"
    if isinstance(v, bool):
        return f"the boolean {node.raw}"
    if isinstance(v, (int, float)):
        return f"the number {node.raw}"
    if isinstance(v, str):
        return f"the string `{v}`"
    return f"`{node.raw}`"


def fmt_num(x: float | None) -> str:
    if x is None:
        return ""
    return str(int(x)) if float(x).is_integer() else str(x)


def bucket_names(texts: tuple[str, ...]) -> tuple[str, ...]:
    """``("100", "500")`` → ``("<100", "100-500", ">=500")``; bounds keep the text written in the policy."""
    if not texts:
        return ()
    names = [f"<{texts[0]}"]
    names += [f"{a}-{b}" for a, b in zip(texts, texts[1:])]
    names.append(f">={texts[-1]}")
    return tuple(names)


def constant_problem(label: LabelSpec, value: Any) -> tuple[str, str | None] | None:
    """Why ``value`` cannot be a value of ``label`` (message, suggestion), or None if it fits."""
    if value_fits(label, value):
        return None
    shown = "null" if value is None else (f"`{value}`" if not isinstance(value, bool) else f"`{str(value).lower()}`")
    if label.type in ("enum", "bucket") and isinstance(value, str):
        allowed = label.values if label.type == "enum" else label.bucket_names
        allowed = allowed or ()
        return (
            f"value {shown} is not one of label `{label.name}`'s values [{', '.join(allowed)}]",
            did_you_mean(value, allowed),
        )
    kind = {"enum": "a string", "bucket": "a bucket name", "bool": "a boolean", "string": "a string",
            "int": "an integer", "float": "a number"}[label.type]  # fmt: skip
    hint = None
    if label.type == "string" and value is not None:
        hint = f'quote it: "{value if not isinstance(value, bool) else str(value).lower()}"'
    elif label.type == "bool" and isinstance(value, str) and value.lower() in ("yes", "no", "on", "off", "true", "false"):
        hint = "use true or false"
    elif label.type in ("int", "float") and isinstance(value, str) and _is_number(value, label.type == "int"):
        hint = f"write the number without quotes: {value.strip()}"
    elif label.type in ("enum", "bucket") and value is not None:
        hint = f'quote it: "{str(value).lower() if isinstance(value, bool) else value}"'
    return f"value {shown} is not {kind} (label `{label.name}` is {label.type})", hint


def coerce(label: LabelSpec, value: Any) -> Any:
    """The stored form of a fitting constant: float labels hold floats."""
    if label.type == "float":
        return float(value)
    return value


def _is_number(text: str, integer: bool) -> bool:
    try:
        int(text) if integer else float(text)
    except ValueError:
        return False
    return True
