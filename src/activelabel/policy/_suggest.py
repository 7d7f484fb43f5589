"""Spelling suggestions for policy errors ("did you mean `priority`?")."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def closest(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate closest to ``word``, or None when nothing is close enough."""
    pool = [c for c in candidates if isinstance(c, str)]
    if not isinstance(word, str) or not pool:
        return None
    matches = difflib.get_close_matches(word, pool, n=1, cutoff=0.6)
    if matches:
        return matches[0]
    # Case slips ("Priority") and short words fall below difflib's cutoff; catch them here.
    lowered = {c.lower(): c for c in pool}
    return lowered.get(word.lower())


def did_you_mean(word: str, candidates: Iterable[str]) -> str | None:
    """A "did you mean `x`?" hint for ``word``, or None when no candidate is close.

    >>> did_you_mean("priorty", ["priority", "tenant_tier"])
    'did you mean `priority`?'
    """
    best = closest(word, candidates)
    return f"did you mean `{best}`?" if best is not None else None
