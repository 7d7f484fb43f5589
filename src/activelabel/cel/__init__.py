"""The Common Expression Language (CEL) for activelabel rules.

    >>> from activelabel import cel
    >>> cel.compile("event.status >= 500").evaluate({"event": {"status": 503}})
    True

``parse`` gives an :class:`Ast` with positions; ``references`` lists the
free-identifier select chains (for policy validation); ``compile`` gives a
:class:`Program` evaluated with exact CEL semantics. The Python code emitter
used by the engine lives in :mod:`activelabel.cel.emit`.
"""

from activelabel.cel._ast import Ast, Expr, Reference, references
from activelabel.cel._eval import Program, compile
from activelabel.cel._parser import MAX_DEPTH, parse
from activelabel.cel._values import CelType, UInt

__all__ = [
    "MAX_DEPTH",
    "Ast",
    "CelType",
    "Expr",
    "Program",
    "Reference",
    "UInt",
    "compile",
    "parse",
    "references",
]
