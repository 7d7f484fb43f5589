"""The exact CEL evaluator: an AST compiled once into nested Python closures.

Every closure takes the activation (a dict of name -> value) and returns the
CEL value or raises CELEvalError (CEL's error value). ``&&``, ``||``, ``all``
and ``exists`` absorb errors the way the spec says (``false && error`` is
false, ``error || true`` is true, in either order).
"""

from __future__ import annotations

import difflib
import operator
from collections.abc import Callable, Collection, Mapping
from typing import Any

from activelabel.cel import _budget
from activelabel.cel import _functions as F
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
    references,
    walk,
)
from activelabel.cel._lexer import syntax_error
from activelabel.cel._parser import parse
from activelabel.cel._regex import matcher
from activelabel.cel._runtime import MISSING
from activelabel.cel._values import TYPE_NAMES, UInt, cel_compare, cel_equal, map_get, no_overload, type_name
from activelabel.errors import CELEvalError, CELSyntaxError

Fn = Callable[[dict[Any, Any]], Any]

_COMPARE = {"_<_", "_<=_", "_>_", "_>=_"}
_PY_COMPARE = {"_<_": operator.lt, "_<=_": operator.le, "_>_": operator.gt, "_>=_": operator.ge}
KNOWN_FUNCTIONS = frozenset({*F.FUNCTIONS, "_==_", "_!=_", "_&&_", "_||_", "_?_:_", *_COMPARE})


def _const(v: Any) -> Fn:
    return lambda act: v


def _raiser(message: str) -> Fn:
    def f(act: dict[Any, Any]) -> Any:
        raise CELEvalError(message)

    return f


class _Compiler:
    def __init__(self, strict_functions: bool, text: str, qualified: bool = False) -> None:
        self.strict_functions = strict_functions
        self.text = text
        # Dotted binding names ("a.b") a select chain could mean; resolving them
        # costs dict probes, so a second closure tree does it only when needed.
        self.qualified = qualified
        self.dotted_names: set[str] = set()

    def compile(self, node: Expr, scope: frozenset[str]) -> Fn:
        if isinstance(node, Literal):
            return _const(node.value)
        if isinstance(node, Ident):
            return self.ident(node)
        if isinstance(node, Select):
            return self.select(node, scope)
        if isinstance(node, Call):
            return self.call(node, scope)
        if isinstance(node, CreateList):
            return self.create_list(node, scope)
        if isinstance(node, CreateMap):
            return self.create_map(node, scope)
        if isinstance(node, Macro):
            return self.macro(node, scope)
        if isinstance(node, CreateStruct):
            return _raiser(f"protobuf message construction ({node.type_name}{{...}}) is not supported")
        raise TypeError(f"unknown node {node!r}")  # pragma: no cover

    def ident(self, node: Ident) -> Fn:
        name = node.name.lstrip(".")
        type_value = TYPE_NAMES.get(name)

        def ident(act: dict[Any, Any]) -> Any:
            try:
                v = act[name]
            except KeyError:
                if type_value is not None:
                    return type_value
                raise CELEvalError(f"undeclared reference to '{name}' (unknown variable)") from None
            if v is MISSING:  # the generated code's "absent" marker, passed through by a caller
                raise CELEvalError(f"no value for '{name}'")
            return v

        return ident

    def select(self, node: Select, scope: frozenset[str]) -> Fn:
        field = node.field
        if node.test_only:
            operand = self.compile(node.operand, scope)
            has_field = F.has_field
            return lambda act: has_field(operand(act), field)
        plain = self._plain_select(node, scope)
        # Qualified names: `a.b.c` may name a binding "a.b.c" or "a.b" (longest wins).
        chain: list[str] = []
        n: Expr = node
        while isinstance(n, Select) and not n.test_only:
            chain.append(n.field)
            n = n.operand
        if not isinstance(n, Ident) or n.name in scope:
            return plain
        parts = [n.name.lstrip("."), *reversed(chain)]
        candidates = [(".".join(parts[:k]), parts[k:]) for k in range(len(parts), 1, -1)]
        self.dotted_names.update(d for d, _ in candidates)
        if not self.qualified:
            return plain
        select = F.select

        def qualified(act: dict[Any, Any]) -> Any:
            for dotted, rest in candidates:
                if dotted in act:
                    v = act[dotted]
                    for f in rest:
                        v = select(v, f)
                    return v
            return plain(act)

        return qualified

    def _plain_select(self, node: Select, scope: frozenset[str]) -> Fn:
        operand_node = node.operand
        if isinstance(operand_node, Select) and not operand_node.test_only:
            operand = self._plain_select(operand_node, scope)
        else:
            operand = self.compile(operand_node, scope)
        field = node.field
        select = F.select

        def sel(act: dict[Any, Any]) -> Any:
            v = operand(act)
            if v.__class__ is dict:
                try:
                    return v[field]
                except KeyError:
                    raise CELEvalError(f"no such key: {field!r}") from None
            return select(v, field)

        return sel

    def call(self, node: Call, scope: frozenset[str]) -> Fn:
        fn = node.function
        args = [self.compile(a, scope) for a in node.args]
        if fn == "_&&_" or fn == "_||_":
            return _logic(fn, args[0], args[1])
        if fn == "_?_:_":
            return _conditional(*args)
        if node.target is not None:
            target = self.compile(node.target, scope)
            if fn not in F.METHODS:
                return self._unknown(node, f"no such method '{fn}'", [target, *args])
            impl = F.FUNCTIONS[fn]
            if not args:
                return lambda act: impl(target(act))
            if len(args) == 1:
                a0 = args[0]
                return lambda act: impl(target(act), a0(act))
            return lambda act: impl(target(act), *[a(act) for a in args])
        if fn == "_==_":
            a, b = args

            def equal(act: dict[Any, Any]) -> bool:
                x = a(act)
                y = b(act)
                c = x.__class__
                if c is y.__class__ and (c is str or c is int):
                    return x == y  # type: ignore[no-any-return]
                return cel_equal(x, y)

            return equal
        if fn == "_!=_":
            a, b = args
            return lambda act: not cel_equal(a(act), b(act))
        if fn in _COMPARE:
            a, b = args
            py_op = _PY_COMPARE[fn]

            def compare(act: dict[Any, Any]) -> bool:
                x = a(act)
                y = b(act)
                c = x.__class__
                if c is y.__class__ and (c is int or c is str or c is float):
                    return py_op(x, y)  # type: ignore[no-any-return]
                return cel_compare(fn, x, y)

            return compare
        found = F.FUNCTIONS.get(fn)
        if found is None:
            return self._unknown(node, f"no such function '{fn}'", args)
        fn_impl = found
        if len(args) == 1:
            a0 = args[0]
            return lambda act: fn_impl(a0(act))
        if len(args) == 2:
            a0, a1 = args
            return lambda act: fn_impl(a0(act), a1(act))
        return lambda act: fn_impl(*[a(act) for a in args])

    def _unknown(self, node: Call, message: str, args: list[Fn]) -> Fn:
        if self.strict_functions:
            raise syntax_error(message, self.text, node.offset)

        def unknown(act: dict[Any, Any]) -> Any:
            for a in args:  # argument errors win, as in cel-go
                a(act)
            raise CELEvalError(message)

        return unknown

    def create_list(self, node: CreateList, scope: frozenset[str]) -> Fn:
        elems = [self.compile(e, scope) for e in node.elements]
        return lambda act: [e(act) for e in elems]

    def create_map(self, node: CreateMap, scope: frozenset[str]) -> Fn:
        entries = [(self.compile(k, scope), self.compile(v, scope)) for k, v in node.entries]

        def create_map(act: dict[Any, Any]) -> dict[Any, Any]:
            out: dict[Any, Any] = {}
            for kf, vf in entries:
                k = kf(act)
                kc = k.__class__
                if kc is not str and kc is not int and kc is not UInt and kc is not bool:
                    raise CELEvalError(f"unsupported map key type {type_name(k)}")
                if map_get(out, k)[0]:
                    raise CELEvalError(f"Failed with repeated key {k!r}")
                out[k] = vf(act)
            return out

        return create_map

    def macro(self, node: Macro, scope: frozenset[str]) -> Fn:
        target = self.compile(node.target, scope)
        inner_scope = scope | {node.var}
        bodies = [self.compile(a, inner_scope) for a in node.args]
        return _MACROS[node.kind](node.kind, target, node.var, bodies)


def _logic(fn: str, a: Fn, b: Fn) -> Fn:
    absorbing = fn == "_||_"  # the value that decides alone: false for &&, true for ||

    def logic(act: dict[Any, Any]) -> bool:
        err: CELEvalError | None = None
        try:
            left = a(act)
            if left is absorbing:
                return absorbing  # type: ignore[no-any-return]
            if left is not (not absorbing):
                err = no_overload(fn, left)
        except CELEvalError as e:
            err = e
        try:
            right = b(act)
        except CELEvalError:
            if err is not None:
                raise err from None
            raise
        if right is absorbing:
            return absorbing  # type: ignore[no-any-return]
        if err is not None:
            raise err
        if right is not (not absorbing):
            raise no_overload(fn, right)
        return not absorbing

    return logic


def _conditional(c: Fn, t: Fn, f: Fn) -> Fn:
    def conditional(act: dict[Any, Any]) -> Any:
        cond = c(act)
        if cond is True:
            return t(act)
        if cond is False:
            return f(act)
        raise no_overload("_?_:_", cond)

    return conditional


def _iter_range(kind: str, v: Any) -> Collection[Any]:
    if v.__class__ is list or v.__class__ is tuple or isinstance(v, dict):
        return v
    raise CELEvalError(f"{kind}() macro needs a list or map, got {type_name(v)}")


def _macro_all_exists(kind: str, target: Fn, var: str, bodies: list[Fn]) -> Fn:
    (pred,) = bodies
    decisive = kind == "exists"  # exists stops at true, all stops at false

    def quantifier(act: dict[Any, Any]) -> bool:
        items = _iter_range(kind, target(act))
        inner = dict(act)
        err: CELEvalError | None = None
        budget = _budget.iteration_budget()
        for x in items:
            budget[0] -= 1
            if budget[0] < 0:
                raise _budget.iterations_exceeded()
            inner[var] = x
            try:
                r = pred(inner)
            except CELEvalError as e:
                err = err or e
                continue
            if r is decisive:
                return decisive  # type: ignore[no-any-return]
            if r is not (not decisive):
                err = err or no_overload(kind, r)
        if err is not None:
            raise err
        return not decisive

    return quantifier


def _macro_exists_one(kind: str, target: Fn, var: str, bodies: list[Fn]) -> Fn:
    (pred,) = bodies

    def exists_one(act: dict[Any, Any]) -> bool:
        items = _iter_range(kind, target(act))
        inner = dict(act)
        count = 0
        budget = _budget.iteration_budget()
        for x in items:
            budget[0] -= 1
            if budget[0] < 0:
                raise _budget.iterations_exceeded()
            inner[var] = x
            r = pred(inner)
            if r is True:
                count += 1
            elif r is not False:
                raise no_overload(kind, r)
        return count == 1

    return exists_one


def _macro_map(kind: str, target: Fn, var: str, bodies: list[Fn]) -> Fn:
    transform = bodies[-1]
    keep = bodies[0] if len(bodies) == 2 else None

    def map_(act: dict[Any, Any]) -> list[Any]:
        items = _iter_range(kind, target(act))
        inner = dict(act)
        out = []
        budget = _budget.iteration_budget()
        for x in items:
            budget[0] -= 1
            if budget[0] < 0:
                raise _budget.iterations_exceeded()
            inner[var] = x
            if keep is not None:
                k = keep(inner)
                if k is False:
                    continue
                if k is not True:
                    raise no_overload("map", k)
            out.append(transform(inner))
        return out

    return map_


def _macro_filter(kind: str, target: Fn, var: str, bodies: list[Fn]) -> Fn:
    (pred,) = bodies

    def filter_(act: dict[Any, Any]) -> list[Any]:
        items = _iter_range(kind, target(act))
        inner = dict(act)
        out = []
        budget = _budget.iteration_budget()
        for x in items:
            budget[0] -= 1
            if budget[0] < 0:
                raise _budget.iterations_exceeded()
            inner[var] = x
            r = pred(inner)
            if r is True:
                out.append(x)
            elif r is not False:
                raise no_overload("filter", r)
        return out

    return filter_


_MACROS = {
    "all": _macro_all_exists,
    "exists": _macro_all_exists,
    "exists_one": _macro_exists_one,
    "map": _macro_map,
    "filter": _macro_filter,
}


class Program:
    """A compiled CEL expression; :meth:`evaluate` it as often as you like."""

    __slots__ = ("_dotted", "_fn", "_qualified_fn", "_strict", "ast", "text")

    def __init__(self, ast: Ast, fn: Fn, dotted: frozenset[str] = frozenset(), strict: bool = False) -> None:
        self.ast = ast
        self.text = ast.text
        self._fn = fn
        self._dotted = dotted
        self._qualified_fn: Fn | None = None
        self._strict = strict

    def evaluate(self, bindings: Mapping[str, Any] | None = None) -> Any:
        """The CEL value of the expression for ``bindings``; CELEvalError if evaluation fails."""
        act = bindings if bindings.__class__ is dict else dict(bindings or {})
        fn = self._fn
        if self._dotted and not self._dotted.isdisjoint(act):
            fn = self._qualified_fn or self._compile_qualified()
        token = _budget.start_evaluation()
        try:
            return fn(act)
        except CELEvalError:
            raise
        except RecursionError:
            raise CELEvalError("evaluation nests too deeply") from None
        except MemoryError:
            raise CELEvalError("evaluation ran out of memory") from None
        except (TypeError, ValueError, AttributeError, OverflowError, KeyError, IndexError) as exc:
            # A Python value that is not a CEL value (e.g. a set) reached an operator.
            raise CELEvalError(f"evaluation failed: {exc}") from exc
        finally:
            _budget.end_evaluation(token)

    def _compile_qualified(self) -> Fn:
        self._qualified_fn = _Compiler(self._strict, self.text, qualified=True).compile(self.ast.root, frozenset())
        return self._qualified_fn

    def __repr__(self) -> str:
        return f"Program({self.text!r})"

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # Closures do not pickle; recompiling from the text is cheap and exact.
        return (compile, (self.text,))


def check_names(ast: Ast, names: Collection[str]) -> None:
    """CELSyntaxError at the first free identifier that is not in ``names`` (nor a type name)."""
    allowed = set(names)
    for ref in references(ast):
        root = ref.path[0].lstrip(".")
        if root in allowed or root in TYPE_NAMES:
            continue
        # qualified declarations ("a.b") cover references a.b...
        if any(".".join(ref.path[:k]) in allowed for k in range(2, len(ref.path) + 1)):
            continue
        in_scope = ", ".join(sorted(allowed)) or "nothing"
        close = difflib.get_close_matches(root, list(allowed), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise CELSyntaxError(
            f"undeclared reference to '{root}' (in scope: {in_scope}){hint}",
            expr=ast.text, line=ref.line, column=ref.column,
        )


def check_patterns(ast: Ast) -> None:
    """CELSyntaxError at the first constant ``matches()`` pattern that RE2 refuses."""
    for node in walk(ast.root):
        if not (isinstance(node, Call) and node.function == "matches"):
            continue
        args = ([node.target] if node.target is not None else []) + list(node.args)
        if len(args) == 2 and isinstance(args[1], Literal) and args[1].value.__class__ is str:
            try:
                matcher(args[1].value)
            except CELEvalError as exc:
                line, column = ast.location(args[1])
                raise CELSyntaxError(str(exc), expr=ast.text, line=line, column=column) from None


def check_cost(ast: Ast) -> None:
    """CELSyntaxError when the expression's estimated cost is over the budget (see ``_budget``)."""
    try:
        _budget.estimate_cost(ast.root)
    except _budget.CostExceeded as exc:
        raise syntax_error(
            f"estimated evaluation cost {exc.cost:,} exceeds the limit of {_budget.COST_LIMIT:,}"
            " (string growth or nested macros); simplify the expression",
            ast.text, exc.node.offset,
        ) from None
    except RecursionError:
        raise syntax_error("expression nests too deeply to estimate its cost", ast.text, ast.root.offset) from None


def compile_ast(ast: Ast, names: Collection[str] | None = None) -> Program:
    """Compile a parsed expression; with ``names``, unknown identifiers and functions and
    invalid constant regular expressions are refused at compile time."""
    if names is not None:
        check_names(ast, names)
        check_patterns(ast)
        check_cost(ast)
    compiler = _Compiler(strict_functions=names is not None, text=ast.text)
    fn = compiler.compile(ast.root, frozenset())
    return Program(ast, fn, frozenset(compiler.dotted_names), strict=names is not None)


def compile(expr: str | Ast, names: Collection[str] | None = None, *, macros: bool = True) -> Program:
    """Parse and compile ``expr`` once; CELSyntaxError (line, column, caret) if it is not valid.

    With ``names`` (the identifiers a policy puts in scope), an undeclared
    identifier or unknown function is a compile-time error listing what is in scope.

    >>> compile("event.status >= 500", names=["event"]).evaluate({"event": {"status": 503}})
    True
    """
    ast = expr if isinstance(expr, Ast) else parse(expr, macros=macros)
    return compile_ast(ast, names)
