"""Constants against label types, and how values are shown in messages."""

from __future__ import annotations

from typing import Any

from ._spec import LabelSpec
from ._suggest import did_you_mean
from ._yaml import YMap, YNode, YScalar, YSeq
from .label_types import CHOICE_TYPES, TYPE_NOUNS, allowed_values, bucket_names, coerce, format_number, label_fits


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


fmt_num = format_number

__all__ = ["bucket_names", "coerce", "constant_problem", "describe", "fmt_num"]


def constant_problem(label: LabelSpec, value: Any) -> tuple[str, str | None] | None:
    """Why ``value`` cannot be a value of ``label`` (message, suggestion), or None if it fits."""
    if label_fits(label, value):
        return None
    shown = "null" if value is None else (f"`{value}`" if not isinstance(value, bool) else f"`{str(value).lower()}`")
    if label.type in CHOICE_TYPES and isinstance(value, str):
        allowed = allowed_values(label) or ()
        return (
            f"value {shown} is not one of label `{label.name}`'s values [{', '.join(allowed)}]",
            did_you_mean(value, allowed),
        )
    kind = TYPE_NOUNS[label.type]
    hint = None
    if label.type == "string" and value is not None:
        hint = f'quote it: "{value if not isinstance(value, bool) else str(value).lower()}"'
    elif label.type == "bool" and isinstance(value, str) and value.lower() in ("yes", "no", "on", "off", "true", "false"):
        hint = "use true or false"
    elif label.type in ("int", "float") and isinstance(value, str) and _is_number(value, label.type == "int"):
        hint = f"write the number without quotes: {value.strip()}"
    elif label.type in CHOICE_TYPES and value is not None:
        hint = f'quote it: "{str(value).lower() if isinstance(value, bool) else value}"'
    return f"value {shown} is not {kind} (label `{label.name}` is {label.type})", hint


def _is_number(text: str, integer: bool) -> bool:
    try:
        int(text) if integer else float(text)
    except ValueError:
        return False
    return True
