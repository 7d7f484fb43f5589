"""The CEL syntax tree, for code that walks a parsed expression (the engine's code generators).

These are the node types :func:`activelabel.cel.parse` builds, and two walkers:
``walk`` (every node, depth first) and ``select_path`` (``a.b.c`` as its root
identifier and field names). The tree is inert data: walk it, don't mutate it.
"""

from activelabel.cel._ast import (
    Ast,
    Call,
    CreateList,
    CreateMap,
    CreateStruct,
    Expr,
    Ident,
    Literal,
    Macro,
    Reference,
    Select,
    references,
    select_path,
    walk,
)

__all__ = [
    "Ast",
    "Call",
    "CreateList",
    "CreateMap",
    "CreateStruct",
    "Expr",
    "Ident",
    "Literal",
    "Macro",
    "Reference",
    "Select",
    "references",
    "select_path",
    "walk",
]
