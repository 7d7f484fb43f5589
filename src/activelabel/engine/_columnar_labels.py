"""One label's outcome over a batch, as the columnar path builds it: resolution, guards, counters.

``_Out`` is a label's outcome on every row (an id into a table of (set, value, code)
outcomes, and the rows whose value is their own); ``_resolve`` resolves one set of
matching rules exactly as the generated code's ``_collect`` resolves one event;
``_guarded`` runs the label's cardinality guard or distinct tracker in input order;
``_Counts`` keeps hits, errors (and their absent-read part) and conflicts over the
rows decided column-wise; ``_label_col`` is the label as a column for later rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from activelabel import cel
from activelabel.cel.emit import MISSING
from activelabel.engine._columnar_extract import (
    K_BOOL,
    K_DBL,
    K_ERRA,
    K_INT,
    K_NULL,
    K_OTHER,
    K_STR,
    Col,
    const_kind,
)
from activelabel.engine._columnar_nodes import Batch, Node, merge
from activelabel.engine.plan import LabelPlan
from activelabel.policy import label_types

_DYN = object()  # an outcome whose value (or code) is the row's own


@dataclass
class _Rule:
    source_idx: int
    conf: float
    cond: Node | None          # None: always
    cond_reads: list[tuple[str, ...]]
    value: Any                 # the constant, when value is None
    value_node: Node | None
    value_reads: list[tuple[str, ...]]


@dataclass
class _Label:
    lp: LabelPlan
    mode: str                  # "first" | "collect" | "bucket" | "exact"
    rules: list[_Rule]
    resolve: str
    from_node: Node | None = None
    from_reads: list[tuple[str, ...]] = field(default_factory=list)
    value_type: str = ""
    allowed: frozenset[str] | None = None
    reads: list[str] | None = field(default_factory=list)  # labels read (exact mode bindings); None: all


@dataclass
class _Out:
    """One label's outcome on every row: an id into ``outcomes``, and the rows whose value is their own."""

    oid: np.ndarray                      # int32 per row
    outcomes: list[tuple[bool, Any, Any]]  # (set, value or _DYN, code or _DYN)
    dyn: np.ndarray | None = None        # rows whose value is in dyn_vals
    dyn_vals: list[Any] | None = None
    dyn_codes: list[Any] | None = None   # per row, where the outcome's code is _DYN
    dyn_parts: list[tuple[np.ndarray, Col]] = field(default_factory=list)  # value columns behind dyn rows

    def values(self) -> list[Any]:
        """The label's value per row (MISSING where unset)."""
        table = [v if s else MISSING for s, v, _c in self.outcomes]
        out = [table[o] for o in self.oid.tolist()]
        if self.dyn is not None and self.dyn_vals is not None:
            dv = self.dyn_vals
            for i in np.flatnonzero(self.dyn).tolist():
                out[i] = dv[i]
        return out


class _Counts:
    """Hits, errors (and their absent part) and conflicts over the rows decided column-wise."""

    def __init__(self, live: np.ndarray) -> None:
        self.live = live
        self.all_live = bool(live.all())
        self.hits: dict[int, int] = {}
        self.errors: dict[int, int] = {}
        self.absent: dict[int, int] = {}
        self.conflicts: dict[int, int] = {}

    def _n(self, mask: np.ndarray) -> int:
        return int(np.count_nonzero(mask if self.all_live else mask & self.live))

    def error(self, idx: int, err: np.ndarray, absent: np.ndarray) -> None:
        e = self._n(err)
        if e:
            self.errors[idx] = self.errors.get(idx, 0) + e
            a = self._n(absent & err)
            if a:
                self.absent[idx] = self.absent.get(idx, 0) + a

    def conflict(self, label: int, per_row: np.ndarray) -> None:
        c = self._n(per_row.astype(bool))
        if c:
            self.conflicts[label] = self.conflicts.get(label, 0) + c

    def hit(self, out: _Out, live: np.ndarray) -> None:
        oid = out.oid if self.all_live else out.oid[live]
        per = np.bincount(oid, minlength=len(out.outcomes))
        for o, (present, _value, code) in enumerate(out.outcomes):
            if present and per[o] and code is not _DYN:
                idx = code[0] if code.__class__ is tuple else code
                self.hits[idx] = self.hits.get(idx, 0) + int(per[o])
        if out.dyn_codes is not None:
            dc = out.dyn_codes
            for i in np.flatnonzero(live).tolist():
                c = dc[i]
                if c is not None and out.outcomes[out.oid[i]][2] is _DYN and out.outcomes[out.oid[i]][0]:
                    idx = c[0] if c.__class__ is tuple else c
                    self.hits[idx] = self.hits.get(idx, 0) + 1


# ---- helpers --------------------------------------------------------------------------


def _label_reads(lp: LabelPlan) -> list[str] | None:
    """The labels a label's expressions (and its models' features) read; None when one reads `labels` whole."""
    out = set()
    progs = [rp.when for rp in lp.rules] + [rp.value_prog for rp in lp.rules] + [lp.from_prog]
    for m in lp.models:
        progs += list(m.feature_programs.values())
    for prog in progs:
        ast = getattr(prog, "ast", None)
        if ast is None:
            continue
        for ref in cel.references(ast):
            if ref.path[0] == "labels":
                if len(ref.path) == 1:
                    return None
                out.add(ref.path[1])
    return sorted(out)


def _reads_absent(reads: list[tuple[str, ...]], b: Batch) -> np.ndarray:
    """Rows where an expression reads a field or label that is absent (``exact.reads_absent``)."""
    out = np.zeros(b.n, dtype=bool)
    for p in reads:
        if p[0] == "labels":
            col = b.labels.get(p[1])
            if col is None or len(p) > 2:
                out[:] = True  # unset on every row, or a field of a scalar label: absent
                return out
            out |= col.kind == K_ERRA
        else:
            out |= b.paths[p].kind == K_ERRA
    return out


def _absent_mask(kind: np.ndarray, err: np.ndarray, reads: list[tuple[str, ...]], b: Batch) -> np.ndarray:
    absent: np.ndarray = kind == K_ERRA
    if (err & ~absent).any():
        absent = absent | (err & _reads_absent(reads, b))
    return absent


def _convert(lab: _Label, v: Col) -> tuple[np.ndarray, Col]:
    """(rows whose value fits the label, the values in the label's stored form): ``label_types.convert``."""
    k = v.kind
    vt = lab.value_type
    if vt in label_types.CHOICE_TYPES:
        isstr = k == K_STR
        if not isstr.any():
            return isstr, v
        allowed = sorted(lab.allowed or ())
        if len(allowed) <= 16:  # a few equality tests beat one is_in
            hit = np.zeros(v.n, dtype=bool)
            for name in allowed:
                hit |= v.equal_str(name)
        else:
            hit = v.strs().is_in(allowed).to_numpy()
        return isstr & hit, v
    if vt == "string":
        return k == K_STR, v
    if vt == "bool":
        return k == K_BOOL, v
    if vt == "int":
        ok = k == K_INT
        other = k == K_OTHER
        if other.any():
            raw = v.raw()
            for i in np.flatnonzero(other).tolist():
                x = raw[i]
                if x.__class__ is int:
                    ok[i] = True
        return ok, v
    if vt == "float":
        ok = (k == K_INT) | (k == K_DBL)
        dbl = k == K_DBL
        if dbl.any():  # inf and NaN do not fit a float label (label_types.convert: no JSON form)
            ok &= ~(dbl & ~np.isfinite(v.num()))
        other = k == K_OTHER
        vals: list[Any] | None = None
        if other.any():
            raw = v.raw()
            vals = list(raw)
            for i in np.flatnonzero(other).tolist():
                x = raw[i]
                if x.__class__ is int:
                    try:
                        vals[i] = float(x)
                    except OverflowError:
                        continue
                    ok[i] = True
        if (k == K_INT).any() or vals is not None:
            kind = np.where(ok, K_DBL, k).astype(np.int8)
            if vals is None:
                return ok, Col(kind, num=v.num())
            for i in np.flatnonzero(k == K_INT).tolist():
                vals[i] = float(v.num()[i])
            return ok, Col(kind, raw=vals)
        return ok, v
    return np.zeros(v.n, dtype=bool), v  # unknown type: nothing fits


def _gather_values(parts: list[tuple[np.ndarray, Col]], n: int) -> list[Any]:
    out: list[Any] = [None] * n
    for mask, col in parts:
        raw = col.raw()
        for i in np.flatnonzero(mask).tolist():
            out[i] = raw[i]
    return out


def _set_default(out: _Out, lab: _Label, none_id: int) -> None:
    """Rows with no outcome (``none_id``) get the default, or stay unset."""
    lp = lab.lp
    while len(out.outcomes) <= none_id:
        out.outcomes.append((False, None, -1))
    if lp.default_idx >= 0:
        out.outcomes[none_id] = (True, lp.spec.default, lp.default_idx)
    else:
        out.outcomes[none_id] = (False, None, -1)


def _resolve(lab: _Label, cands: list[tuple[Any, float, int]]) -> tuple[Any, Any, bool]:
    """(value, code, conflict) of a label from its matching rules' (value, confidence, source), in rule order.

    As the generated code's `_collect` resolves one event: first_match keeps the first,
    max_confidence the highest confidence (the earlier on ties), vote the value with the
    highest summed confidence (the earliest of equal totals); no match gives the default.
    """
    lp = lab.lp
    if not cands:
        if lp.default_idx >= 0:
            return lp.spec.default, lp.default_idx, False
        return MISSING, -1, False
    mode = lab.resolve
    if mode == "vote":
        totals: dict[Any, float] = {}
        first: dict[Any, tuple[Any, int]] = {}
        for x, conf, idx in cands:
            kx = (x.__class__, x)
            if kx in totals:
                totals[kx] += conf
            else:
                totals[kx] = 0.0 + conf
                first[kx] = (x, idx)
        win = max(totals, key=totals.__getitem__)
        total = sum(totals.values())
        value, idx = first[win]
        return value, (idx, totals[win] / total if total > 0 else 0.0), len(totals) > 1
    fv = bv = cands[0][0]
    bc, bw = cands[0][1], cands[0][2]
    conflict = False
    for x, conf, idx in cands[1:]:
        if not conflict and (x.__class__ is not fv.__class__ or (x is not fv and x != fv)):
            conflict = True
        if mode == "max_confidence" and conf > bc:
            bv, bw, bc = x, idx, conf
    if mode == "max_confidence":
        return bv, (bw, bc), conflict
    return bv, bw, conflict


def _guarded(out: _Out, lab: _Label, live: np.ndarray) -> _Out:
    """The label's values through its guard (or distinct tracker), in input order."""
    guard = lab.lp.guard
    assert guard is not None
    if getattr(guard, "full", False):
        return out  # a distinct tracker that has seen its limit: nothing more to record
    values = out.values()
    rows = [i for i in np.flatnonzero(live).tolist() if values[i] is not MISSING]
    over = guard.admit_many([values[i] for i in rows])
    if not over:
        return out
    # overflow rows keep their source code, with the overflow value
    overflow = guard.overflow_value  # type: ignore[union-attr]  # only a CardinalityGuard overflows
    extra: dict[int, int] = {}
    if out.dyn is None:
        out.dyn = np.zeros(len(out.oid), dtype=bool)
        out.dyn_vals = [None] * len(out.oid)
    assert out.dyn_vals is not None
    for pos in over:
        i = rows[pos]
        o = int(out.oid[i])
        _present, _v, code = out.outcomes[o]
        if code is _DYN:
            out.dyn_vals[i] = overflow
            out.dyn[i] = True
            continue
        if o not in extra:
            extra[o] = len(out.outcomes)
            out.outcomes.append((True, overflow, code))
        out.oid[i] = extra[o]
        out.dyn[i] = False
    return out


class _OutcomeCol(Col):
    """A label's constant outcomes as a column: payloads gathered from the outcome table by outcome id."""

    __slots__ = ("_oid", "_table")

    def __init__(self, kind: np.ndarray, out: _Out) -> None:
        super().__init__(kind)
        self._oid = out.oid
        self._table = [v if s and v is not _DYN else None for s, v, _c in out.outcomes] or [None]

    def raw(self) -> list[Any]:
        if self._raw is None:
            table = self._table
            self._raw = [table[o] for o in self._oid.tolist()]
        return self._raw

    def num(self) -> np.ndarray:
        if self._num is None:
            nums = np.array([float(v) if v.__class__ in (int, float) else 0.0 for v in self._table])
            self._num = nums[self._oid]
        return self._num

    def strs(self) -> pl.Series:
        if self._str is None:
            strs = pl.Series([v if v.__class__ is str else "" for v in self._table], dtype=pl.String)
            self._str = strs.gather(self._oid)
        return self._str

    def bools(self) -> np.ndarray:
        if self._bool is None:
            self._bool = np.array([v is True for v in self._table])[self._oid]
        return self._bool

    def equal_str(self, value: str) -> np.ndarray:
        got: np.ndarray = np.array([v.__class__ is str and v == value for v in self._table])[self._oid]
        return got


def _label_col(out: _Out, lab: _Label) -> Col:
    """The value column of a decided label (``labels.x``): unset rows are absent (``labels`` lacks the key)."""
    kinds = np.array([const_kind(v) if s and v is not _DYN else (K_ERRA if not s else K_NULL)
                      for s, v, _c in out.outcomes] or [K_ERRA], dtype=np.int8)
    kind = kinds[out.oid] if len(out.outcomes) else np.full(len(out.oid), K_ERRA, dtype=np.int8)
    static = _OutcomeCol(kind, out)
    if out.dyn is None or not out.dyn.any():
        return static
    parts: list[tuple[np.ndarray, Col]] = []
    covered = np.zeros(len(kind), dtype=bool)
    for mask, col in out.dyn_parts:
        m = mask & out.dyn & ~covered
        if m.any():
            parts.append((m, col))
            covered |= m
    rest = out.dyn & ~covered
    if rest.any():  # values with no column behind them (models, the exact path, guard overflow of those)
        assert out.dyn_vals is not None
        dv = out.dyn_vals
        rows = np.flatnonzero(rest)
        vals: list[Any] = [None] * len(kind)
        for i in rows.tolist():
            vals[i] = dv[i]
        col = Col.from_values(vals)
        parts.append((rest, col))
    parts.append((np.ones(len(kind), dtype=bool), static))
    return merge(parts, kind)
