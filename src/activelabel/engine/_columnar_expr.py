"""CEL expressions compiled to columnar nodes: one ``Col`` per expression node, per batch.

``ExprCompiler.build(ast_node)`` turns a parsed expression into a tree of nodes,
built once per policy (equal subtrees are shared, so ``event.amount`` read by ten
rules is read once per batch); ``node.eval(batch)`` gives its value on every row as
a ``Col`` (engine/_columnar_extract.py): a kind per row (a value of some CEL type,
or an error, absent-field errors told apart from the rest as the exact path tells
them apart), with typed payloads. The nodes: ``_columnar_nodes`` (the batch, the
node, exact per-row evaluation), ``_columnar_ops`` (operators, reads, conversions),
``_columnar_rows`` (macros over every element, one-field expressions per distinct
value, whole expressions per row). What no node expresses raises ``Untranslatable``
and the caller evaluates the whole expression per row (``RowNode``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from activelabel.cel.ast import Call, CreateList, Expr, Ident, Literal, Macro, Select, select_path, walk
from activelabel.engine._columnar_extract import (
    K_ERRF,
    Col,
)
from activelabel.engine._columnar_nodes import (
    ConstNode,
    LabelNode,
    Node,
    NowNode,
    PathNode,
    Untranslatable,
    exact_rows,
)
from activelabel.engine._columnar_ops import (
    _ARITH_TEXT,
    _CMP_OPS,
    _CMP_TEXT,
    _EXACT_INT,
    _STRING_FNS,
    ArithNode,
    CompareNode,
    CondNode,
    EqualNode,
    ExactCallNode,
    HasNode,
    IndexNode,
    InListNode,
    LabelHasNode,
    LogicNode,
    NegNode,
    NotNode,
    SelectNode,
    SizeNode,
    StringFnNode,
    TimestampNode,
)
from activelabel.engine._columnar_rows import MacroNode


def _key(n: Expr) -> Any:
    """A structural key: equal keys are the same expression."""
    if isinstance(n, Literal):
        v = n.value
        return ("lit", v.__class__.__name__, repr(v))
    if isinstance(n, Ident):
        return ("id", n.name)
    if isinstance(n, Select):
        return ("sel", n.test_only, n.field, _key(n.operand))
    if isinstance(n, Call):
        return ("call", n.function, None if n.target is None else _key(n.target), tuple(_key(a) for a in n.args))
    if isinstance(n, CreateList):
        return ("list", tuple(_key(e) for e in n.elements))
    if isinstance(n, Macro):
        return ("macro", n.kind, n.var, _key(n.target), tuple(_key(a) for a in n.args))
    raise Untranslatable

def _is_ident(name: str) -> bool:
    return name.isidentifier() and name not in _RESERVED

_RESERVED = frozenset({"true", "false", "null", "in", "as", "break", "const", "continue", "else", "for", "function",
                       "if", "import", "let", "loop", "package", "namespace", "return", "var", "void", "while"})

class ExprCompiler:
    """Builds nodes for the expressions of one policy, sharing equal subtrees.

    ``roots``: the CEL names rules see (``event``, each enricher, ``labels``, ``now``);
    paths under ``event`` and the enrichers are read from objects (``paths`` collects them).
    """

    def __init__(self, object_roots: set[str], uses_now: bool) -> None:
        self.object_roots = object_roots
        self.uses_now = uses_now
        self.paths: dict[tuple[str, ...], None] = {}
        self._nodes: dict[Any, Node] = {}
        self._vars: set[str] = set()  # macro variables in scope: read whole, as a root

    def build(self, n: Expr) -> Node:
        key = _key(n)
        got = self._nodes.get(key)
        if got is None:
            got = self._build(n)
            got.deps = self.label_reads(n)
            self._nodes[key] = got
        return got

    def label_reads(self, n: Expr) -> frozenset[str]:
        """The labels expression ``n`` reads (``labels.x``, ``has(labels.x)``)."""
        out = set()
        for node in walk(n):
            if isinstance(node, Select) and node.test_only:
                base = self._path(node.operand)
                if base == ("labels",):
                    out.add(node.field)
                continue
            p = self._path(node)
            if p is not None and p[0] == "labels" and len(p) > 1:
                out.add(p[1])
        return frozenset(out)

    def _path(self, n: Expr) -> tuple[str, ...] | None:
        got = select_path(n)
        if got is None:
            return None
        root = got[1][0].lstrip(".")
        return (root, *got[1][1:])

    def _build(self, n: Expr) -> Node:
        if isinstance(n, Literal):
            return ConstNode(n.value)
        if isinstance(n, CreateList):
            if all(isinstance(e, Literal) for e in n.elements):
                return ConstNode([e.value for e in n.elements])  # type: ignore[attr-defined]
            raise Untranslatable
        if isinstance(n, Select) and n.test_only:
            base = self._path(n.operand)
            if base is None:
                raise Untranslatable
            if base[0] == "labels" and len(base) == 1:
                return LabelHasNode(n.field)
            if base[0] in self.object_roots:
                tested = (*base, n.field)
                self.paths[tested] = None
                return HasNode(tested)
            raise Untranslatable
        path = self._path(n)
        if path is not None:
            root = path[0]
            if root == "now" and len(path) == 1 and self.uses_now:
                return NowNode()
            if root == "labels" and len(path) >= 2:
                node: Node = LabelNode(path[1])
                for f in path[2:]:
                    if not _is_ident(f):
                        raise Untranslatable
                    node = ExactCallNode(f"a0.{f}", [node])
                return node
            if root in self.object_roots and (len(path) >= 2 or root in self._vars):
                self.paths[path] = None
                return PathNode(path)
            raise Untranslatable
        if isinstance(n, Select):
            if not _is_ident(n.field):
                raise Untranslatable
            return SelectNode(self.build(n.operand), n.field)
        if isinstance(n, Macro):
            return self._macro(n)
        if not isinstance(n, Call):
            raise Untranslatable
        return self._call(n)

    def _macro(self, n: Macro) -> Node:
        """An ``exists``/``all``/``exists_one`` whose body is an expression of its variable and the roots."""
        var = n.var
        if n.kind not in ("exists", "all", "exists_one") or var in self.object_roots or var in ("labels", "now"):
            raise Untranslatable
        target = self.build(n.target)
        outer_paths = self.paths
        self.paths = {}
        self.object_roots = self.object_roots | {var}
        self._vars.add(var)
        saved = self._nodes
        self._nodes = {}  # the body's nodes read the child batch: never shared with the parent's
        try:
            body = self.build(n.args[0])
        finally:
            self.object_roots = self.object_roots - {var}
            self._vars.discard(var)
            self._nodes = saved
            inner_paths, self.paths = self.paths, outer_paths
        var_paths = [p for p in inner_paths if p[0] == var]
        for p in inner_paths:
            if p[0] != var:
                self.paths[p] = None  # outer fields read in the body: the parent batch reads them
        return MacroNode(n.kind, target, var, body, [(var,), *var_paths])

    def _call(self, n: Call) -> Node:
        f = n.function
        args = n.args
        if n.target is None:
            if f in ("_&&_", "_||_") and len(args) == 2:
                return LogicNode(f == "_&&_", self.build(args[0]), self.build(args[1]))
            if f == "!_" and len(args) == 1:
                return NotNode(self.build(args[0]))
            if f == "_?_:_" and len(args) == 3:
                return CondNode(*(self.build(a) for a in args))
            if f in ("_==_", "_!=_") and len(args) == 2:
                return EqualNode(f == "_!=_", self.build(args[0]), self.build(args[1]))
            if f in _CMP_OPS and len(args) == 2:
                return CompareNode(f, self.build(args[0]), self.build(args[1]))
            if f in _ARITH_TEXT and len(args) == 2:
                return ArithNode(f, self.build(args[0]), self.build(args[1]))
            if f == "-_" and len(args) == 1:
                return NegNode(self.build(args[0]))
            if f == "@in" and len(args) == 2 and isinstance(args[1], CreateList) and all(
                    isinstance(e, Literal) and (e.value is None or e.value.__class__ in (bool, int, float, str))
                    for e in args[1].elements):
                items = [e.value for e in args[1].elements]  # type: ignore[attr-defined]
                if all(v.__class__ is not int or -_EXACT_INT < v < _EXACT_INT for v in items):
                    return InListNode(self.build(args[0]), items)
            if f == "matches" and len(args) == 2 and isinstance(args[1], Literal) and args[1].value.__class__ is str:
                return StringFnNode(f, self.build(args[0]), args[1].value, "matches(a0, a1)")
        elif f in _STRING_FNS and len(args) == 1 and isinstance(args[0], Literal) and args[0].value.__class__ is str:
            return StringFnNode(f, self.build(n.target), args[0].value, f"a0.{f}(a1)")
        text = _call_text(n)
        nodes = ([self.build(n.target)] if n.target is not None else []) + [self.build(a) for a in args]
        if not all(isinstance(a, ConstNode) for a in nodes):
            if text == "a0[a1]":
                return IndexNode(*nodes)
            if text in ("size(a0)", "a0.size()"):
                return SizeNode(nodes[0])
            if text == "timestamp(a0)":
                return TimestampNode(nodes[0])
        if all(isinstance(a, ConstNode) for a in nodes):
            # constant arguments (`duration("720h")`): evaluated once, here
            for a in nodes:
                if a.kind <= K_ERRF:  # type: ignore[attr-defined]
                    return ConstNode(None, a.kind)  # type: ignore[attr-defined]
            kind = np.zeros(1, dtype=np.int8)
            vals: list[Any] = [None]
            exact_rows(text, [Col.const(a.value, 1) for a in nodes], np.zeros(1, dtype=np.int64), kind, vals)  # type: ignore[attr-defined]
            return ConstNode(vals[0], int(kind[0]))
        return ExactCallNode(text, nodes)

def _call_text(n: Call) -> str:
    """The CEL text of call ``n`` over arguments ``a0``, ``a1``... (target first)."""
    f = n.function
    k = len(n.args) + (n.target is not None)
    names = [f"a{j}" for j in range(k)]
    if n.target is not None:
        if not _is_ident(f):
            raise Untranslatable
        return f"a0.{f}({', '.join(names[1:])})"
    if f == "_[_]" and k == 2:
        return "a0[a1]"
    if f == "@in" and k == 2:
        return "a0 in a1"
    if f in _CMP_TEXT and k == 2:
        return f"a0 {_CMP_TEXT[f]} a1"
    if f in _ARITH_TEXT and k == 2:
        return f"a0 {_ARITH_TEXT[f]} a1"
    if f == "-_" and k == 1:
        return "-a0"
    if f == "!_" and k == 1:
        return "!a0"
    if not all(_is_ident(part) for part in f.split(".")) or f.startswith("_"):
        raise Untranslatable
    return f"{f}({', '.join(names)})"

__all__ = ["ExprCompiler"]
