"""CEL parser: tokens -> :class:`~activelabel.cel._ast.Ast`.

Recursive descent following the grammar of google/cel-spec (``doc/langdef.md``)
with precedence climbing for the binary operators. Macros (``has``, ``all``,
``exists``, ``exists_one``, ``map``, ``filter``) are recognised here, as in
cel-go. Nesting deeper than :data:`MAX_DEPTH` is refused with a clear error
instead of a Python ``RecursionError``, and so is text longer than
:data:`MAX_EXPR_SIZE` code points (cel-go's limits: 250 and 100,000).
"""

from __future__ import annotations

import sys

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
)
from activelabel.cel._lexer import INT64_MAX, RESERVED, Token, syntax_error, tokenize
from activelabel.cel._pii_ext import NAMESPACES

MAX_DEPTH = 250
# cel-go's default ExpressionSizeCodePointLimit: longer text is refused before it is tokenized,
# so one rule cannot make validation take minutes (a 20,000-term `&&` chain is ~600,000).
MAX_EXPR_SIZE = 100_000
# Nesting and operator chains are each limited to MAX_DEPTH; combined they could
# still build a tree too deep to evaluate recursively, hence a limit on the whole.
MAX_TREE_DEPTH = 1000

# Each nesting level costs a handful of Python frames; make sure MAX_DEPTH
# levels fit (for parsing and for evaluating the resulting tree).
if sys.getrecursionlimit() < 12000:
    sys.setrecursionlimit(12000)

_BINARY = {
    "||": (1, "_||_"),
    "&&": (2, "_&&_"),
    "==": (3, "_==_"),
    "!=": (3, "_!=_"),
    "<": (3, "_<_"),
    "<=": (3, "_<=_"),
    ">": (3, "_>_"),
    ">=": (3, "_>=_"),
    "in": (3, "@in"),
    "+": (4, "_+_"),
    "-": (4, "_-_"),
    "*": (5, "_*_"),
    "/": (5, "_/_"),
    "%": (5, "_%_"),
}
_MACROS_2 = {"all", "exists", "exists_one", "filter"}


class _Parser:
    def __init__(self, text: str, macros: bool) -> None:
        self.text = text
        self.toks = tokenize(text)
        self.i = 0
        self.depth = 0
        self.macros = macros

    # ---- token helpers -------------------------------------------------
    def peek(self) -> Token:
        return self.toks[self.i]

    def at_op(self, op: str) -> bool:
        t = self.toks[self.i]
        return t.kind == "OP" and t.text == op

    def advance(self) -> Token:
        t = self.toks[self.i]
        self.i += 1
        return t

    def error(self, message: str, tok: Token | None = None) -> Exception:
        tok = tok or self.peek()
        return syntax_error(message, self.text, tok.offset)

    def describe(self, tok: Token) -> str:
        return "end of expression" if tok.kind == "EOF" else repr(tok.text)

    def expect(self, op: str, context: str) -> Token:
        if not self.at_op(op):
            tok = self.peek()
            raise self.error(f"expected '{op}' {context}, found {self.describe(tok)}")
        return self.advance()

    # ---- grammar -------------------------------------------------------
    def parse(self) -> Expr:
        e = self.expr()
        tok = self.peek()
        if tok.kind != "EOF":
            raise self.error(f"unexpected {self.describe(tok)} after a complete expression")
        return e

    def expr(self) -> Expr:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(f"expression nests too deeply (more than {MAX_DEPTH} levels); split or simplify it")
        cond = self.binary(1)
        if self.at_op("?"):
            q = self.advance()
            then = self.binary(1)
            self.expect(":", "in conditional 'c ? a : b'")
            other = self.expr()
            cond = Call("_?_:_", [cond, then, other], q.offset)
        self.depth -= 1
        return cond

    def binary(self, min_prec: int) -> Expr:
        left = self.unary()
        chain = 0
        while True:
            tok = self.peek()
            if tok.kind == "OP" or (tok.kind == "IDENT" and tok.text == "in"):
                entry = _BINARY.get(tok.text)
            else:
                entry = None
            if entry is None or entry[0] < min_prec:
                return left
            prec, fn = entry
            if fn in ("_&&_", "_||_"):
                left = self.logic_chain(left, tok, prec, fn)
                continue
            chain += 1
            if chain > MAX_DEPTH:
                raise self.error(f"more than {MAX_DEPTH} chained operators; split the expression")
            self.advance()
            right = self.binary(prec + 1)
            left = Call(fn, [left, right], tok.offset)

    def logic_chain(self, first: Expr, tok: Token, prec: int, fn: str) -> Expr:
        """``a && b && c ...`` as a balanced tree (as cel-go does), so long rule conditions stay shallow."""
        operands = [first]
        ops: list[int] = []
        while self.peek().kind == "OP" and self.peek().text == tok.text:
            ops.append(self.advance().offset)
            operands.append(self.binary(prec + 1))
        return _balance(fn, operands, ops)
    def unary(self) -> Expr:
        tok = self.peek()
        if tok.kind == "OP" and tok.text == "!":
            n = 0
            while self.at_op("!"):
                self.advance()
                n += 1
            e = self.member(self.primary())
            return Call("!_", [e], tok.offset) if n % 2 else e
        if tok.kind == "OP" and tok.text == "-":
            n = 0
            while self.at_op("-"):
                self.advance()
                n += 1
            lit = self.peek()
            if lit.kind in ("INT", "DOUBLE"):
                # A minus directly before a number is part of the literal (so
                # -9223372036854775808 is in range).
                self.advance()
                prim: Expr = self.number(lit, negative=True, offset=self.toks[self.i - 2].offset)
                n -= 1
            else:
                prim = self.primary()
            e = self.member(prim)
            return Call("-_", [e], tok.offset) if n % 2 else e
        return self.member(self.primary())

    def number(self, tok: Token, negative: bool = False, offset: int | None = None) -> Literal:
        v = tok.value
        if tok.kind == "INT":
            assert isinstance(v, int)
            v = -v if negative else v
            if v > INT64_MAX or v < -INT64_MAX - 1:
                raise self.error(f"int literal {'-' if negative else ''}{tok.text} is out of the int64 range", tok)
        elif negative:
            assert isinstance(v, float)
            v = -v
        return Literal(v, tok.offset if offset is None else offset)

    def member(self, e: Expr) -> Expr:
        steps = 0
        while True:
            steps += 1
            if steps > MAX_DEPTH:
                raise self.error(f"more than {MAX_DEPTH} chained selections, indexes or calls; split the expression")
            if self.at_op("."):
                dot = self.advance()
                name = self.peek()
                if name.kind == "QIDENT":  # `content-type`: a quoted field name, never a method
                    self.advance()
                    e = Select(e, str(name.value), dot.offset)
                    continue
                if name.kind != "IDENT":
                    raise self.error(f"expected a field or method name after '.', found {self.describe(name)}")
                self.advance()
                if self.at_op("("):
                    self.advance()
                    args = self.args(")")
                    e = self.method(e, name, args)
                else:
                    e = Select(e, name.text, dot.offset)
            elif self.at_op("["):
                br = self.advance()
                idx = self.expr()
                self.expect("]", "to close the index")
                e = Call("_[_]", [e, idx], br.offset)
            elif self.at_op("{") and _type_name(e) is not None:
                br = self.advance()
                e = CreateStruct(_type_name(e) or "", self.field_inits(), br.offset)
            else:
                return e

    def method(self, target: Expr, name: Token, args: list[Expr]) -> Expr:
        fn = name.text
        if self.macros and ((fn in _MACROS_2 and len(args) == 2) or (fn == "map" and len(args) in (2, 3))):
            var = args[0]
            if not isinstance(var, Ident) or var.name.startswith("."):
                raise syntax_error(f"{fn}() macro: the first argument must be a simple name", self.text, var.offset)
            return Macro(fn, target, var.name, args[1:], name.offset)
        if isinstance(target, Ident) and target.name in NAMESPACES:
            return Call(f"{target.name}.{fn}", args, name.offset)  # a namespaced function: pii.find(x)
        return Call(fn, args, name.offset, target)

    def args(self, close: str) -> list[Expr]:
        out: list[Expr] = []
        if self.at_op(close):
            self.advance()
            return out
        while True:
            out.append(self.expr())
            if self.at_op(","):
                self.advance()
                continue
            self.expect(close, "to close the argument list")
            return out

    def field_inits(self) -> list[tuple[str, Expr]]:
        fields: list[tuple[str, Expr]] = []
        while not self.at_op("}"):
            name = self.peek()
            if name.kind != "IDENT":
                raise self.error(f"expected a field name, found {self.describe(name)}")
            self.advance()
            self.expect(":", "after the field name")
            fields.append((name.text, self.expr()))
            if not self.at_op(","):
                break
            self.advance()
        self.expect("}", "to close the message literal")
        return fields

    def primary(self) -> Expr:
        tok = self.peek()
        kind = tok.kind
        if kind in ("INT", "DOUBLE"):
            self.advance()
            return self.number(tok)
        if kind in ("UINT", "STRING", "BYTES"):
            self.advance()
            return Literal(tok.value, tok.offset)
        if kind == "IDENT":
            self.advance()
            name = tok.text
            if name in ("true", "false"):
                return Literal(name == "true", tok.offset)
            if name == "null":
                return Literal(None, tok.offset)
            if name in RESERVED or name == "in":
                raise self.error(f"'{name}' is a reserved word and cannot be used as an identifier", tok)
            if self.at_op("("):
                self.advance()
                args = self.args(")")
                if self.macros and name == "has" and len(args) == 1:
                    arg = args[0]
                    if not isinstance(arg, Select) or arg.test_only:
                        raise syntax_error("has() macro: the argument must be a field selection like has(a.b)",
                                           self.text, arg.offset)
                    return Select(arg.operand, arg.field, tok.offset, test_only=True)
                return Call(name, args, tok.offset)
            return Ident(name, tok.offset)
        if kind == "OP":
            if tok.text == ".":
                self.advance()
                ident = self.peek()
                if ident.kind != "IDENT":
                    raise self.error(f"expected an identifier after leading '.', found {self.describe(ident)}")
                self.advance()
                if self.at_op("("):
                    self.advance()
                    return Call(ident.text, self.args(")"), tok.offset)
                return Ident("." + ident.text, tok.offset)
            if tok.text == "(":
                self.advance()
                e = self.expr()
                self.expect(")", "to close '('")
                return e
            if tok.text == "[":
                self.advance()
                elems = self.args("]")
                return CreateList(elems, tok.offset)
            if tok.text == "{":
                self.advance()
                return CreateMap(self.map_inits(), tok.offset)
        if kind == "EOF":
            raise self.error("unexpected end of expression: an operand is missing")
        raise self.error(f"unexpected {self.describe(tok)}: expected a value, name or '('")

    def map_inits(self) -> list[tuple[Expr, Expr]]:
        entries: list[tuple[Expr, Expr]] = []
        while not self.at_op("}"):
            k = self.expr()
            self.expect(":", "between map key and value")
            v = self.expr()
            entries.append((k, v))
            if not self.at_op(","):
                break
            self.advance()
        self.expect("}", "to close the map literal")
        return entries


def _balance(fn: str, operands: list[Expr], offsets: list[int]) -> Expr:
    """Balanced tree of ``fn`` over operands; ``offsets[i]`` is the operator between operands i and i+1."""
    if len(operands) == 1:
        return operands[0]
    mid = len(operands) // 2
    left = _balance(fn, operands[:mid], offsets[: mid - 1])
    right = _balance(fn, operands[mid:], offsets[mid:])
    return Call(fn, [left, right], offsets[mid - 1])


def _type_name(e: Expr) -> str | None:
    """``a.b.C`` -> "a.b.C" when ``e`` is a plain (possibly qualified) name."""
    parts: list[str] = []
    while isinstance(e, Select) and not e.test_only:
        parts.append(e.field)
        e = e.operand
    if isinstance(e, Ident):
        parts.append(e.name)
        return ".".join(reversed(parts))
    return None


def parse(text: str, *, macros: bool = True) -> Ast:
    """Parse CEL ``text``; raise CELSyntaxError (line, column, caret excerpt) if it is not valid CEL.

    >>> parse("event.status >= 500").root
    Call(_>=_(Select(Ident(event).status), Literal(500)))
    """
    if len(text) > MAX_EXPR_SIZE:
        raise syntax_error(f"expression is {len(text):,} characters long, more than the limit of {MAX_EXPR_SIZE:,};"
                           " split it into several rules or move the values into a lookup table", text, 0)
    root = _Parser(text, macros).parse()
    if _tree_depth(root) > MAX_TREE_DEPTH:
        raise syntax_error(f"expression is nested too deeply (tree deeper than {MAX_TREE_DEPTH}); split it",
                           text, 0)
    return Ast(root, text)


def _tree_depth(root: Expr) -> int:
    """Depth of the tree, computed without recursion."""
    deepest = 0
    stack = [(root, 1)]
    while stack:
        node, d = stack.pop()
        if d > deepest:
            deepest = d
        stack.extend((c, d + 1) for c in node.children())
    return deepest
