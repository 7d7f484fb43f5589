"""The policy's view of `activelabel.cel`: parse an expression, list its references.

Positions come back relative to the expression; ``_build`` maps them into the file.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from activelabel.errors import CELSyntaxError


class Ref(NamedTuple):
    """A free identifier path (``("labels", "tier")``) at a 1-based line/column of the expression."""

    path: tuple[str, ...]
    line: int
    column: int


def _api() -> tuple[Any, Any]:
    try:
        from activelabel import cel
    except ImportError:  # pragma: no cover - the package always exists in this tree
        return None, None
    return getattr(cel, "parse", None), getattr(cel, "references", None)


def parse(text: str) -> Any:
    """The AST of ``text`` (None when no CEL parser is available); raises CELSyntaxError."""
    parse_fn, _ = _api()
    if parse_fn is None:
        return None
    return parse_fn(text)


def references(ast: Any) -> list[Ref]:
    """The free-identifier paths of a parsed expression, in source order."""
    _, refs_fn = _api()
    if ast is None or refs_fn is None:
        return []
    out: list[Ref] = []
    for ref in refs_fn(ast):
        out.append(Ref(tuple(ref.path), int(ref.line), int(ref.column)))
    return out


__all__ = ["CELSyntaxError", "Ref", "parse", "references"]
