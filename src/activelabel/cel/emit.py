"""Python code emitter for CEL (Contract 1 in docs/internals.md).

The engine builds one Python function per policy. For each CEL expression,
:meth:`PythonEmitter.emit` returns a Python *expression* with this promise:
if it returns normally, its value is exactly CEL's value; if it raises
(anything), the caller re-evaluates with the exact :class:`~activelabel.cel.Program`.
So the emitted code takes the fast Python form wherever a cheap type check
makes it exact, and raises wherever CEL gets subtle (type mismatches, error
absorption, overflow).

Field paths under a root (``event.http.status``) are *hoisted*: loaded once
per call into a local by the statements :meth:`PythonEmitter.prologue` returns.
Loads never raise; an absent field (or a parent that is not a map, a ``dict``
or a subclass of it) loads ``MISSING``,
on which every operation raises.

    >>> ns = {}
    >>> em = PythonEmitter(ns, roots={"event": "event"})
    >>> code = em.emit(parse("event.status >= 500"))
    >>> print(em.debug_source(code))  # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import keyword
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from activelabel.cel import _functions as F
from activelabel.cel import _runtime as R
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
    Select,
    iter_nodes,
)
from activelabel.cel._budget import has_nested_macro
from activelabel.cel._eval import Program, compile_ast
from activelabel.cel._parser import parse
from activelabel.cel._regex import matcher
from activelabel.cel._values import TYPE_NAMES, CelType, UInt
from activelabel.errors import CELEvalError

MISSING = R.MISSING
#: What a three-valued condition leaf gives for a CEL error (``emit_bool3``): one that reads as an
#: absent field (a null operand), and any other (operand types CEL does not compare).
ERR = R.ERR
TYPE_ERR = R.TYPE_ERR
NeedsExactEvaluation = R.NeedsExactEvaluation

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_EXACT_FLOAT_INT = 2**53  # ints up to here compare with doubles the same way in Python and CEL
_NO_CONST = object()
_SCALARS = (int, UInt, float, str, bytes, bool, type(None), CelType, datetime, timedelta)
_KIND_OF = {bool: "bool", int: "int", UInt: "uint", float: "double", str: "string", bytes: "bytes",
            type(None): "null", list: "list", dict: "map", CelType: "type",
            datetime: "timestamp", timedelta: "duration"}
_CONVERSIONS = {"int": "int", "uint": "uint", "double": "double", "string": "string", "bytes": "bytes",
                "bool": "bool", "type": "type", "timestamp": "timestamp", "duration": "duration"}
_COMPARE_OPS = {"_<_": ("<", "lt"), "_<=_": ("<=", "le"), "_>_": (">", "gt"), "_>=_": (">=", "ge")}
_ARITH = {"_+_": F.add, "_-_": F.sub, "_*_": F.mul, "_/_": F.div, "_%_": F.mod}
_NUMERIC_KINDS = {"int", "uint", "double"}
_emitter_ids = itertools.count()


@dataclass
class _Code:
    """An emitted Python expression and what is statically known about it."""

    src: str
    kind: str | None = None  # CEL type when known ("bool", "int", "string", ...)
    maybe_missing: bool = False  # may evaluate to MISSING (a hoisted or bound field)
    simple: bool = False  # a name or literal: cheap and safe to repeat
    const: Any = _NO_CONST  # the folded CEL value, when constant


class PythonEmitter:
    """Turns CEL ASTs into Python expressions over caller-held locals.

    ``namespace``: the globals of the generated module; helpers and constants
    are installed there under unique ``_cel...`` names. ``roots``: CEL root
    identifier -> Python local holding it. ``bound``: full paths the caller
    already holds in locals (``("labels", "tier") -> "_L_tier"``), holding
    ``MISSING`` when unset; their parent (``labels``) is assumed to be a map.
    """

    def __init__(self, namespace: dict[str, Any], roots: Mapping[str, str],
                 bound: Mapping[tuple[str, ...], str] | None = None) -> None:
        self.namespace = namespace
        self.roots = dict(roots)
        self.bound = {tuple(k): v for k, v in (bound or {}).items()}
        self._bound_roots = {k[0] for k in self.bound}
        self._id = next(_emitter_ids)
        self._installed: dict[int, str] = {}
        self._hoisted: dict[tuple[str, ...], str] = {}
        self._vars = itertools.count()
        self.missing_name = self._install(MISSING, "MISSING")
        # Builtin types the generated code tests against, under _cel_ names so a
        # caller's local (a CEL root called `bool` or `dict`) cannot shadow them.
        self._T_bool = self._install(bool, "T_bool")
        self._T_dict = self._install(dict, "T_dict")
        self._T_list = self._install(list, "T_list")
        self._T_str = self._install(str, "T_str")
        self._isinstance = self._install(isinstance, "isinstance")
        self._T_int = self._install(int, "T_int")
        self._T_float = self._install(float, "T_float")
        self._fallback = self._install(R.fallback, "fallback") + "()"
        self._soft_arith = False  # set while emit_value3 emits three-valued arithmetic

    # ---- public API --------------------------------------------------------
    def emit(self, ast: Ast | Expr) -> str:
        """A Python expression for ``ast`` (see the module docstring for its promise)."""
        return self._finish(self._value(self._top(ast)))

    def emit_bool(self, ast: Ast | Expr) -> str:
        """Like :meth:`emit`, for conditions: the expression is a Python bool, and raises when
        CEL's value is not a bool (so ``if <it>:`` is exact)."""
        return self._finish(self._bool(self._top(ast)))

    def emit_bool3(self, node: Expr) -> tuple[str, bool]:
        """Like :meth:`emit_bool` for one condition leaf, and whether it is *three-valued*.

        A three-valued leaf (an ordering comparison) gives True, False, ``ERR`` or
        ``TYPE_ERR`` (see ``_runtime.ErrorValue``) instead of raising where CEL has no
        overload for its operands' types (``"12" > 3``): telemetry with a wrong type
        costs what a clean event costs. Its operands may still raise.
        """
        if isinstance(node, Call) and node.target is None and node.function in _COMPARE_OPS:
            self._text = ""
            args = [self._expr(a, {}) for a in node.args]
            src = self._compare(node.function, args[0], args[1], soft=True)
            return self._finish(src.src), src.kind != "bool"
        return self.emit_bool(node), False

    def emit_value3(self, ast: Ast | Expr) -> tuple[str, bool]:
        """Like :meth:`emit`, and whether the value is *three-valued*: arithmetic over fields
        and literals only (``event.amount * 0.029 + 0.3``) gives ``ERR`` / ``TYPE_ERR`` where
        CEL has no overload (an int times a double, a null) instead of raising. Anything
        else is emitted as :meth:`emit` does (and says False)."""
        node = ast.root if isinstance(ast, Ast) else ast
        if not _soft_arith_ok(node) or not any(_is_arith(n) for n in iter_nodes(node)):
            return self.emit(ast), False
        self._soft_arith = True
        try:
            return self.emit(ast), True
        finally:
            self._soft_arith = False

    def _top(self, ast: Ast | Expr) -> _Code:
        node = ast.root if isinstance(ast, Ast) else ast
        self._text = ast.text if isinstance(ast, Ast) else ""
        return self._expr(node, {})

    def _finish(self, src: str) -> str:
        try:
            # CEL allows deeper nesting than Python's parser (about 200 parentheses):
            # such expressions always take the exact path rather than break the module.
            # The margin leaves room for the caller's own nesting around the expression.
            compile("(" * 10 + src + ")" * 10, "<cel emit check>", "eval")
        except (SyntaxError, RecursionError, MemoryError):
            return self._fallback
        return src

    def prologue(self, root: str, *, map_local: str | None = None) -> list[str]:
        """Statements loading every hoisted path under CEL root ``root``; call after all emit() calls.

        ``map_local``: a local the caller has set to the root's value when that is a map (a
        ``dict``), and to an empty map otherwise: fields directly under the root load from it
        with no type test.
        """
        out = []
        for path, name in sorted(self._hoisted.items(), key=lambda kv: (len(kv[0]), kv[0])):
            if path[0] != root:
                continue
            m = self.missing_name
            if len(path) == 2 and map_local is not None:
                out.append(f"{name} = {map_local}.get({path[-1]!r}, {m})")
                continue
            parent = self.roots[root] if len(path) == 2 else self._hoisted[path[:-1]]
            # A dict subclass (OrderedDict, a caller's Mapping converted at the top only) is a map to CEL too.
            out.append(f"{name} = {parent}.get({path[-1]!r}, {m}) if {parent}.__class__ is {self._T_dict} "
                       f"or {self._isinstance}({parent}, {self._T_dict}) else {m}")
        return out

    def hoisted_paths(self) -> dict[tuple[str, ...], str]:
        """The hoisted field paths and their local names (for debugging and tests)."""
        return dict(self._hoisted)

    def debug_source(self, *exprs: str) -> str:
        """Prologues for every root plus the given emitted expressions, as readable source."""
        lines = [ln for root in self.roots for ln in self.prologue(root)]
        lines += [f"_expr{i} = {e}" for i, e in enumerate(exprs)]
        return "\n".join(lines)

    # ---- namespace ---------------------------------------------------------
    def _install(self, obj: Any, hint: str) -> str:
        key = id(obj)
        name = self._installed.get(key)
        if name is not None:
            return name
        base = "_cel_" + re.sub(r"\W", "_", hint)
        name = base
        n = 0
        while name in self.namespace and self.namespace[name] is not obj:
            n += 1
            name = f"{base}_{n}"
        self.namespace[name] = obj
        self._installed[key] = name
        return name

    def _builtin(self, fn: Callable[..., Any]) -> str:
        # Installed under a _cel_ name: a caller's local called `len` or `any` (a CEL
        # root of that name) must not shadow what the generated code calls.
        return self._install(fn, fn.__name__)

    def _helper(self, name: str) -> str:
        obj = getattr(R, name, None) or getattr(F, name)
        return self._install(obj, name)

    def _const_code(self, v: Any) -> _Code:
        c = v.__class__
        kind = _KIND_OF.get(c)
        if c is bool or v is None or c is str or c is bytes:
            src = repr(v)
        elif c is int:
            src = repr(v) if v >= 0 else f"({v!r})"
        elif c is float and math.isfinite(v):
            src = repr(v) if math.copysign(1.0, v) > 0 else f"({v!r})"
        elif c is list:
            items = [self._const_code(x) for x in v]
            return _Code("[" + ", ".join(i.src for i in items) + "]", "list", const=v)
        elif c is dict:
            pairs = [(self._const_code(k).src, self._const_code(x).src) for k, x in v.items()]
            return _Code("{" + ", ".join(f"{k}: {x}" for k, x in pairs) + "}", "map", const=v)
        else:  # UInt, non-finite floats, types, timestamps, durations: immutable, install once
            src = self._install(v, f"k{len(self._installed)}")
        return _Code(src, kind, simple=True, const=v)

    # ---- coercions ---------------------------------------------------------
    def _value(self, c: _Code) -> str:
        """Source for ``c`` that is never MISSING."""
        if not c.maybe_missing:
            return c.src
        if c.simple:
            return f"({c.src} if {c.src} is not {self.missing_name} else {self._fallback})"
        return f"{self._helper('value')}({c.src})"

    def _bool(self, c: _Code) -> str:
        """Source for ``c`` that is a Python bool (raises otherwise)."""
        if c.kind == "bool" and not c.maybe_missing:
            return c.src
        if c.simple:  # a name: check inline (MISSING's class is not bool either)
            return f"({c.src} if {c.src}.__class__ is {self._T_bool} else {self._fallback})"
        return f"{self._helper('boolean')}({c.src})"

    # ---- nodes -------------------------------------------------------------
    def _expr(self, node: Expr, scope: dict[str, str]) -> _Code:
        folded = self._fold(node, scope)
        if folded is not None:
            return folded
        if isinstance(node, Ident):
            return self._ident(node, scope)
        if isinstance(node, Select):
            return self._has(node, scope) if node.test_only else self._path(node, scope)
        if isinstance(node, Call):
            return self._call(node, scope)
        if isinstance(node, CreateList):
            elems = [self._value(self._expr(e, scope)) for e in node.elements]
            return _Code("[" + ", ".join(elems) + "]", "list")
        if isinstance(node, CreateMap):
            return self._map(node, scope)
        if isinstance(node, Macro):
            return self._macro(node, scope)
        return _Code(self._fallback)  # CreateStruct and anything unknown

    def _fold(self, node: Expr, scope: dict[str, str]) -> _Code | None:
        """Constant-fold a subtree without free identifiers (evaluated once, exactly)."""
        if isinstance(node, Literal):
            return self._const_code(node.value)
        # Lazily: the first free identifier ends the search, so folding is not a full subtree walk at every node.
        for n in iter_nodes(node):
            if isinstance(n, (Macro, CreateStruct)):
                return None
            if isinstance(n, Ident):
                name = n.name.lstrip(".")
                if name not in TYPE_NAMES or name in scope or name in self.roots or name in self._bound_roots:
                    return None
        try:
            v = compile_ast(Ast(node, self._text)).evaluate({})
        except CELEvalError:
            return _Code(self._fallback)
        if not _is_plain_value(v):
            return None
        return self._const_code(v)

    def _ident(self, node: Ident, scope: dict[str, str]) -> _Code:
        name = node.name
        if name in scope:
            return _Code(scope[name], simple=True)
        name = name.lstrip(".")
        if (name,) in self.bound:
            return _Code(self.bound[(name,)], maybe_missing=True, simple=True)
        if name in self.roots:
            return _Code(self.roots[name], maybe_missing=True, simple=True)
        return _Code(self._fallback)  # unknown identifier: CEL error (or a type name, folded earlier)

    def _split_path(self, node: Expr) -> tuple[Expr, list[str]]:
        """``x.a["b"].c`` -> (x, ["a", "b", "c"]): the longest field chain on top of ``node``."""
        fields: list[str] = []
        n = node
        while True:
            if isinstance(n, Select) and not n.test_only:
                fields.append(n.field)
                n = n.operand
            elif (isinstance(n, Call) and n.function == "_[_]" and n.target is None
                  and isinstance(n.args[1], Literal) and n.args[1].value.__class__ is str):
                fields.append(n.args[1].value)
                n = n.args[0]
            else:
                return n, fields[::-1]

    def _path(self, node: Expr, scope: dict[str, str]) -> _Code:
        base, fields = self._split_path(node)
        if isinstance(base, Ident) and base.name not in scope:
            root = base.name.lstrip(".")
            path = (root, *fields)
            for k in range(len(path), 0, -1):
                local = self.bound.get(path[:k])
                if local is not None:
                    rest = "".join(f"[{f!r}]" for f in path[k:])
                    return _Code(local + rest, maybe_missing=not rest, simple=not rest)
            if root in self.roots and root not in self._bound_roots:
                return _Code(self._hoist(path), maybe_missing=True, simple=True)
        b = self._expr(base, scope)
        if b.kind is not None and b.kind != "map":
            return _Code(self._fallback)  # selecting a field of a list, string, ...: a CEL error
        # Subscripting is exact-or-raise for a string key: maps give the value or
        # KeyError, every other CEL value (and MISSING) raises.
        return _Code(f"{_paren(b.src)}" + "".join(f"[{f!r}]" for f in fields))

    def _hoist(self, path: tuple[str, ...]) -> str:
        for k in range(2, len(path) + 1):
            p = path[:k]
            if p not in self._hoisted:
                slug = "_".join(re.sub(r"\W", "_", s)[:16] for s in p)
                self._hoisted[p] = f"_h{self._id}_{len(self._hoisted)}_{slug}"
        return self._hoisted[path]

    def _has(self, node: Select, scope: dict[str, str]) -> _Code:
        field = node.field
        base, fields = self._split_path(node.operand)
        if isinstance(base, Ident) and base.name not in scope:
            path = (base.name.lstrip("."), *fields, field)
            if path in self.bound:
                return _Code(f"({self.bound[path]} is not {self.missing_name})", "bool")
        parent = self._expr(node.operand, scope)
        if parent.simple:
            return _Code(f"({field!r} in {parent.src} if {parent.src}.__class__ is {self._T_dict} else {self._fallback})",
                         "bool")
        return _Code(f"{self._helper('has_field')}({parent.src}, {field!r})", "bool")

    def _map(self, node: CreateMap, scope: dict[str, str]) -> _Code:
        keys = [self._expr(k, scope) for k, _ in node.entries]
        vals = [self._value(self._expr(v, scope)) for _, v in node.entries]
        const_keys = [k.const for k in keys]
        if all(k.__class__ is str for k in const_keys) and len(set(const_keys)) == len(const_keys):
            return _Code("{" + ", ".join(f"{k.src}: {v}" for k, v in zip(keys, vals)) + "}", "map")
        pairs = ", ".join(f"({self._value(k)}, {v})" for k, v in zip(keys, vals))
        return _Code(f"{self._helper('make_map')}(({pairs},))", "map")

    # ---- calls -------------------------------------------------------------
    def _call(self, node: Call, scope: dict[str, str]) -> _Code:
        fn = node.function
        if fn == "_[_]" and node.target is None:
            if isinstance(node.args[1], Literal) and node.args[1].value.__class__ is str:
                return self._path(node, scope)
            return self._index(node, scope)
        args = [self._expr(a, scope) for a in node.args]
        target = self._expr(node.target, scope) if node.target is not None else None
        if fn == "_&&_" or fn == "_||_":
            op = "and" if fn == "_&&_" else "or"
            return _Code(f"({self._bool(args[0])} {op} {self._bool(args[1])})", "bool")
        if fn == "!_":
            return _Code(f"(not {self._bool(args[0])})", "bool")
        if fn == "_?_:_":
            c, t, f = args
            kind = t.kind if t.kind == f.kind else None
            return _Code(f"({t.src} if {self._bool(c)} else {f.src})", kind,
                         maybe_missing=t.maybe_missing or f.maybe_missing)
        if fn == "_==_" or fn == "_!=_":
            return self._equality(fn == "_==_", args[0], args[1])
        if fn in _COMPARE_OPS:
            return self._compare(fn, args[0], args[1])
        if fn == "@in":
            return self._in(args[0], args[1])
        if fn in _ARITH:
            return self._arith(fn, args[0], args[1])
        if fn == "-_":
            return _Code(f"{self._helper('neg')}({args[0].src})", args[0].kind if args[0].kind in _NUMERIC_KINDS else None)
        if target is not None:
            return self._method(fn, target, args)
        return self._function(fn, args)

    def _equality(self, is_eq: bool, a: _Code, b: _Code) -> _Code:
        if a.const is not _NO_CONST and b.const is _NO_CONST:
            a, b = b, a
        op = "==" if is_eq else "!="
        c = b.const
        if c is not _NO_CONST:
            cc = c.__class__
            if cc is str or cc is bytes:
                return _Code(f"({a.src} {op} {b.src})", "bool")
            if cc is int and abs(c) <= _EXACT_FLOAT_INT:
                if c not in (0, 1) or a.kind in _NUMERIC_KINDS:
                    return _Code(f"({a.src} {op} {b.src})", "bool")
                if a.simple:  # Python's True == 1 but CEL's true != 1
                    if is_eq:
                        return _Code(f"({a.src} == {b.src} and {a.src}.__class__ is not {self._T_bool})", "bool")
                    return _Code(f"({a.src} != {b.src} or {a.src}.__class__ is {self._T_bool})", "bool")
            if c is None:
                return _Code(f"({self._value(a)} {'is' if is_eq else 'is not'} None)", "bool")
            if cc is bool and a.kind == "bool" and not a.maybe_missing:
                positive = c is is_eq
                return _Code(a.src if positive else f"(not {a.src})", "bool")
        elif a.kind == b.kind and a.kind in ("string", "int") and not (a.maybe_missing or b.maybe_missing):
            return _Code(f"({a.src} {op} {b.src})", "bool")
        helper = self._helper("eq" if is_eq else "ne")
        if c is _NO_CONST and a.simple and b.simple:
            # Two fields of the same scalar class compare as Python compares them (doubles: NaN
            # too); anything else (a bool and an int, lists, MISSING) as CEL says.
            x, y = a.src, b.src
            same = (f"{x}.__class__ is {y}.__class__ and ({x}.__class__ is {self._T_str} or "
                    f"{x}.__class__ is {self._T_int} or {x}.__class__ is {self._T_float})")
            return _Code(f"(({x} {op} {y}) if {same} else {helper}({x}, {y}))", "bool")
        return _Code(f"{helper}({a.src}, {b.src})", "bool")

    def _compare(self, fn: str, a: _Code, b: _Code, *, soft: bool = False) -> _Code:
        """``a op b``; ``soft``: where the types may not compare, the three-valued helper
        (``gt3``...) instead of one that raises, and the kind is left unknown (not "bool")."""
        op, name = _COMPARE_OPS[fn]
        helper = self._helper(name + "3" if soft else name)
        kind = None if soft else "bool"
        for const_side, other in ((b, a), (a, b)):
            c = const_side.const
            if c is _NO_CONST or other.const is not _NO_CONST:
                continue
            cc = c.__class__
            src = f"({a.src} {op} {b.src})"
            if cc is str or cc is bytes:
                if soft and other.simple:  # Python raises TypeError for any other type; the helper says what CEL says
                    o = other.src
                    t = self._T_str if cc is str else self._install(bytes, "T_bytes")
                    return _Code(f"({src} if {o}.__class__ is {t} else {helper}({a.src}, {b.src}))", kind)
                return _Code(src, "bool")
            exact_number = (cc is int and abs(c) <= _EXACT_FLOAT_INT) or (
                cc is float and math.isfinite(c) and abs(c) < _EXACT_FLOAT_INT)
            if exact_number:
                if other.kind in _NUMERIC_KINDS and not other.maybe_missing:
                    return _Code(src, "bool")
                if other.simple:  # an int or a double compares exactly in Python; the rest as CEL says (bools: an error)
                    o = other.src
                    return _Code(f"({src} if {o}.__class__ is {self._T_int} or {o}.__class__ is {self._T_float} "
                                 f"else {helper}({a.src}, {b.src}))", kind)
            break
        if a.kind == b.kind and a.kind in ("string", "int", "double") and not (a.maybe_missing or b.maybe_missing):
            return _Code(f"({a.src} {op} {b.src})", "bool")
        return _Code(f"{helper}({a.src}, {b.src})", kind)

    def _in(self, elem: _Code, container: _Code) -> _Code:
        c = container.const
        if c.__class__ is dict and elem.const is _NO_CONST and elem.simple and c and all(
                k.__class__ is str for k in c):
            # map keys: only string lookups are decided here (a null or bytes key is an error)
            fs = self._install(frozenset(c), f"set{len(self._installed)}")
            return _Code(f"({elem.src} in {fs} if {elem.src}.__class__ is {self._T_str} else {self._fallback})", "bool")
        if c.__class__ is list and elem.const is _NO_CONST:
            members = list(c)
            if members and all(m.__class__ in (str, bytes, type(None), int) for m in members) and all(
                    abs(m) <= _EXACT_FLOAT_INT for m in members if m.__class__ is int):
                fs = self._install(frozenset(members), f"set{len(self._installed)}")
                has_01 = any(m.__class__ is int and m in (0, 1) for m in members)
                if not has_01 or elem.kind in _NUMERIC_KINDS:
                    return _Code(f"({elem.src} in {fs})", "bool")
                if elem.simple:  # true in [1] is false in CEL
                    return _Code(f"({elem.src}.__class__ is not {self._T_bool} and {elem.src} in {fs})", "bool")
            if not members:
                return _Code(f"({self._value(elem)} is {self.missing_name})", "bool")  # always False
        return _Code(f"{self._helper('contains_in')}({elem.src}, {container.src})", "bool")

    def _arith(self, fn: str, a: _Code, b: _Code) -> _Code:
        if fn == "_+_" and a.kind == b.kind and a.kind in ("string", "list") and not (
                a.maybe_missing or b.maybe_missing):
            return _Code(f"({a.src} + {b.src})", a.kind)
        kind = a.kind if a.kind == b.kind and a.kind in _NUMERIC_KINDS else None
        name = {"_+_": "add", "_-_": "sub", "_*_": "mul", "_/_": "div", "_%_": "mod"}[fn]
        if self._soft_arith:  # emit_value3: the helper gives an error value instead of raising
            helper = self._helper(name + "3")
            kind = None
        else:
            helper = self._install(_ARITH[fn], name)
        if fn in ("_+_", "_-_", "_*_"):
            for const_side, other in ((b, a), (a, b)):
                c = const_side.const
                soft_inner = self._soft_arith and other.const is _NO_CONST and not other.simple
                if c.__class__ is float and math.isfinite(c) and other.const is _NO_CONST and (
                        other.simple or other.kind == "double" or soft_inner):
                    # double (op) double is IEEE arithmetic in both; any other operand as CEL says
                    op = {"_+_": "+", "_-_": "-", "_*_": "*"}[fn]
                    if other.kind == "double" and not other.maybe_missing:
                        return _Code(f"({a.src} {op} {b.src})", "double")
                    if soft_inner:
                        # A three-valued inner result, held in a local: a conditional expression
                        # evaluates its test (which binds it) before either branch.
                        t = f"_cel_s{next(self._vars)}"
                        xs, ys = (t, b.src) if other is a else (a.src, t)
                        return _Code(f"(({xs} {op} {ys}) if ({t} := {other.src}).__class__ is {self._T_float} "
                                     f"else {helper}({xs}, {ys}))", None)
                    if other.simple:
                        o = other.src
                        return _Code(f"(({a.src} {op} {b.src}) if {o}.__class__ is {self._T_float} "
                                     f"else {helper}({a.src}, {b.src}))", None if self._soft_arith else "double")
            for const_side, other in ((b, a), (a, b)):
                c = const_side.const
                if c.__class__ is int and abs(c) <= _EXACT_FLOAT_INT and other.const is _NO_CONST and other.simple:
                    # int (op) int is Python's arithmetic while the result fits CEL's int64;
                    # an overflow, any other type, as CEL says (the helper).
                    op = {"_+_": "+", "_-_": "-", "_*_": "*"}[fn]
                    o, t = other.src, f"_cel_s{next(self._vars)}"
                    return _Code(f"({t} if {o}.__class__ is {self._T_int} and {_INT64_MIN} <= ({t} := {a.src} {op} {b.src}) "
                                 f"<= {_INT64_MAX} else {helper}({a.src}, {b.src}))", None if self._soft_arith else "int")
        return _Code(f"{helper}({a.src}, {b.src})", kind)

    def _index(self, node: Call, scope: dict[str, str]) -> _Code:
        a = self._expr(node.args[0], scope)
        k = self._expr(node.args[1], scope)
        idx = self._helper("index")
        if k.const.__class__ is int and k.const >= 0 and a.simple and not a.maybe_missing:
            return _Code(f"({a.src}[{k.src}] if {a.src}.__class__ is {self._T_list} else {idx}({a.src}, {k.src}))")
        return _Code(f"{idx}({a.src}, {k.src})")

    def _method(self, fn: str, target: _Code, args: list[_Code]) -> _Code:
        t = target.src
        if fn == "size" and not args:
            return _Code(f"{self._builtin(len)}({t})", "int")
        if fn in ("startsWith", "endsWith") and len(args) == 1:
            arg = args[0]
            if arg.const.__class__ is str:
                py = "startswith" if fn == "startsWith" else "endswith"
                return _Code(f"{_paren(t)}.{py}({arg.src})", "bool")
        if fn == "contains" and len(args) == 1 and args[0].const.__class__ is str:
            return _Code(f"{self._helper('str_contains')}({t}, {args[0].src})", "bool")
        if fn == "matches" and len(args) == 1 and args[0].const.__class__ is str:
            try:
                m = matcher(args[0].const)
            except CELEvalError:
                return _Code(self._fallback)
            return _Code(f"{self._install(m, 'match')}({t})", "bool")
        if fn in F.METHODS:
            impl = self._install(F.FUNCTIONS[fn], fn)
            kind = "bool" if fn in ("startsWith", "endsWith", "contains", "matches") else (
                "int" if fn == "size" or fn.startswith("get") else None)
            return _Code(f"{impl}({', '.join([t, *(a.src for a in args)])})", kind)
        return _Code(self._fallback)

    def _function(self, fn: str, args: list[_Code]) -> _Code:
        if fn == "size" and len(args) == 1:
            # len() where it is CEL's size (a string counts code points in both); the rest as
            # CEL says (no overload for a number: a CEL error, not a Python TypeError).
            a = args[0]
            size = self._install(F.size, "size")
            if a.simple:
                return _Code(f"({self._builtin(len)}({a.src}) if {a.src}.__class__ is {self._T_str} or "
                             f"{a.src}.__class__ is {self._T_list} else {size}({a.src}))", "int")
            return _Code(f"{size}({a.src})", "int")
        if fn == "dyn" and len(args) == 1:
            return args[0]
        if fn == "matches" and len(args) == 2:
            return self._method("matches", args[0], args[1:])
        if fn in _CONVERSIONS and len(args) == 1:
            kind = _CONVERSIONS[fn]
            if args[0].kind == kind and kind != "type" and not args[0].maybe_missing:
                return args[0]
            impl = self._install(F.FUNCTIONS[fn], fn)
            return _Code(f"{impl}({args[0].src})", kind)
        if fn in F.FUNCTIONS and fn in F.METHODS and args:
            return self._method(fn, args[0], args[1:])
        if fn in F.NAMESPACED:
            impl = self._install(F.FUNCTIONS[fn], fn)
            return _Code(f"{impl}({', '.join(a.src for a in args)})", "bool" if fn.endswith(".contains") else None)
        return _Code(self._fallback)

    def _macro(self, node: Macro, scope: dict[str, str]) -> _Code:
        if has_nested_macro(node):  # the exact evaluator counts nested steps against the budget
            return _Code(self._fallback)
        rng = self._expr(node.target, scope)
        var = f"_v{self._id}_{next(self._vars)}"
        inner = {**scope, node.var: var}
        bodies = [self._expr(a, inner) for a in node.args]
        it = f"{self._helper('iter_range')}({rng.src})"
        kind = node.kind
        if kind == "exists":
            c = _membership_constant(node.args[0], node.var)
            if c is not _NO_CONST:
                # exists(x, x == c) is membership: `c in list` compares with == like
                # CEL for these constants, and never errors, so no absorption subtleties.
                return _Code(f"({self._const_code(c).src} in {it})", "bool")
        if kind == "all" or kind == "exists":
            fn = self._builtin(all if kind == "all" else any)
            return _Code(f"{fn}({self._bool(bodies[0])} for {var} in {it})", "bool")
        if kind == "exists_one":
            return _Code(f"({self._builtin(sum)}(1 for {var} in {it} if {self._bool(bodies[0])}) == 1)", "bool")
        if kind == "filter":
            return _Code(f"[{var} for {var} in {it} if {self._bool(bodies[0])}]", "list")
        transform = self._value(bodies[-1])
        if len(bodies) == 2:
            return _Code(f"[{transform} for {var} in {it} if {self._bool(bodies[0])}]", "list")
        return _Code(f"[{transform} for {var} in {it}]", "list")


def _is_arith(n: Expr) -> bool:
    return isinstance(n, Call) and n.target is None and n.function in _ARITH and len(n.args) == 2


def _soft_arith_ok(n: Expr) -> bool:
    """Whether ``n`` can be emitted with three-valued arithmetic (``emit_value3``).

    Arithmetic over fields and literals, and ``c ? a : b`` whose test does no arithmetic
    (it is emitted as usual and raises where it must): an error value can then only
    flow into arithmetic, which passes it on, never into a comparison or a function.
    """
    if isinstance(n, (Literal, Ident)) or (isinstance(n, Select) and not n.test_only):
        return True
    if isinstance(n, Call) and _is_arith(n):
        return all(_soft_arith_ok(a) for a in n.args)
    if isinstance(n, Call) and n.target is None and n.function == "_?_:_" and len(n.args) == 3:
        return not any(_is_arith(x) for x in iter_nodes(n.args[0])) and all(_soft_arith_ok(a) for a in n.args[1:])
    return False


def _membership_constant(pred: Expr, var: str) -> Any:
    """``c`` when ``pred`` is ``var == c`` (or ``c == var``) for a string or a small non-0/1 int, else _NO_CONST."""
    if not (isinstance(pred, Call) and pred.function == "_==_" and pred.target is None):
        return _NO_CONST
    a, b = pred.args
    if isinstance(a, Literal):
        a, b = b, a
    if not (isinstance(a, Ident) and a.name == var and isinstance(b, Literal)):
        return _NO_CONST
    c = b.value
    if c.__class__ is str or c.__class__ is bytes:
        return c
    if c.__class__ is int and c not in (0, 1) and abs(c) <= _EXACT_FLOAT_INT:
        return c
    return _NO_CONST


def _paren(src: str) -> str:
    # Parentheses cost nothing at runtime; only bare names are left alone.
    return src if re.fullmatch(r"[A-Za-z_]\w*", src) else f"({src})"


def _is_plain_value(v: Any) -> bool:
    if v.__class__ in _SCALARS:
        return True
    if v.__class__ is list:
        return all(_is_plain_value(x) for x in v)
    if v.__class__ is dict:
        return all(_is_plain_value(k) and _is_plain_value(x) for k, x in v.items())
    return False


class CompiledFunction:
    """A CEL expression compiled to one Python function, with exact fallback.

    ``fn(bindings)`` gives exactly ``Program.evaluate(bindings)``; ``source``
    is the generated Python (print it to see what the emitter does).
    """

    def __init__(self, expr: str | Ast, roots: list[str] | None = None) -> None:
        ast = expr if isinstance(expr, Ast) else parse(expr)
        self.program: Program = compile_ast(ast)
        if roots is None:
            roots = sorted({r for r in _free_roots(ast)})
        params = {r: f"r_{r}" if keyword.iskeyword(r) else r for r in roots}
        namespace: dict[str, Any] = {}
        em = PythonEmitter(namespace, roots=params)
        body = em.emit(ast)
        lines = [f"def _cel_fast({', '.join(params.values())}):"]
        for r in roots:
            lines += [f"    {s}" for s in em.prologue(r)]
        lines.append(f"    return {body}")
        self.source = "\n".join(lines)
        exec(compile(self.source, f"<cel {ast.text[:40]!r}>", "exec"), namespace)  # noqa: S102 - our own generated code
        self.fast: Callable[..., Any] = namespace["_cel_fast"]
        self.roots = roots

    def __call__(self, bindings: Mapping[str, Any]) -> Any:
        try:
            return self.fast(*[bindings.get(r, MISSING) for r in self.roots])
        except Exception:  # noqa: BLE001 - the emitter's contract: any raise means "ask the exact evaluator"
            return self.program.evaluate(bindings)


def _free_roots(ast: Ast) -> set[str]:
    from activelabel.cel._ast import references

    return {ref.path[0].lstrip(".") for ref in references(ast)} - set(TYPE_NAMES)


def compile_function(expr: str | Ast, roots: list[str] | None = None) -> CompiledFunction:
    """Compile ``expr`` to a Python function over ``roots`` (default: its free identifiers)."""
    return CompiledFunction(expr, roots)


__all__ = ["MISSING", "CompiledFunction", "NeedsExactEvaluation", "PythonEmitter", "compile_function"]
