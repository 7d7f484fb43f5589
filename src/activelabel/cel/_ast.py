"""CEL abstract syntax tree.

Every node carries ``offset``: the 0-based character offset of the token that
starts it (for operators, the operator token, as cel-go does) within the
expression text. :class:`Ast` turns offsets into 1-based line and column.

Operators are calls with the cel-go operator names (``_+_``, ``_==_``,
``_&&_``, ``!_``, ``-_``, ``_?_:_``, ``_[_]``, ``@in``) so the evaluator and the
emitter treat them uniformly. Macros stay as :class:`Macro` nodes (rather than
the generic comprehension the spec expands them to) because both back ends
implement each macro directly, which is simpler and faster.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple


class Expr:
    """Base of all nodes."""

    __slots__ = ("offset",)
    offset: int

    def children(self) -> list[Expr]:
        return []


class Literal(Expr):
    """A constant: int, UInt, float, str, bytes, bool or None."""

    __slots__ = ("value",)

    def __init__(self, value: Any, offset: int) -> None:
        self.value = value
        self.offset = offset

    def __repr__(self) -> str:
        return f"Literal({self.value!r})"


class Ident(Expr):
    """A free identifier or an iteration variable (``name`` may start with '.')."""

    __slots__ = ("name",)

    def __init__(self, name: str, offset: int) -> None:
        self.name = name
        self.offset = offset

    def __repr__(self) -> str:
        return f"Ident({self.name})"


class Select(Expr):
    """``operand.field``; ``test_only`` marks the ``has(operand.field)`` macro."""

    __slots__ = ("field", "operand", "test_only")

    def __init__(self, operand: Expr, field: str, offset: int, test_only: bool = False) -> None:
        self.operand = operand
        self.field = field
        self.offset = offset
        self.test_only = test_only

    def children(self) -> list[Expr]:
        return [self.operand]

    def __repr__(self) -> str:
        return f"{'Has' if self.test_only else 'Select'}({self.operand!r}.{self.field})"


class Call(Expr):
    """A function, method (``target`` set) or operator call."""

    __slots__ = ("args", "function", "target")

    def __init__(self, function: str, args: list[Expr], offset: int, target: Expr | None = None) -> None:
        self.function = function
        self.args = args
        self.offset = offset
        self.target = target

    def children(self) -> list[Expr]:
        return ([self.target] if self.target is not None else []) + list(self.args)

    def __repr__(self) -> str:
        t = f"{self.target!r}." if self.target is not None else ""
        return f"Call({t}{self.function}{tuple(self.args)!r})"


class CreateList(Expr):
    """``[a, b, ...]``."""

    __slots__ = ("elements",)

    def __init__(self, elements: list[Expr], offset: int) -> None:
        self.elements = elements
        self.offset = offset

    def children(self) -> list[Expr]:
        return list(self.elements)

    def __repr__(self) -> str:
        return f"List({self.elements!r})"


class CreateMap(Expr):
    """``{k: v, ...}``."""

    __slots__ = ("entries",)

    def __init__(self, entries: list[tuple[Expr, Expr]], offset: int) -> None:
        self.entries = entries
        self.offset = offset

    def children(self) -> list[Expr]:
        return [e for kv in self.entries for e in kv]

    def __repr__(self) -> str:
        return f"Map({self.entries!r})"


class CreateStruct(Expr):
    """``Message{field: value}``: parsed, but protobuf messages are not supported at runtime."""

    __slots__ = ("fields", "type_name")

    def __init__(self, type_name: str, fields: list[tuple[str, Expr]], offset: int) -> None:
        self.type_name = type_name
        self.fields = fields
        self.offset = offset

    def children(self) -> list[Expr]:
        return [v for _, v in self.fields]


class Macro(Expr):
    """A comprehension macro: ``target.kind(var, args...)``.

    ``kind`` is one of all, exists, exists_one, map (args = [transform] or
    [filter, transform]) and filter.
    """

    __slots__ = ("args", "kind", "target", "var")

    def __init__(self, kind: str, target: Expr, var: str, args: list[Expr], offset: int) -> None:
        self.kind = kind
        self.target = target
        self.var = var
        self.args = args
        self.offset = offset

    def children(self) -> list[Expr]:
        return [self.target, *self.args]

    def __repr__(self) -> str:
        return f"Macro({self.target!r}.{self.kind}({self.var}, {self.args!r}))"


class Reference(NamedTuple):
    """A free identifier or select chain rooted at one, with where it starts."""

    path: tuple[str, ...]
    line: int
    column: int


@dataclass
class Ast:
    """A parsed expression: the root node plus the text, for positions."""

    root: Expr
    text: str
    _line_starts: list[int] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        starts = [0]
        for i, ch in enumerate(self.text):
            if ch == "\n":
                starts.append(i + 1)
        self._line_starts = starts

    def location(self, node_or_offset: Expr | int) -> tuple[int, int]:
        """1-based (line, column) of a node or a character offset."""
        off = node_or_offset if isinstance(node_or_offset, int) else node_or_offset.offset
        line = bisect.bisect_right(self._line_starts, off)
        return line, off - self._line_starts[line - 1] + 1


def walk(node: Expr) -> list[Expr]:
    """All nodes of a tree, parents before children (iterative: trees may be deep)."""
    out: list[Expr] = []
    stack = [node]
    while stack:
        n = stack.pop()
        out.append(n)
        stack.extend(reversed(n.children()))
    return out


def iter_nodes(node: Expr) -> Iterator[Expr]:
    """`walk`, lazily: a search that stops at its first hit does not visit (or build a list of) the rest."""
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        stack.extend(reversed(n.children()))


def select_path(node: Expr) -> tuple[Ident, tuple[str, ...]] | None:
    """If ``node`` is ``ident.f1.f2`` (or ``ident["f1"]`` with constant string keys), return (ident, path)."""
    fields: list[str] = []
    n = node
    while True:
        if isinstance(n, Select) and not n.test_only:
            fields.append(n.field)
            n = n.operand
        elif (
            isinstance(n, Call)
            and n.function == "_[_]"
            and isinstance(n.args[1], Literal)
            and isinstance(n.args[1].value, str)
        ):
            fields.append(n.args[1].value)
            n = n.args[0]
        elif isinstance(n, Ident):
            return n, (n.name, *reversed(fields))
        else:
            return None


def references(ast: Ast) -> list[Reference]:
    """Every maximal select chain rooted at a free identifier, with its position.

    ``labels.priorty == "x"`` gives ``[Reference(("labels", "priorty"), 1, 1)]``.
    Macro iteration variables are not free inside their macro. ``has(a.b)``
    reports ``("a", "b")``; a constant string index ``a["b"]`` counts like ``a.b``.
    """
    out: list[Reference] = []

    def visit(node: Expr, bound: frozenset[str]) -> None:
        stack: list[tuple[Expr, frozenset[str]]] = [(node, bound)]
        while stack:
            n, scope = stack.pop()
            if isinstance(n, Select) and n.test_only:
                got = select_path(n.operand)
                if got is not None and got[0].name not in scope:
                    ident, path = got
                    line, col = ast.location(ident)
                    out.append(Reference((*path, n.field), line, col))
                    continue
                stack.append((n.operand, scope))
                continue
            got = select_path(n)
            if got is not None:
                ident, path = got
                if ident.name not in scope:
                    line, col = ast.location(ident)
                    out.append(Reference(path, line, col))
                continue
            if isinstance(n, Macro):
                inner = scope | {n.var}
                for a in reversed(n.args):
                    stack.append((a, inner))
                stack.append((n.target, scope))
                continue
            if isinstance(n, Call) and n.function == "_[_]":
                # not a constant-string index (select_path refused it): visit both sides
                stack.append((n.args[1], scope))
                stack.append((n.args[0], scope))
                continue
            for c in reversed(n.children()):
                stack.append((c, scope))

    visit(ast.root, frozenset())
    out.sort(key=lambda r: (r.line, r.column))
    return out
