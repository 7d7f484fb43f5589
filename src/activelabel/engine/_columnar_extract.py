"""Extraction for the columnar batch path: objects to typed value columns.

One generated loop reads the field paths an expression set uses out of a batch
of objects (the events, or the rows enrichers returned), recording an absent key
(``NOKEY``) apart from a parent that is absent or not a map (``NOPARENT``): both
are an absent read, but ``has()`` is false on the first and an error on the
second. A ``Col`` is one value per row with its CEL kind (an error, absent or not,
null, bool, int, double, string, or ``OTHER`` for what only the exact evaluator
handles: lists, maps, timestamps, ints beyond 2**53) and the typed payloads
(numbers as float64, strings as a Polars Series) built only when an operation
asks. Rows holding a value of a type outside JSON's (a tuple, bytes, a
timestamp...) are handed back so the per-event path labels them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from itertools import repeat
from operator import eq, is_
from typing import Any

import numpy as np
import polars as pl

# Kinds: the CEL type of each row's value. Errors first, so `kind <= K_ERRF` tests for one.
K_ERRA = 0  # an error whose message tells of an absent field or a null (counted as an absent read)
K_ERRF = 1  # any other error (a wrong type, a value that does not fit)
K_NULL = 2
K_BOOL = 3
K_INT = 4  # |value| < 2**53, so its float64 form is exact
K_DBL = 5
K_STR = 6
K_OTHER = 7  # anything else CEL has: decided per row by the exact evaluator
K_TS = 8  # a timestamp in UTC, as int64 microseconds since the epoch
K_DUR = 9  # a duration, as int64 microseconds

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)

_EXACT_INT = 2**53


class _Sentinel:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


NOKEY = _Sentinel("NOKEY")  # the parent is a map without this key
NOPARENT = _Sentinel("NOPARENT")  # a parent is absent, or not a map

#: Classes a column reads natively; a row holding any other class goes to the per-event path.
KIND_OF: dict[type, int] = {type(None): K_NULL, bool: K_BOOL, int: K_INT, float: K_DBL, str: K_STR,
                            list: K_OTHER, dict: K_OTHER, _Sentinel: K_ERRA}

Extracted = tuple[list[list[Any]], list[int]]


_EXTRACTORS: dict[tuple[tuple[str, ...], ...], Callable[[Sequence[Any]], Extracted]] = {}


def make_extractor(paths: Sequence[tuple[str, ...]]) -> Callable[[Sequence[Any]], Extracted]:
    """The extraction loop for ``paths`` (generated once per set of paths)."""
    key = tuple(paths)
    got = _EXTRACTORS.get(key)
    if got is None:
        if len(_EXTRACTORS) > 1000:
            _EXTRACTORS.clear()
        got = _EXTRACTORS[key] = _generate_extractor(paths)
    return got


def _generate_extractor(paths: Sequence[tuple[str, ...]]) -> Callable[[Sequence[Any]], Extracted]:
    """Generate one loop reading every path of every object into per-path lists.

    Returns (columns, odd rows). A value is the field's value, ``NOKEY`` or
    ``NOPARENT``. Dict subclasses are maps, as in the generated code and the
    evaluator; an object that is not a dict at all makes its row odd (the
    per-event path labels it).
    """
    tree: dict[Any, Any] = {}
    for j, p in enumerate(paths):
        node = tree
        for k in p[:-1]:
            node = node.setdefault(k, {})
        node.setdefault(("leaf", p[-1]), []).append(j)
    lines = ["def extract(rows):"]
    for j in range(len(paths)):
        lines.append(f"    c{j} = []; a{j} = c{j}.append")
    lines += ["    odd = []", "    for i, e in enumerate(rows):",
              "        if e.__class__ is not dict and not isinstance(e, dict):", "            odd.append(i)"]
    for j in range(len(paths)):
        lines.append(f"            a{j}(_NOPARENT)")
    lines.append("            continue")
    counter = [0]

    def leaves_under(node: dict[Any, Any]) -> list[int]:
        out: list[int] = []
        for key, sub in node.items():
            out += sub if isinstance(key, tuple) else leaves_under(sub)
        return out

    def emit(node: dict[Any, Any], var: str, depth: int) -> None:
        pad = "    " * depth
        for key, sub in node.items():
            if isinstance(key, tuple):
                for j in sub:
                    lines.append(f"{pad}a{j}({var}.get({key[1]!r}, _NOKEY))")
                continue
            counter[0] += 1
            v = f"v{counter[0]}"
            lines.append(f"{pad}{v} = {var}.get({key!r}, _NOKEY)")
            lines.append(f"{pad}if {v}.__class__ is dict or isinstance({v}, dict):")
            emit(sub, v, depth + 1)
            lines.append(f"{pad}else:")
            for j in leaves_under(sub):
                lines.append(f"{pad}    a{j}(_NOPARENT)")

    emit(tree, "e", 2)
    cols = ", ".join(f"c{j}" for j in range(len(paths)))
    lines.append(f"    return [{cols}], odd")
    ns: dict[str, Any] = {"_NOKEY": NOKEY, "_NOPARENT": NOPARENT}
    exec(compile("\n".join(lines) + "\n", "<activelabel columnar extract>", "exec"), ns)  # noqa: S102
    extract: Callable[[Sequence[Any]], Extracted] = ns["extract"]
    return extract


class Col:
    """One CEL value per row: ``kind`` (an int8 array of ``K_*``) and typed payloads, built on demand.

    ``raw`` (a Python value per row) is what a column read from objects starts from;
    computed columns start from payload arrays and build ``raw`` only when asked.
    Payload slots hold anything on rows of another kind.
    """

    __slots__ = ("_bool", "_i64", "_masks", "_num", "_raw", "_str", "kind", "n")

    def __init__(self, kind: np.ndarray, *, raw: list[Any] | None = None, num: np.ndarray | None = None,
                 strs: pl.Series | None = None, bools: np.ndarray | None = None, i64: np.ndarray | None = None) -> None:
        self.kind = kind
        self.n = len(kind)
        self._raw = raw
        self._num = num
        self._str = strs
        self._bool = bools
        self._i64 = i64
        self._masks: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None

    # ---- construction ---------------------------------------------------

    @classmethod
    def from_raw(cls, raw: list[Any]) -> tuple[Col, list[int]]:
        """The column of Python values ``raw``, and the rows whose value it cannot hold (odd)."""
        n = len(raw)
        classes = set(map(type, raw))
        if not classes:
            return cls(np.zeros(0, dtype=np.int8), raw=raw), []
        if len(classes) == 1:
            c = next(iter(classes))
            k = KIND_OF.get(c)
            if k is not None and k != K_INT:
                return cls(np.full(n, k, dtype=np.int8), raw=raw), []
        kind = _few_kinds(raw, classes)
        if kind is None:
            kind = kinds_of(raw)
        odd: list[int] = []
        if (kind < 0).any():
            odd = np.flatnonzero(kind < 0).tolist()
            kind[odd] = K_NULL  # never read: the per-event path labels these rows
        col = cls(kind, raw=raw)
        if int in classes:
            ints = np.flatnonzero(kind == K_INT)
            try:
                vals = np.array(raw if len(ints) == n else [raw[i] for i in ints.tolist()], dtype=np.float64)
            except OverflowError:  # beyond a double: exact per row
                vals = np.array([float(raw[i]) if -_EXACT_INT < raw[i] < _EXACT_INT else np.inf
                                 for i in ints.tolist()], dtype=np.float64)
            big = np.abs(vals) >= _EXACT_INT
            if big.any():
                kind[ints[big]] = K_OTHER  # exact ints beyond a double's reach: per row
            if len(ints) == n:
                col._num = vals
        return col, odd

    @classmethod
    def const(cls, value: Any, n: int) -> Col:
        """``value`` on every row."""
        k = const_kind(value)
        return cls(np.full(n, k, dtype=np.int8), raw=[value] * n)

    @classmethod
    def from_values(cls, values: list[Any]) -> Col:
        """A column of computed Python values (every class CEL has: timestamps, lists... are OTHER)."""
        col, odd = cls.from_raw(values)
        if odd:
            col.kind[odd] = [const_kind(values[i]) for i in odd]
        return col

    def masks(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(number, string, bool, other) rows, computed once."""
        if self._masks is None:
            k = self.kind
            self._masks = ((k == K_INT) | (k == K_DBL), k == K_STR, k == K_BOOL, k == K_OTHER)
        return self._masks

    # ---- payloads -------------------------------------------------------

    def raw(self) -> list[Any]:
        """The Python value of each row (anything on error rows, and on rows of a kind without a payload)."""
        if self._raw is None:
            out: list[Any] = [None] * self.n
            kind = self.kind
            for k, have, get in ((K_BOOL, self._bool, self._bools_as_list), (K_INT, self._num, self._ints_as_list),
                                 (K_DBL, self._num, self._floats_as_list), (K_STR, self._str, self._strs_as_list),
                                 (K_TS, self._i64, self._times_as_list), (K_DUR, self._i64, self._durations_as_list)):
                if have is None:
                    continue
                rows = np.flatnonzero(kind == k)
                if len(rows):
                    for i, v in zip(rows.tolist(), get(rows)):
                        out[i] = v
            self._raw = out
        return self._raw

    def _bools_as_list(self, rows: np.ndarray) -> list[Any]:
        return self.bools()[rows].tolist()  # type: ignore[no-any-return]

    def _ints_as_list(self, rows: np.ndarray) -> list[Any]:
        return self.num()[rows].astype(np.int64).tolist()  # type: ignore[no-any-return]

    def _floats_as_list(self, rows: np.ndarray) -> list[Any]:
        return self.num()[rows].tolist()  # type: ignore[no-any-return]

    def _strs_as_list(self, rows: np.ndarray) -> list[Any]:
        return self.strs().gather(rows).to_list()

    def _times_as_list(self, rows: np.ndarray) -> list[Any]:
        return [EPOCH + timedelta(microseconds=x) for x in self.i64()[rows].tolist()]

    def _durations_as_list(self, rows: np.ndarray) -> list[Any]:
        return [timedelta(microseconds=x) for x in self.i64()[rows].tolist()]

    def i64(self) -> np.ndarray:
        """int64 microseconds per row, on TS (since the epoch) and DUR rows."""
        if self._i64 is None:
            raw = self.raw()
            out = np.zeros(self.n, dtype=np.int64)
            for k, base in ((K_TS, EPOCH), (K_DUR, None)):
                rows = np.flatnonzero(self.kind == k)
                if len(rows):
                    out[rows] = [((raw[i] - base) if base is not None else raw[i]) // _MICRO for i in rows.tolist()]
            self._i64 = out
        return self._i64

    def num(self) -> np.ndarray:
        """float64 per row, exact on INT and DBL rows."""
        if self._num is None:
            raw = self.raw()
            kind = self.kind
            isnum = (kind == K_INT) | (kind == K_DBL)
            if isnum.all():
                self._num = np.array(raw, dtype=np.float64)
            elif isnum.sum() * 2 > self.n:  # mostly numbers: blank the rest, convert at once
                vals = list(raw)
                for i in np.flatnonzero(~isnum).tolist():
                    vals[i] = 0.0
                self._num = np.array(vals, dtype=np.float64)
            else:
                out = np.zeros(self.n, dtype=np.float64)
                rows = np.flatnonzero(isnum)
                if len(rows):
                    out[rows] = [raw[i] for i in rows.tolist()]
                self._num = out
        return self._num

    def strs(self) -> pl.Series:
        """A Polars String series: the string on STR rows, "" elsewhere (no nulls: results need no fill)."""
        if self._str is None:
            raw = self.raw()
            kind = self.kind
            isstr = kind == K_STR
            if isstr.all():
                self._str = pl.Series(raw, dtype=pl.String)
            else:
                vals = list(raw)
                for i in np.flatnonzero(~isstr).tolist():
                    vals[i] = ""
                self._str = pl.Series(vals, dtype=pl.String)
        return self._str

    def bools(self) -> np.ndarray:
        """A bool array: the value on BOOL rows, False elsewhere."""
        if self._bool is None:
            raw = self.raw()
            self._bool = np.fromiter(map(is_, raw, repeat(True)), dtype=bool, count=self.n)
        return self._bool

    def nokey(self) -> np.ndarray:
        """Rows whose parent map lacks the key (a read column only)."""
        raw = self._raw
        assert raw is not None, "nokey() is asked of columns read from objects"
        out = np.zeros(self.n, dtype=bool)
        for i in np.flatnonzero(self.kind == K_ERRA).tolist():  # only the absent rows need a look
            out[i] = raw[i] is NOKEY
        return out

    def equal_str(self, value: str) -> np.ndarray:
        """Rows equal to the string ``value`` (meaningful on STR rows): Polars when the series exists, else C-level."""
        if self._str is not None:
            got: np.ndarray = (self._str == value).to_numpy()
            return got
        raw = self.raw()
        try:
            return np.fromiter(map(eq, raw, repeat(value)), dtype=bool, count=self.n)
        except (TypeError, ValueError):  # a row of an odd class compares oddly: the series has "" there
            got = (self.strs() == value).to_numpy()
            return got

    def take(self, rows: np.ndarray) -> Col:
        """The rows ``rows`` of this column, as a new column."""
        raw = self.raw()
        return Col(self.kind[rows], raw=[raw[i] for i in rows.tolist()])


_MARKERS = {_Sentinel: K_ERRA, type(None): K_NULL}


def _few_kinds(raw: list[Any], classes: set[type]) -> np.ndarray | None:
    """Kinds of a column of one JSON class plus absent keys and/or nulls, by C-level masks; else None."""
    rest = classes - _MARKERS.keys()
    if len(rest) > 1 or not rest:
        return None
    k = KIND_OF.get(next(iter(rest)))
    if k is None:
        return None
    n = len(raw)
    kind = np.full(n, k, dtype=np.int8)
    for marker_cls, marker_kind in _MARKERS.items():
        if marker_cls in classes:
            rows = np.fromiter(map(is_, map(type, raw), repeat(marker_cls)), dtype=bool, count=n)
            kind[rows] = marker_kind
    return kind


def kinds_of(raw: list[Any]) -> np.ndarray:
    """The kind of each value (-1 for classes no kind holds)."""
    try:
        return np.fromiter(map(_KIND_ITEM, map(type, raw)), dtype=np.int8, count=len(raw))
    except KeyError:  # a class no kind holds: the slower path marks it (maps of dict subclasses are maps)
        return np.array([KIND_OF.get(type(v), K_OTHER if isinstance(v, dict) else -1) for v in raw], dtype=np.int8)


_KIND_ITEM = KIND_OF.__getitem__


class ConstCol(Col):
    """One value on every row: payloads are broadcasts, and operations may use ``value`` as a scalar."""

    __slots__ = ("value",)

    def __init__(self, value: Any, kind: int, n: int) -> None:
        super().__init__(np.full(n, kind, dtype=np.int8))
        self.value = value

    def raw(self) -> list[Any]:
        if self._raw is None:
            self._raw = [self.value] * self.n
        return self._raw

    def num(self) -> np.ndarray:
        if self._num is None:
            v = self.value
            try:
                x = float(v) if v.__class__ in (int, float) else 0.0
            except OverflowError:  # an int beyond a double: OTHER, decided per row
                x = 0.0
            self._num = np.full(self.n, x)
        return self._num

    def strs(self) -> pl.Series:
        if self._str is None:
            v = self.value
            self._str = pl.Series([v if v.__class__ is str else ""], dtype=pl.String).new_from_index(0, self.n)
        return self._str

    def bools(self) -> np.ndarray:
        if self._bool is None:
            self._bool = np.full(self.n, self.value is True)
        return self._bool

    def equal_str(self, value: str) -> np.ndarray:
        return np.full(self.n, self.value.__class__ is str and self.value == value)

    def i64(self) -> np.ndarray:
        if self._i64 is None:
            v = self.value
            x = 0
            if isinstance(v, datetime):
                x = (v - EPOCH) // _MICRO
            elif isinstance(v, timedelta):
                x = v // _MICRO
            self._i64 = np.full(self.n, x, dtype=np.int64)
        return self._i64


_CONST_KINDS: dict[type, int] = {type(None): K_NULL, bool: K_BOOL, float: K_DBL, str: K_STR}


def const_kind(v: Any) -> int:
    """The kind of a computed value (an exact int outside ±2**53, a list, a timestamp...: OTHER)."""
    c = v.__class__
    k = _CONST_KINDS.get(c)
    if k is not None:
        return k
    if c is int:
        return K_INT if -_EXACT_INT < v < _EXACT_INT else K_OTHER
    if c is datetime and v.tzinfo is UTC:
        return K_TS
    if c is timedelta:
        return K_DUR
    return K_OTHER
