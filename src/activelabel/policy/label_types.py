"""What each label type accepts and produces: the one home of that knowledge.

Every part that asks "does this value fit this label?" reads it here: policy
validation (constants, defaults, test expectations), the engine (values a rule
computes, bucket names of a number, and the checks its generated code inlines),
the decision store (ground truth coming back through ``feedback``), and the
service. Before this module the rules lived in four copies, and the feedback copy
re-derived bucket names from the parsed bounds, so ``bounds: [0.5, 10, 1e3]`` gave
``>=1000`` there while the policy produces ``>=1e3``.

>>> bucket_names(("100", "500"))
('<100', '100-500', '>=500')
>>> fits("int", True)
False
>>> parse_value("bool", "TRUE")
True
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from itertools import pairwise
from typing import TYPE_CHECKING, Any, Final, Literal, TypeAlias

if TYPE_CHECKING:
    from ._spec import LabelSpec

LabelType: TypeAlias = Literal["enum", "bool", "string", "int", "float", "bucket"]

LABEL_TYPES: Final[tuple[LabelType, ...]] = ("enum", "bool", "string", "int", "float", "bucket")
"""Every label type, in the order the docs list them."""

CHOICE_TYPES: Final[frozenset[str]] = frozenset({"enum", "bucket"})
"""Types whose values are a fixed list of names (the enum's ``values``, the bucket names)."""

OPEN_TYPES: Final[frozenset[str]] = frozenset({"string", "int", "float"})
"""Types with no fixed set of values: where a cardinality limit (or distinct tracking) matters."""

TYPE_NOUNS: Final[Mapping[str, str]] = {
    "enum": "a string", "bucket": "a bucket name", "bool": "a boolean", "string": "a string",
    "int": "an integer", "float": "a number",
}  # fmt: skip
"""What a value of each type is, for messages: "value `x` is not an integer"."""


class _NoFit:
    """The marker :func:`convert` returns for a value outside the label's type."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NO_FIT"


NO_FIT: Final = _NoFit()


def allowed_values(label: LabelSpec) -> tuple[str, ...] | None:
    """The names a choice label may take (enum values or bucket names); None for other types."""
    if label.type == "enum":
        return label.values or ()
    if label.type == "bucket":
        return label.bucket_names
    return None


def fits(label_type: str, value: Any, allowed: Sequence[str] | None = None) -> bool:
    """Whether ``value`` is, as it stands, a value of a label of ``label_type``.

    ``allowed`` is the list of names for enum and bucket labels. No conversion:
    ``1`` fits a float label, ``"1"`` fits nothing but a string (or a choice that lists it).
    """
    if label_type in CHOICE_TYPES:
        return isinstance(value, str) and value in (allowed or ())
    if label_type == "bool":
        return isinstance(value, bool)
    if label_type == "string":
        return isinstance(value, str)
    if label_type == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if label_type == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return False


def value_type(label: LabelSpec) -> str:
    """The type values are checked against: an open enum (``open: true``) takes any non-empty
    string, like a string label, while its ``values`` stay the names known up front."""
    return "string" if label.type == "enum" and getattr(label, "open", False) else label.type


def label_fits(label: LabelSpec, value: Any) -> bool:
    """Whether ``value`` is a valid value of ``label`` (type, enum values, bucket names)."""
    if value_type(label) != label.type:
        return isinstance(value, str) and value != ""
    return fits(label.type, value, allowed_values(label))


def convert(label_type: str, value: Any, allowed: Sequence[str] | frozenset[str] | None = None) -> Any:
    """``value`` in the label's stored form (float labels hold floats), or :data:`NO_FIT`.

    This is what the engine applies to a value a rule computed (``value_expr``);
    the generated code inlines the same test from :data:`GENERATED_CHECKS`.
    """
    cls = value.__class__
    if label_type in CHOICE_TYPES:
        return value if cls is str and value in (allowed or ()) else NO_FIT
    if label_type == "string":
        return str(value) if isinstance(value, str) else NO_FIT
    if label_type == "bool":
        return value if cls is bool else NO_FIT
    if label_type == "int":
        return int(value) if isinstance(value, int) and cls is not bool else NO_FIT
    if label_type == "float":
        if not isinstance(value, (int, float)) or cls is bool:
            return NO_FIT
        number = float(value)
        # inf and NaN have no JSON form: written out they would read back as null
        return number if -math.inf < number < math.inf else NO_FIT
    return NO_FIT


def coerce(label: LabelSpec, value: Any) -> Any:
    """The stored form of a constant that fits ``label``: float labels hold floats."""
    if label.type == "float":
        return float(value)
    return value


GENERATED_CHECKS: Final[Mapping[str, str]] = {
    # Python expression templates the engine's generated code wraps around a
    # computed value: ``{}`` is the value expression, ``{enum}`` the name of a
    # frozenset of the enum's values, ``_NOFIT`` is what a value that does not fit gives
    # (the generated code counts the rule's error in place). Same answers as `convert`.
    "enum": "(_y if (_y := {}) in {enum} and _y.__class__ is str else _NOFIT)",
    "string": "(_y if (_y := {}).__class__ is str else _NOFIT)",
    "bool": "(_y if (_y := {}).__class__ is bool else _NOFIT)",
    "int": "(_y if (_y := {}).__class__ is int else _NOFIT)",
    "float": "(_yf if ((_y := {}).__class__ is float or _y.__class__ is int) and -1e309 < (_yf := float(_y)) < 1e309 "
             "else _NOFIT)",
}


def generated_check(label_type: str, enum_name: str) -> str:
    """The check template for ``label_type`` with the enum set's name filled in (``{}`` left for the value)."""
    return GENERATED_CHECKS[label_type].replace("{enum}", enum_name)


def parse_value(label_type: str, value: Any, allowed: Sequence[str] | None = None) -> Any:
    """A value given by a person (feedback, review) in the label's stored form; ValueError says why not.

    Lenient where a person would be: ``"true"`` for a bool, ``"42"`` for an int,
    ``"0.5"`` for a float; a choice label takes exactly one of its names.
    """
    if label_type in CHOICE_TYPES:
        for name in allowed or ():
            if value == name or str(value) == str(name):
                return name
        raise ValueError(f"value {value!r} is outside the label's values: {', '.join(map(str, allowed or []))}")
    if label_type == "bool":
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "false"):
            return str(value).lower() == "true"
        raise ValueError(f"value {value!r} is not a valid bool")
    if label_type == "int":
        if not isinstance(value, bool) and (isinstance(value, int) or str(value).lstrip("-").isdigit()):
            return int(value)
        raise ValueError(f"value {value!r} is not a valid int")
    if label_type == "float":
        try:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"value {value!r} is not a valid float") from None
    if value is None:
        raise ValueError("needs a value")
    return value if isinstance(value, str) else str(value)


def value_text(value: Any) -> str:
    """A label value as text (HTTP headers, Kubernetes labels): ``true``/``false`` for booleans, ``str`` otherwise.

    Inverse of `parse_value` for every type: ``parse_value(t, value_text(v), allowed) == v``.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def format_number(x: float | None) -> str:
    """A number as messages show it: ``5.0`` → ``5``, ``0.5`` → ``0.5``, None → ``""``."""
    if x is None:
        return ""
    return str(int(x)) if float(x).is_integer() else str(x)


def bucket_names(bound_texts: Sequence[str]) -> tuple[str, ...]:
    """``("100", "500")`` → ``("<100", "100-500", ">=500")``.

    Bounds keep the text written in the policy (``1e3`` stays ``1e3``): these are
    the names the label produces and the only names feedback may use.
    """
    if not bound_texts:
        return ()
    names = [f"<{bound_texts[0]}"]
    names += [f"{a}-{b}" for a, b in pairwise(bound_texts)]
    names.append(f">={bound_texts[-1]}")
    return tuple(names)


# Which bucket a number falls in: ``bucket_index(bounds, x)`` is the index of the
# first bound ``x`` is below, else the last bucket (NaN lands there too; the
# engine refuses NaN before asking). Bound to `bisect_right` itself, not wrapped,
# because generated code calls it once per event.
bucket_index: Final[Callable[[Sequence[float], float], int]] = bisect_right


def bucket_of(label: LabelSpec, number: float) -> str:
    """The bucket name of ``number`` for a bucket ``label``."""
    return label.bucket_names[bucket_index(label.bounds, number)]


__all__ = [
    "CHOICE_TYPES",
    "GENERATED_CHECKS",
    "LABEL_TYPES",
    "LabelType",
    "NO_FIT",
    "OPEN_TYPES",
    "TYPE_NOUNS",
    "allowed_values",
    "bucket_index",
    "bucket_names",
    "bucket_of",
    "coerce",
    "convert",
    "fits",
    "format_number",
    "generated_check",
    "label_fits",
    "parse_value",
    "value_text",
    "value_type",
]
