"""CEL standard functions and operators over Python values (exact semantics).

Each function takes already-evaluated arguments and returns a CEL value or
raises CELEvalError. Shared by the exact evaluator and, for the arithmetic
helpers, by the generated code.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Callable

from activelabel.cel._regex import matches
from activelabel.cel._strings_ext import STRING_FUNCTIONS
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
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


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
        if ca is float or ca is str or ca is bytes:
            return a + b
        if ca is UInt:
            return _uint(a + b, "_+_")
        if ca is list:
            return a + b
        if ca is timedelta:
            return _duration_range(a + b)
    if ca is tuple or cb is tuple:
        if (ca is list or ca is tuple) and (cb is list or cb is tuple):
            return list(a) + list(b)
    if ca is datetime and cb is timedelta:
        return _ts_add(a, b)
    if ca is timedelta and cb is datetime:
        return _ts_add(b, a)
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
            return _duration_range(a - b)
        if ca is datetime:
            return _duration_range(a - b)
    if ca is datetime and cb is timedelta:
        return _ts_add(a, -b)
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
        return _duration_range(-a)
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
        for x in container:
            if cel_equal(elem, x):
                return True
        return False
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
        return v
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
        return int((v - _EPOCH) // timedelta(seconds=1))
    raise no_overload("int", v)


def to_uint(v: Any) -> UInt:
    c = v.__class__
    if c is UInt:
        return v
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
        return v
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
        return v
    if c is bool:
        return "true" if v else "false"
    if c is int or c is UInt:
        return str(int(v))
    if c is float:
        return format_double(v)
    if c is bytes:
        try:
            return v.decode("utf-8")
        except UnicodeDecodeError:
            raise CELEvalError("string() conversion error: bytes are not valid UTF-8") from None
    if c is datetime:
        return format_timestamp(v)
    if c is timedelta:
        return format_duration(v)
    if c is CelType:
        return v.name
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


# ---- timestamps and durations -------------------------------------------

_DURATION_MAX = timedelta(seconds=315576000000)
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|m|s|ms|us|µs|ns)")
_UNIT_SECONDS = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def _duration_range(d: timedelta) -> timedelta:
    if -_DURATION_MAX <= d <= _DURATION_MAX:
        return d
    raise CELEvalError("duration out of range")


def _ts_add(ts: datetime, d: timedelta) -> datetime:
    try:
        return ts + d
    except OverflowError:
        raise CELEvalError("timestamp out of range") from None


def to_duration(v: Any) -> timedelta:
    if v.__class__ is timedelta:
        return v
    if v.__class__ is not str:
        raise no_overload("duration", v)
    text = v
    sign = 1
    if text[:1] in "+-":
        sign = -1 if text[0] == "-" else 1
        text = text[1:]
    if text == "0":
        return timedelta(0)
    pos, total = 0, Decimal(0)
    units = {k: Decimal(str(s)) for k, s in _UNIT_SECONDS.items()}
    while pos < len(text):
        m = _DURATION_PART.match(text, pos)
        if m is None:
            raise CELEvalError(f"duration() conversion error: {v!r} is not a duration like '1h30m' or '1.5s'")
        total += Decimal(m.group(1)) * units[m.group(2)]
        pos = m.end()
    if not text:
        raise CELEvalError(f"duration() conversion error: {v!r} is empty")
    micros = int(total * 1_000_000) * sign
    return _duration_range(timedelta(microseconds=micros))


def to_timestamp(v: Any) -> datetime:
    c = v.__class__
    if c is datetime:
        return v
    if c is int:
        try:
            return _EPOCH + timedelta(seconds=v)
        except OverflowError:
            raise CELEvalError(f"timestamp() range error: {v}") from None
    if c is str:
        try:
            ts = datetime.fromisoformat(v.replace("z", "Z").replace("Z", "+00:00"))
        except ValueError:
            raise CELEvalError(f"timestamp() conversion error: {v!r} is not RFC 3339") from None
        if ts.tzinfo is None:
            raise CELEvalError(f"timestamp() conversion error: {v!r} has no time zone offset")
        return ts.astimezone(timezone.utc)
    raise no_overload("timestamp", v)


def format_timestamp(ts: datetime) -> str:
    ts = ts.astimezone(timezone.utc)
    text = ts.strftime("%Y-%m-%dT%H:%M:%S")
    if ts.microsecond:
        text += f".{ts.microsecond:06d}".rstrip("0")
    return text + "Z"


def format_duration(d: timedelta) -> str:
    micros = (d.days * 86400 + d.seconds) * 1_000_000 + d.microseconds
    sign = "-" if micros < 0 else ""
    micros = abs(micros)
    secs, frac = divmod(micros, 1_000_000)
    return f"{sign}{secs}" + (f".{frac:06d}".rstrip("0") if frac else "") + "s"


def _tz(ts: datetime, tz: Any = None) -> datetime:
    if tz is None:
        return ts.astimezone(timezone.utc)
    if tz.__class__ is not str:
        raise no_overload("timezone", tz)
    m = re.fullmatch(r"([+-])?(\d{1,2}):(\d{2})", tz)
    if m:
        off = timedelta(hours=int(m.group(2)), minutes=int(m.group(3)))
        return ts.astimezone(timezone(-off if m.group(1) == "-" else off))
    try:
        from zoneinfo import ZoneInfo

        return ts.astimezone(ZoneInfo(tz))
    except Exception:
        raise CELEvalError(f"unknown time zone {tz!r}") from None


def _ts_accessor(name: str, get: Callable[[datetime], int]) -> Callable[..., int]:
    def f(ts: Any, tz: Any = None) -> int:
        if ts.__class__ is not datetime:
            raise no_overload(name, ts)
        return get(_tz(ts, tz))

    return f


def _dur_accessor(name: str, get: Callable[[float], int]) -> Callable[[Any], int]:
    def f(d: Any) -> int:
        if d.__class__ is not timedelta:
            raise no_overload(name, d)
        return get(d.total_seconds())

    return f


def _trunc(x: float) -> int:
    return int(x)


TIME_METHODS: dict[str, Callable[..., Any]] = {
    "getFullYear": _ts_accessor("getFullYear", lambda t: t.year),
    "getMonth": _ts_accessor("getMonth", lambda t: t.month - 1),
    "getDate": _ts_accessor("getDate", lambda t: t.day),
    "getDayOfMonth": _ts_accessor("getDayOfMonth", lambda t: t.day - 1),
    "getDayOfWeek": _ts_accessor("getDayOfWeek", lambda t: (t.weekday() + 1) % 7),
    "getDayOfYear": _ts_accessor("getDayOfYear", lambda t: t.timetuple().tm_yday - 1),
}
_TS_HMS = {
    "getHours": (lambda t: t.hour, lambda s: _trunc(s / 3600)),
    "getMinutes": (lambda t: t.minute, lambda s: _trunc(s / 60)),
    "getSeconds": (lambda t: t.second, lambda s: _trunc(s)),
    "getMilliseconds": (lambda t: t.microsecond // 1000, lambda s: _trunc(s * 1000) % 1000),
}


def _hms(name: str, ts_get: Callable[[datetime], int], dur_get: Callable[[float], int]) -> Callable[..., int]:
    tsf = _ts_accessor(name, ts_get)
    durf = _dur_accessor(name, dur_get)

    def f(v: Any, tz: Any = None) -> int:
        if v.__class__ is timedelta and tz is None:
            return durf(v)
        return tsf(v, tz)

    return f


for _name, (_t, _d) in _TS_HMS.items():
    TIME_METHODS[_name] = _hms(_name, _t, _d)


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
}

# functions callable as methods (receiver.f(args)) in addition to global form
METHODS = frozenset({"size", "contains", "startsWith", "endsWith", "matches", *TIME_METHODS, *STRING_FUNCTIONS})
GLOBAL_ONLY = frozenset({"int", "uint", "double", "string", "bytes", "bool", "dyn", "type", "timestamp", "duration"})

__all__ = ["FUNCTIONS", "METHODS", "TYPE_NAMES", "NUMERIC"]
