"""The columnar operator nodes: booleans, comparisons, strings, arithmetic, field and index reads.

Each follows the evaluator (cel/_eval.py, cel/_functions.py) step by step: arguments
are evaluated left to right and the first error is the call's error; ``&&``/``||``
absorb errors exactly as ``_logic`` does; ``?:`` errors on a condition that is not a
bool. Numbers, strings, bools, timestamps and durations are computed with numpy and
Polars where the result is the same for every value of those kinds; the other rows
go through ``exact_rows``.
"""

from __future__ import annotations

import operator
import re
from typing import Any

import numpy as np
import polars as pl

from activelabel import cel
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
)
from activelabel.engine._columnar_nodes import (
    _UNHASHABLE,
    Batch,
    Node,
    bool_col,
    bool_parts,
    exact_rows,
    first_error,
    merge,
)

_EXACT_INT = 2**53

_CMP_OPS = {"_<_": np.less, "_<=_": np.less_equal, "_>_": np.greater, "_>=_": np.greater_equal}

_CMP_TEXT = {"_<_": "<", "_<=_": "<=", "_>_": ">", "_>=_": ">="}

_ARITH_TEXT = {"_+_": "+", "_-_": "-", "_*_": "*", "_/_": "/", "_%_": "%"}

_STRING_FNS = ("startsWith", "endsWith", "contains", "matches")

_LONG_STRING = 1 << 16  # concatenations longer than this are checked against CEL's size limit by the evaluator

_DUR_MAX = 315_576_000_000 * 1_000_000  # CEL's duration range, in microseconds

_TS_MIN = -62_135_596_800 * 1_000_000  # 0001-01-01T00:00:00Z

_TS_MAX = 253_402_300_799 * 1_000_000 + 999_999  # 9999-12-31T23:59:59.999999Z

_RFC3339 = (r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
            r"(\.[0-9]{1,6})?([zZ]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$")

_SAFE_REGEX = re.compile(
    r"^(\(\?i\))?(?:[A-Za-z0-9 _\-/:;,'\"=<>!@#%&~`^$.|()*+?]|\{[0-9]+(?:,[0-9]*)?\}|\[(?![:^]?\])(?!:)|\]"
    r"|\\[.^$|()\[\]{}*+?\\/\-]|\\[bBdDwWsS])*$"
)

_ASCII_CLASSES = {"\\b": "(?-u:\\b)", "\\B": "(?-u:\\B)", "\\d": "[0-9]", "\\D": "[^0-9]",
                  "\\w": "(?-u:\\w)", "\\W": "(?-u:\\W)", "\\s": "[\\t\\n\\f\\r ]", "\\S": "[^\\t\\n\\f\\r ]"}


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

def _kinds(c: Col) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return c.masks()

def _str_cmp(op: str, a: Col, b: Col, rows: np.ndarray) -> np.ndarray:
    if op == "_==_" and isinstance(b, ConstCol) != isinstance(a, ConstCol):
        col, const = (a, b) if isinstance(b, ConstCol) else (b, a)
        hit: np.ndarray = col.equal_str(const.value) & rows  # type: ignore[attr-defined]
        return hit
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
            if len(strs) <= 8:
                hit = np.zeros(n, dtype=bool)
                for v in strs:
                    hit |= ca.equal_str(v)
            else:
                hit = ca.strs().is_in(strs).to_numpy()
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
