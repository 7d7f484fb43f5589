"""CEL expressions evaluated over a whole batch: one ``Col`` per expression node.

``ExprCompiler.build(ast_node)`` turns a parsed expression into a tree of nodes,
built once per policy (equal subtrees are shared, so ``event.amount`` read by ten
rules is read once per batch). ``node.eval(batch)`` gives its value on every row
as a ``Col`` (engine/_columnar_extract.py): a kind per row (a value of some CEL
type, or an error, told apart as the exact path does: absent-field errors, whose
messages say so, from the rest), with typed payloads.

Each node follows the evaluator (cel/_eval.py) step by step: arguments are
evaluated left to right and the first error is the call's error; ``&&``/``||``
absorb errors exactly as ``_logic`` does; ``?:`` errors on a condition that is not
a bool. Numbers, strings and bools are computed with numpy and Polars where the
result is the same for every value of those kinds; every other row (lists, maps,
timestamps, ints beyond 2**53, a pattern Polars' regex engine reads differently
from RE2) is evaluated by the CEL evaluator itself, one small program over the
row's argument values (``a0 < a1``), remembered per distinct argument tuple. What
no node expresses (macros, map literals) raises ``Untranslatable`` and the whole
expression becomes a ``RowNode``: the evaluator per row.
"""

from __future__ import annotations

import itertools
import operator
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import polars as pl

from activelabel import cel
from activelabel.cel.ast import Call, CreateList, Expr, Ident, Literal, Macro, Select, select_path, walk
from activelabel.cel.emit import PythonEmitter
from activelabel.engine._columnar_extract import (
    K_BOOL,
    K_DBL,
    K_DUR,
    K_ERRA,
    K_ERRF,
    K_INT,
    K_NULL,
    K_OTHER,
    K_STR,
    K_TS,
    Col,
    ConstCol,
    const_kind,
    make_extractor,
)
from activelabel.engine.exact import is_absent_error

_EXACT_INT = 2**53
_CMP_OPS = {"_<_": np.less, "_<=_": np.less_equal, "_>_": np.greater, "_>=_": np.greater_equal}
_CMP_TEXT = {"_<_": "<", "_<=_": "<=", "_>_": ">", "_>=_": ">="}
_ARITH_TEXT = {"_+_": "+", "_-_": "-", "_*_": "*", "_/_": "/", "_%_": "%"}
_STRING_FNS = ("startsWith", "endsWith", "contains", "matches")
_LONG_STRING = 1 << 16  # concatenations longer than this are checked against CEL's size limit by the evaluator
_DUR_MAX = 315_576_000_000 * 1_000_000  # CEL's duration range, in microseconds
_TS_MIN = -62_135_596_800 * 1_000_000  # 0001-01-01T00:00:00Z
_TS_MAX = 253_402_300_799 * 1_000_000 + 999_999  # 9999-12-31T23:59:59.999999Z
# RFC 3339 texts that datetime.fromisoformat (CEL's timestamp()) and Polars' parser read alike
_RFC3339 = (r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
            r"(\.[0-9]{1,6})?([zZ]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$")

# A regex subset that RE2 (CEL's `matches`) and Rust's regex crate (Polars) read the same
# way once `\b`, `\d`, `\w`, `\s` are made ASCII for Rust (RE2's are ASCII): ASCII text,
# groups, alternation, classes, repetition, escaped punctuation. Braces only as `{n}`,
# `{n,}`, `{n,m}`: RE2 reads `{,m}` as text, Rust as a repetition.
_SAFE_REGEX = re.compile(
    r"^(\(\?i\))?(?:[A-Za-z0-9 _\-/:;,'\"=<>!@#%&~`^$.|()*+?]|\{[0-9]+(?:,[0-9]*)?\}|\[(?![:^]?\])(?!:)|\]"
    r"|\\[.^$|()\[\]{}*+?\\/\-]|\\[bBdDwWsS])*$"
)
# RE2's \s is [\t\n\f\r ] (no \v, which Rust's ASCII \s has): spelled out.
_ASCII_CLASSES = {"\\b": "(?-u:\\b)", "\\B": "(?-u:\\B)", "\\d": "[0-9]", "\\D": "[^0-9]",
                  "\\w": "(?-u:\\w)", "\\W": "(?-u:\\W)", "\\s": "[\\t\\n\\f\\r ]", "\\S": "[^\\t\\n\\f\\r ]"}


class Untranslatable(Exception):
    """This expression has no node form: it is evaluated per row as a whole."""


# ---- the batch an expression is evaluated on ------------------------------------------


class Batch:
    """What nodes read while one batch is evaluated: its columns, labels so far, ``now``."""

    def __init__(self, n: int, paths: dict[tuple[str, ...], Col], now: Any) -> None:
        self.n = n
        self.paths = paths  # (root, field, ...) -> the column read from the objects
        self.labels: dict[str, Col] = {}  # label name -> its value column (unset: K_ERRA)
        self.now = now
        self.objects: dict[str, Sequence[Any]] = {}  # root name -> the object per row (events, lookup rows)
        self.memo: dict[int, Col] = {}
        self.label_memo: list[tuple[frozenset[str], int]] = []  # (labels read, memo key)

    def set_label(self, name: str, col: Col) -> None:
        """Label ``name`` is decided: later reads see ``col``, and memos that read it are dropped."""
        self.labels[name] = col
        keep = []
        for deps, key in self.label_memo:
            if name in deps:
                self.memo.pop(key, None)
            else:
                keep.append((deps, key))
        self.label_memo = keep

    def bindings(self, i: int, roots: dict[str, Any], labels: Sequence[str] | None) -> dict[str, Any]:
        """The exact path's bindings for row ``i`` (labels: the ones named, when set; None: every one so far)."""
        out = {name: get(i) for name, get in roots.items()}
        got: dict[str, Any] = {}
        for name in self.labels if labels is None else labels:
            col = self.labels.get(name)
            if col is not None and col.kind[i] > K_ERRF:
                got[name] = col.raw()[i]
        out["labels"] = got
        if self.now is not None:
            out["now"] = self.now
        return out


class Node(ABC):
    """An expression node; ``eval`` gives its column (memoized per batch).

    ``deps``: the labels it reads, so its memo is dropped when one of them is set
    (a rule may read a label declared after its own, which is absent until then).
    """

    __slots__ = ("deps",)
    deps: frozenset[str]
    kids: tuple[str, ...] = ()  # the slots holding child nodes (a node, or a list of nodes)

    def children(self) -> list[Node]:
        out: list[Node] = []
        for name in self.kids:
            got = getattr(self, name)
            out += got if isinstance(got, list) else [got]
        return out

    def replace_child(self, old: Node, new: Node) -> None:
        for name in self.kids:
            got = getattr(self, name)
            if isinstance(got, list):
                setattr(self, name, [new if c is old else c for c in got])
            elif got is old:
                setattr(self, name, new)

    def eval(self, b: Batch) -> Col:
        key = id(self)
        got = b.memo.get(key)
        if got is None:
            got = self.compute(b)
            b.memo[key] = got
            if self.deps:
                b.label_memo.append((self.deps, key))
        return got

    @abstractmethod
    def compute(self, b: Batch) -> Col:
        """This node's column on batch ``b`` (its children through their ``eval``)."""


class ConstNode(Node):
    __slots__ = ("kind", "value")

    def __init__(self, value: Any, kind: int | None = None) -> None:
        self.value = value
        self.kind = const_kind(value) if kind is None else kind

    def compute(self, b: Batch) -> Col:
        return ConstCol(self.value, self.kind, b.n)


class PathNode(Node):
    __slots__ = ("path",)

    def __init__(self, path: tuple[str, ...]) -> None:
        self.path = path

    def compute(self, b: Batch) -> Col:
        return b.paths[self.path]


class LabelNode(Node):
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def compute(self, b: Batch) -> Col:
        got = b.labels.get(self.name)
        if got is None:  # a label declared later (or never set): absent, as `labels` lacks it
            return Col(np.zeros(b.n, dtype=np.int8), raw=[None] * b.n)
        return got


class NowNode(Node):
    __slots__ = ()

    def compute(self, b: Batch) -> Col:
        return ConstCol(b.now, const_kind(b.now), b.n)


# ---- booleans -----------------------------------------------------------------------


def bool_parts(col: Col) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(true, false, absent-error) rows of ``col`` as an operand of ``&&``, ``||``, ``!`` or ``?:``.

    A value that is not a bool is an error there ("no such overload"), absent when it is null.
    """
    kind = col.kind
    isb = kind == K_BOOL
    absent = (kind == K_ERRA) | (kind == K_NULL)
    if not isb.any():
        return isb, isb, absent
    v = col.bools()
    return isb & v, isb & ~v, absent


def bool_col(t: np.ndarray, f: np.ndarray, absent: np.ndarray) -> Col:
    """A boolean column: true rows, false rows, the rest errors (absent where ``absent``)."""
    kind = np.where(t | f, K_BOOL, np.where(absent, K_ERRA, K_ERRF)).astype(np.int8)
    return Col(kind, bools=t)


class NotNode(Node):
    __slots__ = ("a",)
    kids = ("a",)

    def __init__(self, a: Node) -> None:
        self.a = a

    def compute(self, b: Batch) -> Col:
        t, f, ea = bool_parts(self.a.eval(b))
        return bool_col(f, t, ea)


class LogicNode(Node):
    __slots__ = ("a", "b", "is_and")
    kids = ("a", "b")

    def __init__(self, is_and: bool, a: Node, b: Node) -> None:
        self.is_and, self.a, self.b = is_and, a, b

    def compute(self, b: Batch) -> Col:
        at, af, aea = bool_parts(self.a.eval(b))
        bt, bf, bea = bool_parts(self.b.eval(b))
        if self.is_and:
            t, f = at & bt, af | bf
        else:
            t, f = at | bt, af & bf
        a_err = ~(at | af)
        return bool_col(t, f, np.where(a_err, aea, bea))


class CondNode(Node):
    __slots__ = ("c", "f", "t")
    kids = ("c", "t", "f")

    def __init__(self, c: Node, t: Node, f: Node) -> None:
        self.c, self.t, self.f = c, t, f

    def compute(self, b: Batch) -> Col:
        ct, cf, cea = bool_parts(self.c.eval(b))
        tc, fc = self.t.eval(b), self.f.eval(b)
        err = np.where(cea, K_ERRA, K_ERRF).astype(np.int8)
        return merge([(ct, tc), (cf, fc)], err)


def merge(parts: list[tuple[np.ndarray, Col]], rest: np.ndarray) -> Col:
    """Rows of each part's column where its mask holds (first mask wins); ``rest`` kinds elsewhere."""
    kind = rest.copy()
    taken = np.zeros(len(rest), dtype=bool)
    live = []
    for mask, col in parts:
        m = mask & ~taken
        if m.any():
            kind[m] = col.kind[m]
            taken |= m
            live.append((m, col))
    return _MergedCol(kind, live)


class _MergedCol(Col):
    """A column whose rows come from other columns: payloads gathered from them when asked."""

    __slots__ = ("_parts",)

    def __init__(self, kind: np.ndarray, parts: list[tuple[np.ndarray, Col]]) -> None:
        super().__init__(kind)
        self._parts = parts

    def raw(self) -> list[Any]:
        if self._raw is None:
            out: list[Any] = [None] * self.n
            for m, col in self._parts:
                src = col.raw()
                for i in np.flatnonzero(m).tolist():
                    out[i] = src[i]
            self._raw = out
        return self._raw

    def num(self) -> np.ndarray:
        if self._num is None:
            out = np.zeros(self.n, dtype=np.float64)
            for m, col in self._parts:
                if ((col.kind == K_INT) | (col.kind == K_DBL))[m].any():
                    out[m] = col.num()[m]
            self._num = out
        return self._num

    def bools(self) -> np.ndarray:
        if self._bool is None:
            out = np.zeros(self.n, dtype=bool)
            for m, col in self._parts:
                if (col.kind == K_BOOL)[m].any():
                    out[m] = col.bools()[m]
            self._bool = out
        return self._bool

    def i64(self) -> np.ndarray:
        if self._i64 is None:
            out = np.zeros(self.n, dtype=np.int64)
            for m, col in self._parts:
                if ((col.kind == K_TS) | (col.kind == K_DUR))[m].any():
                    out[m] = col.i64()[m]
            self._i64 = out
        return self._i64

    def strs(self) -> pl.Series:
        if self._str is None:
            out = pl.Series([""] * self.n, dtype=pl.String)
            for m, col in self._parts:
                if (col.kind == K_STR)[m].any():
                    out = col.strs().zip_with(pl.Series(m), out)
            self._str = out
        return self._str


# ---- exact evaluation of single operations, per row -----------------------------------

_PROGRAMS: dict[str, tuple[cel.Program, Callable[..., Any]]] = {}


def _program(text: str, arity: int) -> tuple[cel.Program, Callable[..., Any]]:
    """The CEL program of ``text`` over ``a0``, ``a1``..., and its Python form (cel.emit).

    The Python form's value is CEL's whenever it returns; when it raises, the program decides.
    """
    got = _PROGRAMS.get(text)
    if got is None:
        if len(_PROGRAMS) > 10_000:
            _PROGRAMS.clear()
        prog = cel.compile(text)
        names = [f"a{j}" for j in range(arity)]
        ns: dict[str, Any] = {}
        em = PythonEmitter(ns, roots={name: name for name in names})
        src = em.emit(prog.ast)
        body = [line for name in names for line in em.prologue(name)]
        code = f"def fast({', '.join(names)}):\n" + "".join(f"    {line}\n" for line in body) + f"    return {src}\n"
        exec(compile(code, f"<activelabel columnar {text}>", "exec"), ns)  # noqa: S102 - emitted from a parsed CEL text
        got = _PROGRAMS[text] = (prog, ns["fast"])
    return got


_UNHASHABLE = (list, dict)


def _memo_key(v: Any) -> Any:
    """A dict key telling apart every value an operation could treat differently (1, 1.0, True, -0.0)."""
    c = v.__class__
    if c is str:
        return v
    if c is float:
        return (float, repr(v))
    if c is list or c is dict:
        raise TypeError  # unhashable: evaluated without memo
    return (c, v)


def exact_rows(text: str, args: Sequence[Col], rows: np.ndarray, kind: np.ndarray, values: list[Any] | None) -> None:
    """Evaluate ``text`` (over ``a0``, ``a1``...) on ``rows`` exactly, once per distinct argument tuple.

    Writes each row's kind into ``kind`` and, when ``values`` is given, its value there.
    Constant arguments are left out of the memo's key.
    """
    prog, fast = _program(text, len(args))
    names = [f"a{j}" for j in range(len(args))]
    varying = [j for j, a in enumerate(args) if not isinstance(a, ConstCol)]
    fixed = [a.value if isinstance(a, ConstCol) else None for a in args]
    raws = [args[j].raw() for j in varying]
    memo: dict[Any, tuple[int, Any]] = {}
    one = raws[0] if len(raws) == 1 else None
    slot = varying[0] if one is not None else -1
    vals = list(fixed)
    for i in rows.tolist():
        if one is not None:
            x = one[i]
            vals[slot] = x
            key: Any = None if x.__class__ in _UNHASHABLE else _memo_key(x)
        else:
            for j, r in zip(varying, raws):
                vals[j] = r[i]
            key = None if any(vals[j].__class__ in _UNHASHABLE for j in varying) else tuple(
                [_memo_key(vals[j]) for j in varying])
        got = memo.get(key) if key is not None else None
        if got is None:
            try:
                v = fast(*vals)
            except Exception:  # noqa: BLE001 - the Python form cannot decide: the evaluator does
                try:
                    v = prog.evaluate(dict(zip(names, vals)))
                except Exception as exc:  # noqa: BLE001 - a CEL error is a value of the row
                    got = (K_ERRA if is_absent_error(str(exc)) else K_ERRF, None)
                else:
                    got = (const_kind(v), v)
            else:
                got = (const_kind(v), v)
            if key is not None:
                memo[key] = got
        kind[i] = got[0]
        if values is not None:
            values[i] = got[1]


def first_error(cols: Sequence[Col], n: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows where some argument is an error, the kind of the first such error per row)."""
    err = np.zeros(n, dtype=bool)
    kind = np.full(n, K_ERRF, dtype=np.int8)
    for c in cols:
        e = (c.kind <= K_ERRF) & ~err
        if e.any():
            kind[e] = c.kind[e]
            err |= e
    return err, kind


class ExactCallNode(Node):
    """An operation done per row by the evaluator (``size(a0)``, ``a0[a1]``, ``a0.f``), after its arguments."""

    __slots__ = ("args", "text")
    kids = ("args",)

    def __init__(self, text: str, args: list[Node]) -> None:
        self.text, self.args = text, args

    def compute(self, b: Batch) -> Col:
        cols = [a.eval(b) for a in self.args]
        err, kind = first_error(cols, b.n)
        values: list[Any] = [None] * b.n
        rows = np.flatnonzero(~err)
        if len(rows):
            exact_rows(self.text, cols, rows, kind, values)
        return Col(kind, raw=values)


class IndexNode(Node):
    """``a[i]``: a list with an int in range, or a map with a string key it has, read directly; the rest exactly."""

    __slots__ = ("a", "b")
    kids = ("a", "b")

    def __init__(self, a: Node, b: Node) -> None:
        self.a, self.b = a, b

    def compute(self, b: Batch) -> Col:
        ca, cb = self.a.eval(b), self.b.eval(b)
        n = b.n
        err, kind = first_error([ca, cb], n)
        values: list[Any] = [None] * n
        rest = ~err
        cand = rest & (ca.kind == K_OTHER) & ((cb.kind == K_INT) | (cb.kind == K_STR))
        if cand.any() and isinstance(cb, ConstCol) and cb.value.__class__ is int and cb.value >= 0:
            # a constant position: every list long enough is read at C speed
            ra = ca.raw()
            rows = np.flatnonzero(cand).tolist()
            lists = [ra[i] for i in rows]
            if all(c.__class__ is list for c in lists) and min(map(len, lists)) > cb.value:
                for i, v in zip(rows, map(operator.itemgetter(cb.value), lists)):
                    values[i] = v
                rest[rows] = False
                cand[:] = False
        if cand.any():
            ra, rb = ca.raw(), cb.raw()
            for i in np.flatnonzero(cand).tolist():
                c: Any = ra[i]
                k: Any = rb[i]
                in_list = c.__class__ is list and k.__class__ is int and 0 <= k < len(c)
                if in_list or (c.__class__ is dict and k.__class__ is str and k in c):
                    values[i] = c[k]
                    rest[i] = False
        if rest.any():
            exact_rows("a0[a1]", [ca, cb], np.flatnonzero(rest), kind, values)
        return _computed(kind, values, ~err & ~rest)


class SelectNode(Node):
    """``a.f`` on a computed map: its value, or an absent read when the map lacks the key; the rest exactly."""

    __slots__ = ("a", "field")
    kids = ("a",)

    def __init__(self, a: Node, field: str) -> None:
        self.a, self.field = a, field

    def compute(self, b: Batch) -> Col:
        ca = self.a.eval(b)
        n = b.n
        kind = ca.kind.copy()
        values: list[Any] = [None] * n
        ok = kind > K_ERRF
        found = np.zeros(n, dtype=bool)
        maps = ok & (kind == K_OTHER)
        f = self.field
        if maps.any():
            ra = ca.raw()
            for i in np.flatnonzero(maps).tolist():
                c = ra[i]
                if c.__class__ is dict:
                    if f in c:
                        values[i] = c[f]
                        found[i] = True
                    else:
                        kind[i] = K_ERRA  # no such key
                        ok[i] = False
        rest = ok & ~found
        if rest.any():
            exact_rows(f"a0.{f}", [ca], np.flatnonzero(rest), kind, values)
        return _computed(kind, values, found)


class SizeNode(Node):
    """``size(x)``: code points of a string, elements of a list or map; no overload otherwise."""

    __slots__ = ("a",)
    kids = ("a",)

    def __init__(self, a: Node) -> None:
        self.a = a

    def compute(self, b: Batch) -> Col:
        ca = self.a.eval(b)
        kind = ca.kind.copy()
        num = np.zeros(b.n, dtype=np.float64)
        isstr = kind == K_STR
        if isstr.any():
            num[isstr] = ca.strs().str.len_chars().to_numpy()[isstr]
        other = kind == K_OTHER
        if other.any():
            ra = ca.raw()
            rows = np.flatnonzero(other)
            sized = [ra[i] for i in rows.tolist()]
            if all(v.__class__ in _UNHASHABLE for v in sized):
                num[rows] = list(map(len, sized))
                kind[rows] = K_INT
            else:
                values: list[Any] = [None] * b.n
                exact_rows("size(a0)", [ca], rows, kind, values)
                for i in rows.tolist():
                    if kind[i] == K_INT:
                        num[i] = values[i]
        plain = (kind > K_ERRF) & ~isstr & ~other
        kind[plain & (kind == K_NULL)] = K_ERRA
        kind[plain & (kind != K_ERRA)] = K_ERRF
        kind[isstr] = K_INT
        big = (kind == K_INT) & (num >= _EXACT_INT)
        if big.any():  # more elements than a double counts exactly: not in memory, but stay exact
            kind[big] = K_OTHER
            vals: list[Any] = [None] * b.n
            for i in np.flatnonzero(big).tolist():
                vals[i] = int(num[i])
            return _with_values(kind, num, kind == K_INT, vals)
        return Col(kind, num=num)


class TimestampNode(Node):
    """``timestamp(s)``: RFC 3339 strings parsed column-wise (Polars); other texts, ints and the rest exactly."""

    __slots__ = ("a",)
    kids = ("a",)

    def __init__(self, a: Node) -> None:
        self.a = a

    def compute(self, b: Batch) -> Col:
        ca = self.a.eval(b)
        n = b.n
        kind = ca.kind.copy()
        i64 = np.zeros(n, dtype=np.int64)
        isstr = kind == K_STR
        parsed = np.zeros(n, dtype=bool)
        if isstr.any():
            s = ca.strs()
            shaped = isstr & s.str.contains(_RFC3339).to_numpy()
            if shaped.any():
                text = s.str.replace(r"[zZ]$", "+00:00")
                got = text.str.strptime(pl.Datetime("us", "UTC"), format="%Y-%m-%dT%H:%M:%S%.f%:z", strict=False)
                micros = got.cast(pl.Int64)
                ok = micros.is_not_null().to_numpy()
                values = micros.fill_null(0).to_numpy()
                parsed = shaped & ok & (values >= _TS_MIN) & (values <= _TS_MAX)
                i64[parsed] = values[parsed]
                kind[parsed] = K_TS
        ts = ca.kind == K_TS
        if ts.any():
            i64[ts] = ca.i64()[ts]
        rest = (kind > K_ERRF) & ~parsed & ~ts & ((kind == K_STR) | (kind == K_INT) | (kind == K_OTHER))
        plain = (kind > K_ERRF) & ~parsed & ~ts & ~rest
        kind[plain] = np.where(kind == K_NULL, K_ERRA, K_ERRF)[plain]  # no such overload
        if rest.any():
            vals: list[Any] = [None] * n
            exact_rows("timestamp(a0)", [ca], np.flatnonzero(rest), kind, vals)
            col = Col(kind, i64=i64)
            base = col.raw()
            for i in np.flatnonzero(rest).tolist():
                base[i] = vals[i]
            return Col(kind, raw=base)
        return Col(kind, i64=i64)


def _computed(kind: np.ndarray, values: list[Any], direct: np.ndarray) -> Col:
    """A column of values read out of lists and maps on the ``direct`` rows (kinds found from the values)."""
    if direct.any():
        rows = np.flatnonzero(direct)
        got = Col.from_values([values[i] for i in rows.tolist()])
        kind[rows] = got.kind
    return Col(kind, raw=values)


# ---- comparisons ----------------------------------------------------------------------


def _kinds(c: Col) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return c.masks()


def _str_cmp(op: str, a: Col, b: Col, rows: np.ndarray) -> np.ndarray:
    sa = a.value if isinstance(a, ConstCol) else a.strs()
    sb = b.value if isinstance(b, ConstCol) else b.strs()
    if isinstance(sa, str):  # a constant on the left: flip, so the series is the left operand
        sa, sb = sb, sa
        op = {"_<_": "_>_", "_<=_": "_>=_", "_>_": "_<_", "_>=_": "_<=_"}.get(op, op)
    if isinstance(sa, str):  # two constants
        both = {"_==_": sa == sb, "_<_": sa < sb, "_<=_": sa <= sb, "_>_": sa > sb, "_>=_": sa >= sb}[op]
        return rows & bool(both)
    if op == "_==_":
        got = sa == sb
    elif op == "_<_":
        got = sa < sb
    elif op == "_<=_":
        got = sa <= sb
    elif op == "_>_":
        got = sa > sb
    else:
        got = sa >= sb
    out: np.ndarray = got.to_numpy() & rows
    return out


class CompareNode(Node):
    """``<``, ``<=``, ``>``, ``>=``: numbers across int and double, strings, bools; else no overload."""

    __slots__ = ("a", "b", "op")
    kids = ("a", "b")

    def __init__(self, op: str, a: Node, b: Node) -> None:
        self.op, self.a, self.b = op, a, b

    def compute(self, b: Batch) -> Col:
        ca, cb = self.a.eval(b), self.b.eval(b)
        n = b.n
        err, kind = first_error([ca, cb], n)
        ok = ~err
        na, sa, ba, oa = _kinds(ca)
        nb, sb, bb, ob = _kinds(cb)
        result = np.zeros(n, dtype=bool)
        done = np.zeros(n, dtype=bool)
        m = ok & na & nb
        if m.any():
            with np.errstate(invalid="ignore"):
                result |= _CMP_OPS[self.op](ca.num(), cb.num()) & m
            done |= m
        m = ok & sa & sb
        if m.any():
            result |= _str_cmp(self.op, ca, cb, m)
            done |= m
        m = ok & ba & bb
        if m.any():
            result |= _CMP_OPS[self.op](ca.bools().astype(np.int8), cb.bools().astype(np.int8)) & m
            done |= m
        m = ok & (((ca.kind == K_TS) & (cb.kind == K_TS)) | ((ca.kind == K_DUR) & (cb.kind == K_DUR)))
        if m.any():
            result |= _CMP_OPS[self.op](ca.i64(), cb.i64()) & m
            done |= m
        exotic = ok & ~done & (oa | ob)
        if exotic.any():
            vals: list[Any] = [None] * n
            exact_rows(f"a0 {_CMP_TEXT[self.op]} a1", [ca, cb], np.flatnonzero(exotic), kind, vals)
            for i in np.flatnonzero(exotic & (kind == K_BOOL)).tolist():
                result[i] = vals[i]
            done |= exotic
            ok = ok & ~(exotic & (kind != K_BOOL))
        # no overload for the rest: absent when an operand is null
        rest = ok & ~done
        if rest.any():
            kind[rest] = np.where((ca.kind == K_NULL) | (cb.kind == K_NULL), K_ERRA, K_ERRF)[rest]
        kind[done & ok] = K_BOOL
        return Col(kind, bools=result)


class EqualNode(Node):
    """``==`` / ``!=``: CEL's heterogeneous equality (never an error on values)."""

    __slots__ = ("a", "b", "negate")
    kids = ("a", "b")

    def __init__(self, negate: bool, a: Node, b: Node) -> None:
        self.negate, self.a, self.b = negate, a, b

    def compute(self, b: Batch) -> Col:
        ca, cb = self.a.eval(b), self.b.eval(b)
        n = b.n
        err, kind = first_error([ca, cb], n)
        ok = ~err
        result = _equal(ca, cb, ok, n)
        if self.negate:
            result = ~result & ok
        kind[ok] = K_BOOL
        return Col(kind, bools=result)


def _equal(ca: Col, cb: Col, ok: np.ndarray, n: int) -> np.ndarray:
    """CEL ``a == b`` on the rows ``ok`` (neither an error)."""
    na, sa, ba, oa = _kinds(ca)
    nb, sb, bb, ob = _kinds(cb)
    result = np.zeros(n, dtype=bool)
    m = ok & na & nb
    if m.any():
        result |= (ca.num() == cb.num()) & m
    m = ok & sa & sb
    if m.any():
        result |= _str_cmp("_==_", ca, cb, m)
    m = ok & ba & bb
    if m.any():
        result |= (ca.bools() == cb.bools()) & m
    m = ok & (ca.kind == K_NULL) & (cb.kind == K_NULL)
    result |= m
    m = ok & (((ca.kind == K_TS) & (cb.kind == K_TS)) | ((ca.kind == K_DUR) & (cb.kind == K_DUR)))
    if m.any():
        result |= (ca.i64() == cb.i64()) & m
    exotic = ok & (oa | ob)
    if exotic.any():
        kind = np.zeros(n, dtype=np.int8)
        vals: list[Any] = [None] * n
        exact_rows("a0 == a1", [ca, cb], np.flatnonzero(exotic), kind, vals)
        for i in np.flatnonzero(exotic).tolist():
            result[i] = vals[i] is True
    return result


class InListNode(Node):
    """``x in [literal, ...]``: equality with any element."""

    __slots__ = ("a", "items")
    kids = ("a",)

    def __init__(self, a: Node, items: list[Any]) -> None:
        self.a, self.items = a, items

    def compute(self, b: Batch) -> Col:
        ca = self.a.eval(b)
        n = b.n
        kind = ca.kind
        ok = kind > K_ERRF
        result = np.zeros(n, dtype=bool)
        na, sa, ba, oa = _kinds(ca)
        nums = [float(v) for v in self.items if v.__class__ in (int, float)]
        strs = [v for v in self.items if v.__class__ is str]
        bools = [v for v in self.items if v.__class__ is bool]
        if nums and (m := ok & na).any():
            result |= np.isin(ca.num(), nums) & m
        if strs and (m := ok & sa).any():
            col = ca.strs()
            if len(strs) <= 8:
                hit = np.zeros(n, dtype=bool)
                for v in strs:
                    hit |= (col == v).to_numpy()
            else:
                hit = col.is_in(strs).to_numpy()
            result |= hit & m
        if bools and (m := ok & ba).any():
            result |= np.isin(ca.bools(), bools) & m
        if any(v is None for v in self.items):
            result |= ok & (kind == K_NULL)
        exotic = ok & oa
        if exotic.any():
            lst = Col.const(list(self.items), n)
            k2 = np.zeros(n, dtype=np.int8)
            vals: list[Any] = [None] * n
            exact_rows("a0 in a1", [ca, lst], np.flatnonzero(exotic), k2, vals)
            for i in np.flatnonzero(exotic).tolist():
                result[i] = vals[i] is True
        out = kind.copy()
        out[ok] = K_BOOL
        return Col(out, bools=result)


class HasNode(Node):
    """``has(root.a.b)``: true when present, false when the parent map lacks the key, else an error."""

    __slots__ = ("path",)

    def __init__(self, path: tuple[str, ...]) -> None:
        self.path = path

    def compute(self, b: Batch) -> Col:
        col = b.paths[self.path]
        kind = col.kind
        absent = kind == K_ERRA
        nokey = col.nokey() if absent.any() else absent
        t = ~absent
        # a parent that is absent or not a map: `no such key` / `does not support field selection`
        return bool_col(t, nokey, absent)


class LabelHasNode(Node):
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def compute(self, b: Batch) -> Col:
        got = b.labels.get(self.name)
        t = np.zeros(b.n, dtype=bool) if got is None else got.kind > K_ERRF
        return bool_col(t, ~t, t)


# ---- strings --------------------------------------------------------------------------


def polars_regex(pattern: str) -> str | None:
    """``pattern`` for Polars when its reading there is RE2's, else None."""
    if not _SAFE_REGEX.match(pattern):
        return None
    parts = []
    i = 0
    while i < len(pattern):  # escapes pairwise, so an escaped backslash before a `d` stays one
        if pattern[i] == "\\":
            pair = pattern[i:i + 2]
            parts.append(_ASCII_CLASSES.get(pair, pair))
            i += 2
        else:
            parts.append(pattern[i])
            i += 1
    out = "".join(parts)
    try:
        pl.Series(["x"]).str.contains(out)
    except Exception:  # noqa: BLE001 - Rust's regex refuses it: RE2 per value
        return None
    return out


class StringFnNode(Node):
    """``s.startsWith(lit)``, ``endsWith``, ``contains``, ``matches``: Polars on strings, per row otherwise."""

    __slots__ = ("arg", "fn", "rx", "target", "text")
    kids = ("target",)

    def __init__(self, fn: str, target: Node, arg: str, text: str) -> None:
        self.fn, self.target, self.arg, self.text = fn, target, arg, text
        self.rx = polars_regex(arg) if fn == "matches" else None

    def compute(self, b: Batch) -> Col:
        col = self.target.eval(b)
        n = b.n
        kind = col.kind.copy()
        isstr = kind == K_STR
        result = np.zeros(n, dtype=bool)
        if isstr.any():
            result = self._on_strings(col, isstr)
        # not a string: no such overload (absent for null); lists, maps... per row
        other = (kind == K_OTHER)
        if other.any():
            vals: list[Any] = [None] * n
            exact_rows(self.text, [col, Col.const(self.arg, n)], np.flatnonzero(other), kind, vals)
            for i in np.flatnonzero(other & (kind == K_BOOL)).tolist():
                result[i] = vals[i]
        rest = (kind > K_ERRF) & ~isstr & ~other
        kind[rest & (kind == K_NULL)] = K_ERRA
        kind[rest & (kind != K_ERRA)] = K_ERRF
        kind[isstr] = K_BOOL
        return Col(kind, bools=result & (kind == K_BOOL))

    def _on_strings(self, col: Col, isstr: np.ndarray) -> np.ndarray:
        fn, arg = self.fn, self.arg
        if fn != "matches" or self.rx is not None:
            s = col.strs()
            if fn == "startsWith":
                got = s.str.starts_with(arg)
            elif fn == "endsWith":
                got = s.str.ends_with(arg)
            elif fn == "contains":
                got = s.str.contains(arg, literal=True)
            else:
                got = s.str.contains(self.rx, literal=False, strict=True)  # type: ignore[arg-type]
            hits: np.ndarray = got.to_numpy() & isstr
            return hits
        # RE2 itself, once per distinct string
        match = cel.regex_matcher(arg)
        raw = col.raw()
        memo: dict[str, bool] = {}
        out = np.zeros(col.n, dtype=bool)
        for i in np.flatnonzero(isstr).tolist():
            v = raw[i]
            got_b = memo.get(v)
            if got_b is None:
                got_b = memo[v] = bool(match(v))
            out[i] = got_b
        return out


# ---- arithmetic -----------------------------------------------------------------------


class ArithNode(Node):
    """``+ - * / %``: doubles with doubles and ints with ints in numpy, the rest per row."""

    __slots__ = ("a", "b", "op")
    kids = ("a", "b")

    def __init__(self, op: str, a: Node, b: Node) -> None:
        self.op, self.a, self.b = op, a, b

    def compute(self, b: Batch) -> Col:
        ca, cb = self.a.eval(b), self.b.eval(b)
        n = b.n
        op = self.op
        err, kind = first_error([ca, cb], n)
        ok = ~err
        num = np.zeros(n, dtype=np.float64)
        done = np.zeros(n, dtype=bool)
        dd = ok & (ca.kind == K_DBL) & (cb.kind == K_DBL)
        if dd.any() and op != "_%_":
            x, y = ca.num(), cb.num()
            with np.errstate(all="ignore"):
                got = {"_+_": np.add, "_-_": np.subtract, "_*_": np.multiply, "_/_": np.divide}[op](x, y)
            num[dd] = got[dd]
            kind[dd] = K_DBL
            done |= dd
        ii = ok & (ca.kind == K_INT) & (cb.kind == K_INT)
        if ii.any():
            x, y = ca.num(), cb.num()
            with np.errstate(all="ignore"):
                if op in ("_+_", "_-_"):
                    got = x + y if op == "_+_" else x - y
                    fits = ii & (np.abs(got) < _EXACT_INT)
                elif op == "_*_":
                    got = x * y
                    fits = ii & (np.abs(got) < _EXACT_INT)
                else:  # truncating division and C-style modulus, by exact int64
                    xi, yi = x.astype(np.int64), y.astype(np.int64)
                    nz = yi != 0
                    safe = np.where(nz, yi, 1)
                    q = np.abs(xi) // np.abs(safe)
                    if op == "_/_":
                        got = np.where((xi < 0) != (safe < 0), -q, q).astype(np.float64)
                    else:
                        r = np.abs(xi) % np.abs(safe)
                        got = np.where(xi < 0, -r, r).astype(np.float64)
                    fits = ii & nz
            num[fits] = got[fits]
            kind[fits] = K_INT
            done |= fits
        i64 = None
        if op in ("_+_", "_-_"):
            ka, kb = ca.kind, cb.kind
            tt = ok & (ka == K_TS) & (kb == K_TS) if op == "_-_" else np.zeros(n, dtype=bool)
            td = ok & (ka == K_TS) & (kb == K_DUR)
            dt = ok & (ka == K_DUR) & (kb == K_TS) if op == "_+_" else np.zeros(n, dtype=bool)
            uu = ok & (ka == K_DUR) & (kb == K_DUR)
            timed = tt | td | dt | uu
            if timed.any():
                x, y = ca.i64(), cb.i64()
                got = x + y if op == "_+_" else x - y
                i64 = np.where(timed, got, 0)
                to_ts = td | dt
                in_range = np.where(to_ts, (got >= _TS_MIN) & (got <= _TS_MAX), np.abs(got) <= _DUR_MAX)
                kind[timed] = np.where(to_ts, K_TS, K_DUR)[timed]
                kind[timed & ~in_range] = K_ERRF  # timestamp / duration out of range
                done |= timed
        vals: list[Any] | None = None
        valued = np.zeros(n, dtype=bool)
        if op == "_+_":
            ss = ok & (ca.kind == K_STR) & (cb.kind == K_STR)
            if ss.any():
                # joined by Polars; very long results are left to the evaluator's size check
                joined = ca.strs() + cb.strs()
                short = ss & (joined.str.len_bytes().to_numpy() <= _LONG_STRING)
                kind[short] = K_STR
                done |= short
                if not (ok & ~done).any() and i64 is None:
                    return Col(kind, num=num, strs=joined)
                vals = [None] * n
                got = joined.to_list()
                for i in np.flatnonzero(short).tolist():
                    vals[i] = got[i]
                valued |= short
        rest = ok & ~done
        if rest.any():
            # no overload between these kinds (absent when one is null); lists, timestamps...: per row
            same = ii | (ok & (ca.kind == K_STR) & (cb.kind == K_STR) & (op == "_+_"))
            plain = rest & ~same & (ca.kind != K_OTHER) & (cb.kind != K_OTHER)
            if plain.any():
                kind[plain] = np.where((ca.kind == K_NULL) | (cb.kind == K_NULL), K_ERRA, K_ERRF)[plain]
                rest &= ~plain
        if rest.any():
            if vals is None:
                vals = [None] * n
            exact_rows(f"a0 {_ARITH_TEXT[op]} a1", [ca, cb], np.flatnonzero(rest), kind, vals)
            valued |= rest
        if vals is None:
            return Col(kind, num=num, i64=i64)
        if i64 is not None:
            col = Col(kind, num=num, i64=i64)
            base = col.raw()
            for i in np.flatnonzero(valued).tolist():
                base[i] = vals[i]
            return Col(kind, raw=base)
        return _with_values(kind, num, done & ~valued, vals)


def _with_values(kind: np.ndarray, num: np.ndarray, numeric: np.ndarray, vals: list[Any]) -> Col:
    """A column of Python values ``vals``, with the ``numeric`` rows filled in from ``num``."""
    for i in np.flatnonzero(numeric).tolist():
        vals[i] = int(num[i]) if kind[i] == K_INT else float(num[i])
    return Col(kind, raw=vals)


class NegNode(Node):
    __slots__ = ("a",)
    kids = ("a",)

    def __init__(self, a: Node) -> None:
        self.a = a

    def compute(self, b: Batch) -> Col:
        ca = self.a.eval(b)
        kind = ca.kind.copy()
        isnum = (kind == K_INT) | (kind == K_DBL)
        num = np.where(isnum, -ca.num(), 0.0) if isnum.any() else np.zeros(b.n)
        isdur = kind == K_DUR
        if isdur.any():  # the range is symmetric: a negated duration stays in it
            if (isnum | isdur | (kind <= K_ERRF)).all():
                return Col(kind, num=num, i64=np.where(isdur, -ca.i64(), 0))
            isnum = isnum | isdur
        rest = (kind > K_ERRF) & ~isnum
        plain = rest & (kind != K_OTHER)
        if plain.any():
            kind[plain] = np.where(kind == K_NULL, K_ERRA, K_ERRF)[plain]
            rest &= ~plain
        if rest.any():
            vals: list[Any] = [None] * b.n
            exact_rows("-a0", [ca], np.flatnonzero(rest), kind, vals)
            return _with_values(kind, num, isnum, vals)
        return Col(kind, num=num)


# ---- whole expressions per row --------------------------------------------------------


_MAX_STEPS = 100_000  # the evaluator's comprehension steps per evaluation (cel._budget.MAX_ITERATIONS)


class MacroNode(Node):
    """``x.exists(v, p)``, ``all``, ``exists_one`` over every element of every row at once.

    The elements of the lists (the keys of maps) become the rows of a child batch, where
    ``v`` is read like a root and the outer fields are the parent row's; the body is one
    column there, folded back per parent row in element order as ``_macro_all_exists``
    and ``_macro_exists_one`` fold it (the first error is the one reported, the step
    budget ends what the decisive element did not). Only for expressions with this one
    macro: several share one step budget per evaluation, and go per row instead.
    """

    __slots__ = ("body", "kind", "target", "var", "var_paths")
    kids = ("target",)

    def __init__(self, kind: str, target: Node, var: str, body: Node, var_paths: list[tuple[str, ...]]) -> None:
        self.kind, self.target, self.var, self.body, self.var_paths = kind, target, var, body, var_paths

    def compute(self, b: Batch) -> Col:
        t = self.target.eval(b)
        n = b.n
        kind = t.kind.copy()
        result = np.zeros(n, dtype=bool)
        raw = t.raw() if (kind == K_OTHER).any() else None
        rows = np.flatnonzero(kind > K_ERRF).tolist()
        targets: list[Any] = [raw[i] for i in rows] if raw is not None else [None] * len(rows)
        iterable = [v.__class__ is list or isinstance(v, dict) for v in targets]
        if not all(iterable):
            for i, ok in zip(rows, iterable):
                if not ok:
                    kind[i] = K_ERRF  # "<macro>() macro needs a list or map"
            targets = [v for v, ok in zip(targets, iterable) if ok]
            rows = [i for i, ok in zip(rows, iterable) if ok]
        lens = np.fromiter(map(len, targets), dtype=np.int64, count=len(targets))
        items_of = list(itertools.chain.from_iterable(targets))  # list elements, map keys
        listed = (kind > K_ERRF)
        pidx = np.repeat(np.array(rows, dtype=np.int64), lens)
        m = len(items_of)
        if m:
            child = _child_batch(b, pidx, self.var, items_of, self.var_paths)
            got = self.body.eval(child)
            et, ef, eabsent = bool_parts(got)
        else:
            et = ef = eabsent = np.zeros(0, dtype=bool)
        eerr = ~(et | ef)
        # position of each element within its row's list
        counts = np.bincount(pidx, minlength=n) if m else np.zeros(n, dtype=np.int64)
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
        pos = np.arange(m) - starts[pidx] if m else np.zeros(0, dtype=np.int64)
        in_budget = pos < _MAX_STEPS
        over = counts > _MAX_STEPS
        first_err = np.full(n, -1, dtype=np.int64)
        bad = np.flatnonzero(eerr & in_budget)
        if len(bad):
            uniq_p, first = np.unique(pidx[bad], return_index=True)
            first_err[uniq_p] = bad[first]
        if self.kind == "exists_one":
            hits = np.bincount(pidx[et & in_budget], minlength=n) if m else np.zeros(n, dtype=np.int64)
            result = hits == 1
            failed = first_err >= 0
            budget = over & ~failed
        else:
            decisive = et if self.kind == "exists" else ef
            found = np.zeros(n, dtype=bool)
            if m:
                found[np.unique(pidx[decisive & in_budget])] = True
            result = found if self.kind == "exists" else ~found
            failed = ~found & (first_err >= 0)
            budget = ~found & over
        out = kind
        done = listed & ~failed & ~budget
        out[done] = K_BOOL
        fe = listed & failed & ~budget
        if fe.any():
            idx = first_err[fe]
            out[fe] = np.where(eabsent[idx], K_ERRA, K_ERRF)
        out[listed & budget] = K_ERRF  # comprehension steps exceed the limit
        return Col(out, bools=result & done)


def _child_batch(b: Batch, pidx: np.ndarray, var: str, items: list[Any], var_paths: list[tuple[str, ...]]) -> Batch:
    """The batch whose rows are ``items`` (each under its parent row ``pidx``): ``var`` paths read from them."""
    paths = _ChildPaths(b, pidx)
    cols, _odd = make_extractor([p[1:] for p in var_paths if len(p) > 1])(items) if any(
        len(p) > 1 for p in var_paths) else ([], [])
    for p, raw in zip([p for p in var_paths if len(p) > 1], cols):
        paths[p] = Col.from_values(raw)
    paths[(var,)] = Col.from_values(items)
    child = Batch(len(items), paths, b.now)
    child.labels = _ChildLabels(b, pidx)
    return child


class _ChildPaths(dict[tuple[str, ...], Col]):
    """A child batch's fields: its own, and the parent row's for the rest (gathered on first read)."""

    def __init__(self, parent: Batch, pidx: np.ndarray) -> None:
        super().__init__()
        self.parent, self.pidx = parent, pidx

    def __missing__(self, key: tuple[str, ...]) -> Col:
        got = self[key] = _Gathered(self.parent.paths[key], self.pidx)
        return got


class _ChildLabels(dict[str, Col]):
    def __init__(self, parent: Batch, pidx: np.ndarray) -> None:
        super().__init__()
        self.parent, self.pidx = parent, pidx

    def get(self, key: str, default: Any = None) -> Any:
        if key not in self:
            col = self.parent.labels.get(key)
            if col is None:
                return default
            self[key] = _Gathered(col, self.pidx)
        return self[key]


class DistinctNode(Node):
    """An expression of one field, evaluated once per distinct value of that field and gathered back.

    Used where the expression has per-row work (``size``, ``split``, ``[i]``...) and the
    field repeats (paths, user agents, services); a batch of mostly distinct values
    skips the detour.
    """

    __slots__ = ("inner", "path")
    kids = ("inner",)

    def __init__(self, inner: Node, path: tuple[str, ...]) -> None:
        self.inner, self.path = inner, path

    def compute(self, b: Batch) -> Col:
        col = b.paths[self.path]
        raw = col.raw()
        n = b.n
        index: dict[Any, int] = {}
        uniq: list[Any] = []
        codes = np.empty(n, dtype=np.int64)
        if (col.kind == K_OTHER).any() and any(v.__class__ in _UNHASHABLE or isinstance(v, dict) for v in raw):
            return self.inner.eval(b)  # lists and maps do not repeat by identity: nothing to share
        kinds = col.kind
        if ((kinds == K_STR) | (kinds == K_ERRA) | (kinds == K_NULL)).all():
            # strings, sentinels and None never collide as keys: the values themselves will do
            setdefault = index.setdefault
            codes = np.fromiter(map(setdefault, raw, itertools.count()), dtype=np.int64, count=n)
            if len(index) * 2 > n:
                return self.inner.eval(b)
            order = sorted(index.items(), key=lambda kv: kv[1])
            uniq = [k for k, _c in order]
            dense = np.empty(max(index.values()) + 1 if index else 0, dtype=np.int64)
            dense[[c for _k, c in order]] = np.arange(len(order))
            codes = dense[codes]
        else:
            for i, v in enumerate(raw):
                key = _memo_key(v)
                c = index.get(key)
                if c is None:
                    c = index[key] = len(uniq)
                    uniq.append(v)
                codes[i] = c
        if len(uniq) * 2 > n:
            return self.inner.eval(b)
        mini_col = Col(col.kind[np.unique(codes, return_index=True)[1]], raw=uniq)
        mini = Batch(len(uniq), {self.path: mini_col}, b.now)
        got = self.inner.eval(mini)
        return _Gathered(got, codes)


class _Gathered(Col):
    """Rows of a column picked by index (``codes``): payloads gathered when asked."""

    __slots__ = ("_codes", "_src")

    def __init__(self, src: Col, codes: np.ndarray) -> None:
        super().__init__(src.kind[codes])
        self._src, self._codes = src, codes

    def raw(self) -> list[Any]:
        if self._raw is None:
            src = self._src.raw()
            self._raw = [src[c] for c in self._codes.tolist()]
        return self._raw

    def num(self) -> np.ndarray:
        if self._num is None:
            self._num = self._src.num()[self._codes]
        return self._num

    def bools(self) -> np.ndarray:
        if self._bool is None:
            self._bool = self._src.bools()[self._codes]
        return self._bool

    def strs(self) -> pl.Series:
        if self._str is None:
            self._str = self._src.strs().gather(self._codes)
        return self._str

    def i64(self) -> np.ndarray:
        if self._i64 is None:
            self._i64 = self._src.i64()[self._codes]
        return self._i64


def distinct_inputs(node: Node, memo: dict[int, frozenset[tuple[str, ...]] | None]) -> frozenset[tuple[str, ...]] | None:
    """The field paths an expression reads, or None when it reads labels or whole rows."""
    key = id(node)
    if key in memo:
        return memo[key]
    got: frozenset[tuple[str, ...]] | None
    if isinstance(node, (PathNode, HasNode)):
        got = frozenset([node.path])
    elif isinstance(node, (LabelNode, LabelHasNode, RowNode, DistinctNode, MacroNode)):
        got = None  # labels, whole rows, a macro body's outer reads: not one field's function
    else:
        acc: set[tuple[str, ...]] = set()
        got = frozenset()
        for c in node.children():
            sub = distinct_inputs(c, memo)
            if sub is None:
                got = None
                break
            acc |= sub
        else:
            got = frozenset(acc)
    memo[key] = got
    return got


def _costly(node: Node) -> bool:
    """Whether evaluating ``node`` has per-row work (the evaluator, or RE2 in Python)."""
    if isinstance(node, (ExactCallNode, RowNode, IndexNode, SelectNode)) or (isinstance(node, StringFnNode) and node.fn == "matches"
                                                       and node.rx is None):
        return True
    return any(_costly(c) for c in node.children())


def share_distinct(root: Node, wrapped: dict[int, Node], memo: dict[int, frozenset[tuple[str, ...]] | None]) -> Node:
    """``root`` with each largest subtree of one field that has per-row work evaluated per distinct value."""
    key = id(root)
    if key in wrapped:
        return wrapped[key]
    inputs = distinct_inputs(root, memo)
    if inputs is not None and len(inputs) == 1 and _costly(root):
        (path,) = inputs
        node: Node = DistinctNode(root, path)
        node.deps = root.deps
        wrapped[key] = node
        return node
    wrapped[key] = root
    for c in root.children():
        new = share_distinct(c, wrapped, memo)
        if new is not c:
            root.replace_child(c, new)
    return root


class RowNode(Node):
    """A whole expression evaluated per row (macros, maps, comprehension variables).

    Its Python form (cel.emit, over the row's objects) first; the CEL evaluator when that raises.
    """

    __slots__ = ("fast", "labels", "prog", "roots")

    def __init__(self, prog: cel.Program, roots: list[str], labels: list[str] | None) -> None:
        self.prog, self.roots, self.labels = prog, roots, labels
        params = [f"_r{j}" for j in range(len(roots))]
        ns: dict[str, Any] = {}
        em = PythonEmitter(ns, roots={**dict(zip(roots, params)), "labels": "_labels", "now": "_now"})
        src = em.emit(prog.ast)
        body = [line for root in [*roots, "labels"] for line in em.prologue(root)]
        code = (f"def fast({', '.join([*params, '_labels', '_now'])}):\n" + "".join(f"    {line}\n" for line in body)
                + f"    return {src}\n")
        exec(compile(code, "<activelabel columnar row>", "exec"), ns)  # noqa: S102 - emitted from a parsed policy
        self.fast = ns["fast"]

    def compute(self, b: Batch) -> Col:
        n = b.n
        kind = np.zeros(n, dtype=np.int8)
        values: list[Any] = [None] * n
        objects = [b.objects[name] for name in self.roots]
        getters = {name: b.objects[name].__getitem__ for name in self.roots}
        evaluate, fast, now = self.prog.evaluate, self.fast, b.now
        wanted = self.labels
        label_cols = [(name, col.kind, col.raw()) for name, col in b.labels.items()
                      if wanted is None or name in wanted]
        for i in range(n):
            labels = {name: raw[i] for name, k, raw in label_cols if k[i] > K_ERRF}
            try:
                v = fast(*[objs[i] for objs in objects], labels, now)
            except Exception:  # noqa: BLE001 - the Python form cannot decide: the evaluator does
                try:
                    v = evaluate(b.bindings(i, getters, wanted))
                except Exception as exc:  # noqa: BLE001 - a CEL error is a value of the row
                    kind[i] = K_ERRA if is_absent_error(str(exc)) else K_ERRF
                    continue
            kind[i] = const_kind(v)
            values[i] = v
        return Col(kind, raw=values)


# ---- building -------------------------------------------------------------------------


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


__all__ = ["Batch", "Col", "ExprCompiler", "Node", "RowNode", "Untranslatable", "bool_col", "bool_parts",
           "exact_rows", "share_distinct"]
