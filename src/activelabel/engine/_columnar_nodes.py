"""The base of the columnar expression nodes: the batch they read, the node, exact per-row evaluation.

``Batch`` holds one batch's columns (fields read from objects, labels decided so far,
``now``); a ``Node`` computes its ``Col`` once per batch (memoized, and dropped when a
label it reads is decided). ``exact_rows`` is how a node evaluates what numpy and
Polars do not compute exactly: the CEL evaluator's own code on those rows (the Python
form cel.emit gives it, the evaluator where that raises), once per distinct argument
tuple. Node kinds are in ``_columnar_ops`` (operators) and ``_columnar_rows`` (macros,
one-field expressions per distinct value, whole expressions per row).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import polars as pl

from activelabel import cel
from activelabel.cel.emit import PythonEmitter
from activelabel.engine._columnar_extract import (
    K_BOOL,
    K_DBL,
    K_DUR,
    K_ERRA,
    K_ERRF,
    K_INT,
    K_NULL,
    K_STR,
    K_TS,
    Col,
    ConstCol,
    const_kind,
)
from activelabel.engine.exact import is_absent_error

_EXACT_INT = 2**53


class Untranslatable(Exception):
    """This expression has no node form: it is evaluated per row as a whole."""

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

    def equal_str(self, value: str) -> np.ndarray:
        got: np.ndarray = (self.strs() == value).to_numpy()
        return got

    def strs(self) -> pl.Series:
        if self._str is None:
            out = pl.Series([""] * self.n, dtype=pl.String)
            for m, col in self._parts:
                if (col.kind == K_STR)[m].any():
                    out = col.strs().zip_with(pl.Series(m), out)
            self._str = out
        return self._str

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

    def equal_str(self, value: str) -> np.ndarray:
        got: np.ndarray = self._src.equal_str(value)[self._codes]
        return got
