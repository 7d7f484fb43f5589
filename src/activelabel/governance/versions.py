"""A policy version as people type it: whole, as a unique prefix, with or without ``sha256:``.

Versions are ``sha256:`` and 64 hex digits; people copy the first few digits from
`policy history` or a status line. Every command that takes a version (`policy show`,
`policy rollback`, `audit search --version`) resolves it the same way here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_SCHEME = "sha256:"
_HEX = re.compile(r"[0-9a-fA-F]+")
_SHOWN = 8  # candidates named in an ambiguity message


def normalized(given: str) -> str:
    """``given`` with the ``sha256:`` scheme a bare hex prefix leaves out (``9f77`` -> ``sha256:9f77``)."""
    given = given.strip()
    return _SCHEME + given.lower() if _HEX.fullmatch(given) else given


def is_whole(given: str) -> bool:
    """Whether ``given`` is a whole version (no prefix resolution needed)."""
    text = normalized(given)
    return text.startswith(_SCHEME) and len(text) == len(_SCHEME) + 64


def matches(given: str, known: Iterable[str]) -> list[str]:
    """The distinct ``known`` versions ``given`` is a prefix of (scheme optional), sorted."""
    prefix = normalized(given)
    if not prefix:
        return []
    return sorted({v for v in known if v and v.startswith(prefix)})


def ambiguous(given: str, found: list[str]) -> str:
    """The refusal of a prefix that several versions start with, naming them."""
    named = ", ".join(found[:_SHOWN]) + (f" and {len(found) - _SHOWN} more" if len(found) > _SHOWN else "")
    return f"version prefix {given!r} is ambiguous: {len(found)} versions start with it ({named}); give more of it"
