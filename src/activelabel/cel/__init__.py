"""The Common Expression Language (CEL) for activelabel rules.

    >>> from activelabel import cel
    >>> cel.compile("event.status >= 500").evaluate({"event": {"status": 503}})
    True

``parse`` gives an :class:`Ast` with positions; ``references`` lists the
free-identifier select chains (for policy validation); ``compile`` gives a
:class:`Program` evaluated with exact CEL semantics. The Python code emitter
used by the engine lives in :mod:`activelabel.cel.emit`; the syntax tree's
node types in :mod:`activelabel.cel.ast`. ``regex_matcher`` is the compiled
``matches()`` (RE2) and ``function_names`` the functions and methods CEL knows,
for other packages that need them (the batch path, "did you mean" hints).

Nothing outside this package imports its private ``_modules``: what they need is here.
"""

from activelabel.cel import ast
from activelabel.cel._ast import Ast, Expr, Reference, references
from activelabel.cel._eval import Program, compile
from activelabel.cel._functions import FUNCTIONS as _FUNCTIONS
from activelabel.cel._functions import METHODS as _METHODS
from activelabel.cel._parser import MAX_DEPTH, parse
from activelabel.cel._regex import Matcher
from activelabel.cel._regex import matcher as regex_matcher
from activelabel.cel._values import CelType, UInt


def function_names() -> frozenset[str]:
    """The names of the functions and methods a rule may call (``size``, ``startsWith``, ``duration``...)."""
    return frozenset({n for n in _FUNCTIONS if n.isidentifier()} | set(_METHODS))


__all__ = [
    "MAX_DEPTH",
    "Ast",
    "CelType",
    "Expr",
    "Matcher",
    "Program",
    "Reference",
    "UInt",
    "ast",
    "compile",
    "function_names",
    "parse",
    "references",
    "regex_matcher",
]
