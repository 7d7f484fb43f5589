"""The string extension functions Kubernetes and cel-go users expect (cel-go ``ext.Strings``).

Not part of the CEL standard definitions, but what platform teams write in
admission policies: ``lowerAscii``, ``upperAscii``, ``trim``, ``replace``,
``split``, ``join``, ``indexOf``, ``lastIndexOf``, ``substring``, ``charAt``.
Indexes count code points, as ``size()`` does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from activelabel.cel._budget import check_size
from activelabel.cel._values import no_overload
from activelabel.errors import CELEvalError

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_ASCII_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _str(fn: str, *vals: Any) -> None:
    for v in vals:
        if v.__class__ is not str:
            raise no_overload(fn, *vals)


def _int(fn: str, *vals: Any) -> None:
    for v in vals:
        if v.__class__ is not int:
            raise no_overload(fn, *vals)


def lower_ascii(s: Any) -> str:
    _str("lowerAscii", s)
    return str(s.translate(_ASCII_LOWER))


def upper_ascii(s: Any) -> str:
    _str("upperAscii", s)
    return str(s.translate(_ASCII_UPPER))


def trim(s: Any) -> str:
    _str("trim", s)
    return str(s.strip())


def replace(s: Any, old: Any, new: Any, n: Any = -1) -> str:
    _str("replace", s, old, new)
    _int("replace", n)
    if len(new) > len(old):  # size the result before building it: nested replaces grow exponentially
        count = s.count(old) if old else len(s) + 1
        if n >= 0:
            count = min(count, n)
        check_size(len(s) + count * (len(new) - len(old)), "replace()")
    return str(s.replace(old, new, n if n >= 0 else -1))


def split(s: Any, sep: Any, n: Any = -1) -> list[str]:
    _str("split", s, sep)
    _int("split", n)
    if n == 0:
        return []
    if sep == "":
        chars = list(s)
        if 0 < n < len(chars):
            return [*chars[: n - 1], "".join(chars[n - 1 :])]
        return chars
    return s.split(sep, n - 1 if n > 0 else -1)  # type: ignore[no-any-return]


def join(items: Any, sep: Any = "") -> str:
    if items.__class__ is not list and items.__class__ is not tuple:
        raise no_overload("join", items)
    _str("join", sep, *items)
    check_size(sum(map(len, items)) + len(sep) * max(0, len(items) - 1), "join()")
    return str(sep.join(items))


def _offset(fn: str, s: str, offset: Any) -> int:
    _int(fn, offset)
    if offset < 0 or offset > len(s):
        raise CELEvalError(f"{fn}(): index out of range: {offset}")
    return int(offset)


def index_of(s: Any, sub: Any, offset: Any = 0) -> int:
    _str("indexOf", s, sub)
    return int(s.find(sub, _offset("indexOf", s, offset)))


def last_index_of(s: Any, sub: Any, offset: Any = None) -> int:
    _str("lastIndexOf", s, sub)
    if offset is None:
        return int(s.rfind(sub))
    end = _offset("lastIndexOf", s, offset)
    return int(s.rfind(sub, 0, end + len(sub)))


def substring(s: Any, start: Any, end: Any = None) -> str:
    _str("substring", s)
    begin = _offset("substring", s, start)
    stop = len(s) if end is None else _offset("substring", s, end)
    if begin > stop:
        raise CELEvalError(f"substring(): start {begin} is after end {stop}")
    return str(s[begin:stop])


def char_at(s: Any, i: Any) -> str:
    _str("charAt", s)
    return str(s[_offset("charAt", s, i) : i + 1])


STRING_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "lowerAscii": lower_ascii,
    "upperAscii": upper_ascii,
    "trim": trim,
    "replace": replace,
    "split": split,
    "join": join,
    "indexOf": index_of,
    "lastIndexOf": last_index_of,
    "substring": substring,
    "charAt": char_at,
}
