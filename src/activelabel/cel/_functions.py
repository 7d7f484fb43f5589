"""CEL standard functions and operators over Python values (exact semantics).

Each function takes already-evaluated arguments and returns a CEL value or
raises CELEvalError. Shared by the exact evaluator and, for the arithmetic
helpers, by the generated code.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from activelabel.cel._budget import check_size
from activelabel.cel._pii_ext import PII_FUNCTIONS
from activelabel.cel._regex import matches
from activelabel.cel._strings_ext import STRING_FUNCTIONS
from activelabel.cel._time import (
    EPOCH,
    TIME_METHODS,
    duration_range,
    format_duration,
    format_timestamp,
    to_duration,
    to_timestamp,
    ts_add,
)
from activelabel.cel._values import (
    NUMERIC,
    TYPE_NAMES,
    CelType,
    UInt,
    cel_equal,
    cel_type,
    map_get,
    no_overload,
    type_name,
)
from activelabel.errors import CELEvalError

INT_MIN, INT_MAX = -(2**63), 2**63 - 1
UINT_MAX = 2**64 - 1


def _int(v: int, fn: str) -> int:
    if INT_MIN <= v <= INT_MAX:
        return v
    raise CELEvalError(f"return error for overflow: int64 {fn} result out of range")


def _uint(v: int, fn: str) -> UInt:
    if 0 <= v <= UINT_MAX:
        return UInt(v)
    raise CELEvalError(f"return error for overflow: uint64 {fn} result out of range")


# ---- arithmetic ---------------------------------------------------------

def add(a: Any, b: Any) -> Any:
    ca, cb = a.__class__, b.__class__
    if ca is cb:
        if ca is int:
            return _int(a + b, "_+_")
        if ca is float:
            return a + b
        if ca is str or ca is bytes or ca is list:
            check_size(len(a) + len(b), "_+_")
            return a + b
        if ca is UInt:
            return _uint(a + b, "_+_")
        if ca is timedelta:
            return duration_range(a + b)
    if (ca is tuple or cb is tuple) and (ca is list or ca is tuple) and (cb is list or cb is tuple):
        check_size(len(a) + len(b), "_+_")
        return list(a) + list(b)
    if ca is datetime and cb is timedelta:
        return ts_add(a, b)
    if ca is timedelta and cb is datetime:
        return ts_add(b, a)
    raise no_overload("_+_", a, b)


def sub(a: Any, b: Any) -> Any:
    ca, cb = a.__class__, b.__class__
    if ca is cb:
        if ca is int:
            return _int(a - b, "_-_")
        if ca is float:
            return a - b
        if ca is UInt:
            return _uint(a - b, "_-_")
        if ca is timedelta:
            return duration_range(a - b)
        if ca is datetime:
            return duration_range(a - b)
    if ca is datetime and cb is timedelta:
        return ts_add(a, -b)
    raise no_overload("_-_", a, b)


def mul(a: Any, b: Any) -> Any:
    ca, cb = a.__class__, b.__class__
    if ca is cb:
        if ca is int:
            return _int(a * b, "_*_")
        if ca is float:
            return a * b
        if ca is UInt:
            return _uint(a * b, "_*_")
    raise no_overload("_*_", a, b)


def div(a: Any, b: Any) -> Any:
    ca, cb = a.__class__, b.__class__
    if ca is cb:
        if ca is int or ca is UInt:
            if b == 0:
                raise CELEvalError("divide by zero")
            q = abs(a) // abs(b)
            if (a < 0) != (b < 0):
                q = -q
            return _int(q, "_/_") if ca is int else UInt(q)
        if ca is float:
            if b == 0.0:
                if a == 0.0 or math.isnan(a):
                    return math.nan
                return math.copysign(math.inf, a) * math.copysign(1.0, b)
            return a / b
    raise no_overload("_/_", a, b)


def mod(a: Any, b: Any) -> Any:
    ca, cb = a.__class__, b.__class__
    if ca is cb and (ca is int or ca is UInt):
        if b == 0:
            raise CELEvalError("modulus by zero")
        r = abs(a) % abs(b)
        r = -r if a < 0 else r  # C semantics: the sign follows the dividend
        return r if ca is int else UInt(r)
    raise no_overload("_%_", a, b)


def neg(a: Any) -> Any:
    c = a.__class__
    if c is int:
        return _int(-a, "-_")
    if c is float:
        return -a
    if c is timedelta:
        return duration_range(-a)
    raise no_overload("-_", a)


def logical_not(a: Any) -> bool:
    if a is True:
        return False
    if a is False:
        return True
    raise no_overload("!_", a)


# ---- comparison, membership, index -------------------------------------

def contains_in(elem: Any, container: Any) -> bool:
    c = container.__class__
    if c is list or c is tuple:
        return any(cel_equal(elem, x) for x in container)
    if c is dict:
        return map_get(container, elem)[0]
    if isinstance(container, dict):
        return map_get(container, elem)[0]
    raise no_overload("@in", elem, container)


def index(container: Any, key: Any) -> Any:
    c = container.__class__
    if c is list or c is tuple:
        kc = key.__class__
        if kc is float:
            if not key.is_integer():
                raise CELEvalError(f"invalid list index {key!r}: not an integer")
            key = int(key)
        elif kc is not int and kc is not UInt:
            raise no_overload("_[_]", container, key)
        if 0 <= key < len(container):
            return container[key]
        raise CELEvalError(f"index out of bounds: {key} (list size {len(container)})")
    if c is dict or isinstance(container, dict):
        found, v = map_get(container, key)
        if found:
            return v
        raise CELEvalError(f"no such key: {key!r}")
    raise no_overload("_[_]", container, key)


def select(operand: Any, field: str) -> Any:
    if operand.__class__ is dict or isinstance(operand, dict):
        try:
            return operand[field]
        except KeyError:
            raise CELEvalError(f"no such key: {field!r}") from None
    raise CELEvalError(f"type '{type_name(operand)}' does not support field selection (.{field})")


def has_field(operand: Any, field: str) -> bool:
    if operand.__class__ is dict or isinstance(operand, dict):
        return field in operand
    raise CELEvalError(f"has(): type '{type_name(operand)}' does not support field selection (.{field})")


# ---- strings -------------------------------------------------------------

def _str_fn(name: str, impl: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def f(s: Any, sub: Any) -> bool:
        if s.__class__ is str and sub.__class__ is str:
            return impl(s, sub)
        raise no_overload(name, s, sub)

    return f


contains = _str_fn("contains", lambda s, x: x in s)
starts_with = _str_fn("startsWith", str.startswith)
ends_with = _str_fn("endsWith", str.endswith)


def size(v: Any) -> int:
    c = v.__class__
    if c is str or c is bytes or c is list or c is tuple or c is dict or isinstance(v, dict):
        return len(v)
    raise no_overload("size", v)


# ---- conversions ---------------------------------------------------------

_INT_STRING = re.compile(r"[+-]?\d+")


def to_int(v: Any) -> int:
    c = v.__class__
    if c is int:
        return v  # type: ignore[no-any-return]
    if c is UInt:
        if v > INT_MAX:
            raise CELEvalError(f"int() range error: {int(v)}u does not fit in int64")
        return int(v)
    if c is float:
        if not (-(2.0**63) < v < 2.0**63):
            raise CELEvalError(f"int() range error: {v!r} does not fit in int64")
        return int(v)
    if c is str:
        if not _INT_STRING.fullmatch(v):
            raise CELEvalError(f"int() type conversion error: {v!r} is not an integer")
        return _int(int(v), "int")
    if c is datetime:
        return int((v - EPOCH) // timedelta(seconds=1))
    raise no_overload("int", v)


def to_uint(v: Any) -> UInt:
    c = v.__class__
    if c is UInt:
        return v  # type: ignore[no-any-return]
    if c is int:
        if v < 0:
            raise CELEvalError(f"uint() range error: {v} is negative")
        return UInt(v)
    if c is float:
        if not (-1.0 < v < 2.0**64):
            raise CELEvalError(f"uint() range error: {v!r} does not fit in uint64")
        return UInt(int(v))
    if c is str:
        if not _INT_STRING.fullmatch(v) or v.startswith("-"):
            raise CELEvalError(f"uint() type conversion error: {v!r} is not an unsigned integer")
        return _uint(int(v), "uint")
    raise no_overload("uint", v)


def to_double(v: Any) -> float:
    c = v.__class__
    if c is float:
        return v  # type: ignore[no-any-return]
    if c is int or c is UInt:
        return float(v)
    if c is str:
        try:
            return float(v)
        except ValueError:
            raise CELEvalError(f"double() type conversion error: {v!r} is not a number") from None
    raise no_overload("double", v)


def format_double(v: float) -> str:
    """Format like Go's ``%g`` (what cel-go's string(double) uses)."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if v == 0:
        return "-0" if math.copysign(1.0, v) < 0 else "0"
    sign, digits, exponent = Decimal(repr(v)).normalize().as_tuple()
    ds = "".join(map(str, digits))
    assert isinstance(exponent, int)
    exp = len(ds) + exponent - 1
    neg = "-" if sign else ""
    if exp < -4 or exp >= 6:  # Go's %g switches to exponent form here for shortest output
        mant = ds[0] + ("." + ds[1:] if len(ds) > 1 else "")
        return f"{neg}{mant}e{'+' if exp >= 0 else '-'}{abs(exp):02d}"
    point = exp + 1
    if point <= 0:
        return f"{neg}0.{'0' * -point}{ds}"
    if point >= len(ds):
        return f"{neg}{ds}{'0' * (point - len(ds))}"
    return f"{neg}{ds[:point]}.{ds[point:]}"


def to_string(v: Any) -> str:
    c = v.__class__
    if c is str:
        return v  # type: ignore[no-any-return]
    if c is bool:
        return "true" if v else "false"
    if c is int or c is UInt:
        return str(int(v))
    if c is float:
        return format_double(v)
    if c is bytes:
        try:
            return v.decode("utf-8")  # type: ignore[no-any-return]
        except UnicodeDecodeError:
            raise CELEvalError("string() conversion error: bytes are not valid UTF-8") from None
    if c is datetime:
        return format_timestamp(v)
    if c is timedelta:
        return format_duration(v)
    if c is CelType:
        return v.name  # type: ignore[no-any-return]
    raise no_overload("string", v)


def to_bytes(v: Any) -> bytes:
    if v.__class__ is bytes:
        return v
    if v.__class__ is str:
        return v.encode("utf-8")
    raise no_overload("bytes", v)


_BOOL_STRINGS = {"1": True, "t": True, "true": True, "TRUE": True, "True": True,
                 "0": False, "f": False, "false": False, "FALSE": False, "False": False}


def to_bool(v: Any) -> bool:
    if v.__class__ is bool:
        return v
    if v.__class__ is str:
        try:
            return _BOOL_STRINGS[v]
        except KeyError:
            raise CELEvalError(f"bool() type conversion error: {v!r} is not a boolean") from None
    raise no_overload("bool", v)


def to_type(v: Any) -> CelType:
    return cel_type(v)


def dyn(v: Any) -> Any:
    return v


# name -> callable taking positional evaluated arguments (receiver first for methods)
FUNCTIONS: dict[str, Callable[..., Any]] = {
    "size": size,
    "contains": contains,
    "startsWith": starts_with,
    "endsWith": ends_with,
    "matches": matches,
    "int": to_int,
    "uint": to_uint,
    "double": to_double,
    "string": to_string,
    "bytes": to_bytes,
    "bool": to_bool,
    "dyn": dyn,
    "type": to_type,
    "timestamp": to_timestamp,
    "duration": to_duration,
    "_+_": add,
    "_-_": sub,
    "_*_": mul,
    "_/_": div,
    "_%_": mod,
    "-_": neg,
    "!_": logical_not,
    "@in": contains_in,
    "_[_]": index,
    **TIME_METHODS,
    **STRING_FUNCTIONS,
    **PII_FUNCTIONS,
}

# functions callable as methods (receiver.f(args)) in addition to global form
METHODS = frozenset({"size", "contains", "startsWith", "endsWith", "matches", *TIME_METHODS, *STRING_FUNCTIONS})
GLOBAL_ONLY = frozenset({"int", "uint", "double", "string", "bytes", "bool", "dyn", "type", "timestamp", "duration"})

# namespaced global functions (``pii.find``): the compiled path calls them directly
NAMESPACED = frozenset(PII_FUNCTIONS)

__all__ = ["FUNCTIONS", "NAMESPACED", "METHODS", "NUMERIC", "TYPE_NAMES"]
