"""``matches()``: RE2 semantics, compiled once, fast for the common literal shapes.

RE2 is used because it runs in linear time whatever the pattern (policies are
user input). Its Python wrapper is slow per call (several microseconds), so
patterns that are plain literals, optionally anchored and optionally a group of
literal alternatives (``^/api/``, ``\\.json$``, ``^(GET|HEAD)$``), are answered
with ``str`` methods, whose result is identical to RE2's for those shapes. Every
pattern is still compiled by RE2 first, so invalid patterns fail the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

import re2

from activelabel.cel._values import no_overload
from activelabel.errors import CELEvalError

Matcher = Callable[[Any], bool]

_MEMO_SIZE = 4096  # answers remembered per pattern
_MEMO_MAX_LEN = 512  # longer strings are not remembered

_META = set("\\.^$|?*+()[]{}")
_LITERAL_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "f": "\f", "v": "\v", "a": "\a"}


def _literal(text: str) -> str | None:
    """The literal string ``text`` matches, or None if it has any regex operator."""
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            if i + 1 >= len(text):
                return None
            nxt = text[i + 1]
            if nxt in _LITERAL_ESCAPES:
                out.append(_LITERAL_ESCAPES[nxt])
            elif nxt.isascii() and not nxt.isalnum():
                out.append(nxt)  # escaped punctuation is literal in RE2
            else:
                return None  # \d, \b, \pL, \Q ...
            i += 2
            continue
        if ch in _META:
            return None
        out.append(ch)
        i += 1
    return "".join(out)


def _literal_shape(pattern: str) -> tuple[bool, bool, list[str]] | None:
    """(anchored_start, anchored_end, alternatives) for literal-only patterns, else None."""
    p = pattern
    start = p.startswith("^")
    if start:
        p = p[1:]
    end = p.endswith("$") and not p.endswith("\\$")  # "\\$" is a literal dollar
    if end:
        p = p[:-1]
    for opener in ("(?:", "("):
        if p.startswith(opener) and p.endswith(")") and not p.endswith("\\)"):
            inner = p[len(opener) : -1]
            if "(" in inner or ")" in inner:
                return None
            alts = [_literal(a) for a in inner.split("|")]
            if any(a is None for a in alts):
                return None
            return start, end, [a for a in alts if a is not None]
    if "|" in p:
        if start or end:
            return None  # ^a|b$ means (^a)|(b$): leave it to RE2
        alts = [_literal(a) for a in p.split("|")]
        if any(a is None for a in alts):
            return None
        return False, False, [a for a in alts if a is not None]
    lit = _literal(p)
    return None if lit is None else (start, end, [lit])


def _re2_search(rx: Any) -> Matcher:
    regexp = getattr(rx, "_regexp", None)
    anchor = getattr(getattr(re2, "_Anchor", None), "UNANCHORED", None)
    if regexp is None or anchor is None:  # pragma: no cover - other re2 wrapper versions
        search = rx.search

        def slow(s: Any) -> bool:
            if s.__class__ is not str:
                raise no_overload("matches", s)
            return search(s) is not None

        return slow
    match = regexp.Match
    # A call into RE2 costs microseconds, while event fields (paths, user agents)
    # repeat a lot: remember recent answers for short strings.
    seen: dict[str, bool] = {}

    def fast(s: Any) -> bool:
        if s.__class__ is not str:
            raise no_overload("matches", s)
        hit = seen.get(s)
        if hit is not None:
            return hit
        b = s.encode("utf-8")
        result: bool = match(anchor, b, 0, len(b))[0][0] != -1
        if len(s) <= _MEMO_MAX_LEN:
            if len(seen) >= _MEMO_SIZE:
                seen.clear()
            seen[s] = result
        return result

    return fast


def _literal_matcher(start: bool, end: bool, alts: list[str]) -> Matcher:
    def guard(s: Any) -> NoReturn:
        raise no_overload("matches", s)

    if start and end:
        if len(alts) == 1:
            (lit,) = alts
            return lambda s: s == lit if s.__class__ is str else guard(s)
        options = frozenset(alts)
        return lambda s: s in options if s.__class__ is str else guard(s)
    if start:
        prefixes = tuple(alts)
        return lambda s: s.startswith(prefixes) if s.__class__ is str else guard(s)
    if end:
        suffixes = tuple(alts)
        return lambda s: s.endswith(suffixes) if s.__class__ is str else guard(s)
    if len(alts) == 1:
        (lit,) = alts
        return lambda s: lit in s if s.__class__ is str else guard(s)
    return lambda s: any(a in s for a in alts) if s.__class__ is str else guard(s)


_cache: dict[str, Matcher] = {}
_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # invalid patterns are reported as CELEvalError, not on stderr
_OPTIONS.never_capture = True  # matches() needs no groups; RE2 runs faster without them


def matcher(pattern: str) -> Matcher:
    """A function ``s -> bool``: does RE2 ``pattern`` match somewhere in string ``s``.

    Cached per pattern. CELEvalError if the pattern is not valid RE2; the
    returned function raises CELEvalError (no such overload) for non-strings.
    """
    m = _cache.get(pattern)
    if m is not None:
        return m
    try:
        rx = re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise CELEvalError(f"invalid regular expression {pattern!r}: {reason} (RE2 syntax)") from exc
    shape = _literal_shape(pattern)
    m = _literal_matcher(*shape) if shape is not None else _re2_search(rx)
    if len(_cache) >= 1024:
        _cache.clear()
    _cache[pattern] = m
    return m


def matches(s: Any, pattern: Any) -> bool:
    """CEL ``s.matches(pattern)`` / ``matches(s, pattern)``."""
    if pattern.__class__ is not str or s.__class__ is not str:
        raise no_overload("matches", s, pattern)
    return matcher(pattern)(s)
