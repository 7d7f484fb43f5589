"""CEL timestamps (``datetime``, timezone-aware) and durations (``timedelta``).

Conversions from strings (RFC 3339, ``"1h30m"``), range checks, formatting,
and the ``getFullYear()`` ... ``getMilliseconds()`` accessors (with an optional
time zone: a name like ``"Europe/Paris"`` or an offset like ``"+02:00"``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from activelabel.cel._values import no_overload
from activelabel.errors import CELEvalError

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_DURATION_MAX = timedelta(seconds=315576000000)
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|m|s|ms|us|µs|ns)")
_UNIT_SECONDS = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def duration_range(d: timedelta) -> timedelta:
    if -_DURATION_MAX <= d <= _DURATION_MAX:
        return d
    raise CELEvalError("duration out of range")


def ts_add(ts: datetime, d: timedelta) -> datetime:
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
    return duration_range(timedelta(microseconds=micros))


#: The last string ``timestamp()`` parsed and its result, as one tuple (swapped whole, so a
#: reader in another thread sees a matching pair). Rules of one policy often convert the same
#: field (``timestamp(event.start_time) > now`` and ``now - timestamp(event.start_time) > ...``):
#: the second conversion of the very same string object is then a lookup. Holding the string
#: keeps it alive, so no other string can have its identity.
_last_parsed: tuple[Any, Any] = (None, None)


def to_timestamp(v: Any) -> datetime:
    global _last_parsed
    c = v.__class__
    if c is str:
        last = _last_parsed
        if v is last[0]:
            return last[1]  # type: ignore[no-any-return]
        ts = _parse_timestamp(v)
        _last_parsed = (v, ts)
        return ts
    if c is datetime:
        return v  # type: ignore[no-any-return]
    if c is int:
        try:
            return EPOCH + timedelta(seconds=v)
        except OverflowError:
            raise CELEvalError(f"timestamp() range error: {v}") from None
    raise no_overload("timestamp", v)


def _parse_timestamp(v: str) -> datetime:
    try:
        ts = datetime.fromisoformat(v.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        raise CELEvalError(f"timestamp() conversion error: {v!r} is not RFC 3339") from None
    if ts.tzinfo is None:
        raise CELEvalError(f"timestamp() conversion error: {v!r} has no time zone offset")
    return ts.astimezone(UTC)


def format_timestamp(ts: datetime) -> str:
    ts = ts.astimezone(UTC)
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
        return ts.astimezone(UTC)
    if tz.__class__ is not str:
        raise no_overload("timezone", tz)
    m = re.fullmatch(r"([+-])?(\d{1,2}):(\d{2})", tz)
    if m:
        off = timedelta(hours=int(m.group(2)), minutes=int(m.group(3)))
        return ts.astimezone(timezone(-off if m.group(1) == "-" else off))
    try:
        from zoneinfo import ZoneInfo

        return ts.astimezone(ZoneInfo(tz))
    except (ValueError, OSError, KeyError):  # ZoneInfoNotFoundError is a KeyError; bad names are ValueError
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
    "getMilliseconds": (lambda t: t.microsecond // 1000, lambda s: int(math.fmod(_trunc(s * 1000), 1000))),
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
