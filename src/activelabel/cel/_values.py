"""CEL values as Python values, and the CEL rules for comparing them.

int -> ``int`` (int64 range), uint -> :class:`UInt`, double -> ``float``,
string -> ``str``, bytes -> ``bytes``, bool -> ``bool``, null -> ``None``,
list -> ``list`` (tuples accepted), map -> ``dict``, timestamp ->
``datetime`` (timezone-aware), duration -> ``timedelta``, type -> :class:`CelType`.

Python's ``bool`` is an ``int`` and ``1 == 1.0`` holds in Python too, so every
rule here dispatches on the exact class first.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

from activelabel.errors import CELEvalError, NoOverloadError


class UInt(int):
    """A CEL ``uint`` (0 .. 2**64-1). Arithmetic on it returns plain ints; the evaluator re-wraps."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"{int(self)}u"


class CelType:
    """A CEL type value, e.g. what ``type(1)`` returns (``int``)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CelType) and other.name == self.name

    def __hash__(self) -> int:
        return hash(("CelType", self.name))


INT = CelType("int")
UINT = CelType("uint")
DOUBLE = CelType("double")
STRING = CelType("string")
BYTES = CelType("bytes")
BOOL = CelType("bool")
NULL_TYPE = CelType("null_type")
LIST = CelType("list")
MAP = CelType("map")
TYPE = CelType("type")
TIMESTAMP = CelType("google.protobuf.Timestamp")
DURATION = CelType("google.protobuf.Duration")

TYPE_NAMES: dict[str, CelType] = {
    t.name: t for t in (INT, UINT, DOUBLE, STRING, BYTES, BOOL, NULL_TYPE, LIST, MAP, TYPE, TIMESTAMP, DURATION)
}

_TYPE_OF: dict[type, CelType] = {
    bool: BOOL,
    int: INT,
    UInt: UINT,
    float: DOUBLE,
    str: STRING,
    bytes: BYTES,
    type(None): NULL_TYPE,
    list: LIST,
    tuple: LIST,
    dict: MAP,
    CelType: TYPE,
    datetime: TIMESTAMP,
    timedelta: DURATION,
}

NUMERIC = frozenset({int, UInt, float})
_ORDERED = frozenset({int, UInt, float, str, bytes, bool, datetime, timedelta})


def cel_type(v: Any) -> CelType:
    """The CEL type of a Python value; CELEvalError if it is not a CEL value."""
    t = _TYPE_OF.get(v.__class__)
    if t is None:
        for cls, ct in _TYPE_OF.items():
            if isinstance(v, cls):
                return ct
        raise CELEvalError(f"value of Python type {type(v).__name__} is not a CEL value")
    return t


def type_name(v: Any) -> str:
    try:
        return cel_type(v).name
    except CELEvalError:
        return type(v).__name__


def _kind(v: Any) -> type:
    c = v.__class__
    if c in _TYPE_OF:
        return c  # type: ignore[no-any-return]
    for cls in _TYPE_OF:  # subclasses (e.g. OrderedDict): map to their CEL base
        if isinstance(v, cls):
            return bool if isinstance(v, bool) else cls
    return c  # type: ignore[no-any-return]


def cel_equal(a: Any, b: Any) -> bool:
    """CEL ``==``: heterogeneous equality (different types are unequal, numbers compare by value)."""
    ka, kb = _kind(a), _kind(b)
    if ka is kb:
        if ka is list or ka is tuple:
            return len(a) == len(b) and all(cel_equal(x, y) for x, y in zip(a, b))
        if ka is dict:
            return _map_equal(a, b)
        return bool(a == b)
    if ka in NUMERIC and kb in NUMERIC:
        # int vs double compares as double (cel-go); int vs uint exactly. NaN is unequal to all.
        if ka is float:
            return bool(a == float(b))
        if kb is float:
            return bool(float(a) == b)
        return bool(a == b)
    if (ka is list or ka is tuple) and (kb is list or kb is tuple):
        return len(a) == len(b) and all(cel_equal(x, y) for x, y in zip(a, b))
    return False


def _map_equal(a: dict[Any, Any], b: dict[Any, Any]) -> bool:
    if len(a) != len(b):
        return False
    for k, v in a.items():
        found, other = map_get(b, k)
        if not found or not cel_equal(v, other):
            return False
    return True


def map_get(m: dict[Any, Any], key: Any) -> tuple[bool, Any]:
    """Look ``key`` up in a CEL map: numeric keys match across int/uint/double, bool never matches a number."""
    kk = _kind(key)
    if kk is float:
        if not key.is_integer():
            return False, None
        key = int(key)
        kk = int
    elif kk is not str and kk is not int and kk is not UInt and kk is not bool:
        # only int, uint, bool and string are map key types (doubles convert above)
        raise CELEvalError(f"unsupported map key type {type_name(key)}")
    try:
        v = m[key]
    except KeyError:
        return False, None
    except TypeError:
        raise CELEvalError(f"unsupported map key type {type_name(key)}") from None
    # Python dicts conflate True with 1 and False with 0; CEL does not.
    if (kk is bool or kk is int or kk is UInt) and (key == 0 or key == 1) and (
            (_stored_key(m, key).__class__ is bool) != (kk is bool)):
        return False, None
    return True, v


def _stored_key(m: dict[Any, Any], key: Any) -> Any:
    # The key as stored (only needed for the rare bool/number ambiguity check).
    if key.__class__ is str:
        return key
    for k in m:
        if k == key and hash(k) == hash(key):
            return k
    return key


def cel_compare(op: str, a: Any, b: Any) -> bool:
    """CEL ``<``, ``<=``, ``>``, ``>=`` (``op`` is the operator name, e.g. ``_<_``).

    Numbers order across int / uint / double; an integer compared with a
    double is converted to double first, as cel-go does (so 2**63-1 < 2.0**63
    is false). Other mixed types raise 'no such overload'.
    """
    ka, kb = _kind(a), _kind(b)
    if ka is not kb:
        if not (ka in NUMERIC and kb in NUMERIC):
            raise no_overload(op, a, b)
        if ka is float:
            b = float(b)
        elif kb is float:
            a = float(a)
    elif ka not in _ORDERED:
        raise no_overload(op, a, b)
    if op == "_<_":
        return bool(a < b)
    if op == "_<=_":
        return bool(a <= b)
    if op == "_>_":
        return bool(a > b)
    return bool(a >= b)


NoOverloadError.type_name = staticmethod(type_name)  # its message names CEL's types


def no_overload(fn: str, *args: Any) -> CELEvalError:
    return NoOverloadError(fn, args)


def is_nan(v: Any) -> bool:
    return v.__class__ is float and math.isnan(v)
