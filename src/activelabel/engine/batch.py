"""The columnar batch path: a compiled policy evaluated column-wise, label by label.

``ColumnarPlan.build(compiled)`` turns every expression of the policy (enricher keys,
rule conditions, ``value_expr``, bucket ``from``) into nodes over columns
(engine/_columnar_expr.py); ``run(events, per_event)`` reads the fields the policy
uses from a batch of event dicts in one pass, then, in the order the labels are
declared, does the per-event function's steps on whole columns:

- enrichers: the key column, one ``lookup`` per row (the enricher's own, so misses,
  number keys and CIDR matching are its own), and the fields rules read from the rows
  it returned, as columns (a key that fails is counted as the key's error);
- each label: its rules' conditions and values (``first_match`` in rule order, each
  rule's errors counted on the rows it was reached; ``max_confidence``, ``vote`` and
  conflict tracking over every rule, resolved once per distinct set of matching
  constant-valued rules and once per row where a ``value_expr`` rule matched, exactly
  as the generated code resolves one event); a bucket's ``from`` column; models
  called once for the rows no rule decided (``predict_batch``); the default; then the
  cardinality guard or distinct tracker, in input order (first N distinct values: one
  pass over the new values; windows: one ``admit`` per row, as the clock is read per
  value). Later labels read the label as a column (``labels.x``);
- the per-event ``labels`` / ``why`` dicts, from one template per distinct outcome,
  computed values filled in per row.

Results are identical to the per-event path: labels, ``why`` codes, and the counters
(hits, errors and the absent-read part of them, conflicts, guard overflow and distinct
values). A CEL value that is an error carries its kind, absent (the message tells of
an absent field or a null, or the expression read an absent field) or not, as the
exact path's ``failure`` decides it. ``now`` is the labeler's ``now``, read once per
batch (the per-event path reads it per event). A model's confidence is what its
``predict_batch`` gives, which for scikit-learn can differ from ``predict`` on one row
in the last bit.

What is not computed column-wise falls back, never approximated:

- an operation on values numpy and Polars do not compute exactly runs the CEL
  evaluator's own code (the Python form cel.emit gives it, the evaluator where that
  raises) on those rows, once per distinct argument tuple: lists and maps (beyond
  ``size``, an index, a field, ``in`` a literal list and the macros below), ints
  beyond 2**53, timestamps not in UTC, conversions (``int()``, ``string()``...),
  ``split`` and the other string extensions, a ``timestamp()`` text not in the RFC
  3339 shape Polars and ``fromisoformat`` read alike, a regex outside the subset RE2
  and Rust's regex read alike (RE2 itself, once per distinct string). An expression
  of one field with such work is evaluated once per distinct value of that field;
- a whole expression is evaluated per row (its emitted Python form, the evaluator
  where that raises) when it has a map literal, a ``map`` or ``filter`` macro, two
  macros (they share one step budget per evaluation), or a macro variable named like
  a root; one ``exists`` / ``all`` / ``exists_one`` runs over all elements at once;
- a label the columns do not resolve (``max_confidence``, ``vote`` or conflict
  tracking on a label with a model; a bucket label that also has rules or a model)
  is decided per row by the exact path (``CompiledPolicy.slow``), given the labels
  decided before it; it counts its own errors and conflicts;
- a row whose event is not a dict, or that holds a value of a class outside JSON's
  (a tuple, bytes, a datetime), is labeled by the per-event function; when the
  policy has a guard or a distinct tracker (whose state depends on input order),
  such a batch is labeled by it whole;
- a policy with two windowed guards (their clock reads interleave per event) has no
  columnar plan (``build`` returns None): ``label_batch`` labels it per event.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from activelabel import cel
from activelabel.cel.ast import Macro, walk
from activelabel.cel.emit import MISSING
from activelabel.engine._columnar_expr import ExprCompiler
from activelabel.engine._columnar_extract import (
    K_BOOL,
    K_DBL,
    K_ERRA,
    K_ERRF,
    K_INT,
    K_NULL,
    K_OTHER,
    Col,
    make_extractor,
)
from activelabel.engine._columnar_labels import (
    _DYN,
    _absent_mask,
    _convert,
    _Counts,
    _gather_values,
    _guarded,
    _Label,
    _label_col,
    _label_reads,
    _Out,
    _reads_absent,
    _resolve,
    _Rule,
    _set_default,
)
from activelabel.engine._columnar_nodes import Batch, Node, Untranslatable
from activelabel.engine._columnar_rows import RowNode, share_distinct
from activelabel.engine.exact import _reads, features
from activelabel.engine.plan import Plan
from activelabel.policy import label_types
from activelabel.policy._load import paused_gc

if TYPE_CHECKING:
    from activelabel.engine.compile import CompiledPolicy
    from activelabel.engine.decision import Decision

#: Label value types `_convert` checks column-wise (a new type is decided per row until it learns it).
_CONVERTED = frozenset({*label_types.CHOICE_TYPES, "string", "bool", "int", "float"})

PerEvent = Callable[[Any], "tuple[dict[str, Any], dict[str, Any]]"]
Now = Callable[[], Any]

@dataclass
class BatchResult:
    """What `ColumnarPlan.run` gives back; the counts cover only the rows it decided column-wise."""

    labels: list[dict[str, Any]]
    why: list[dict[str, Any]]    # shared between rows with the same outcome: read-only
    hits: dict[int, int] = field(default_factory=dict)    # source index -> labels set by it
    errors: dict[int, int] = field(default_factory=dict)  # source index -> evaluation errors
    absent: dict[int, int] = field(default_factory=dict)  # of those: an absent field or label was read
    conflicts: dict[int, int] = field(default_factory=dict)  # label index -> events whose rules disagreed
    per_event_rows: int = 0                               # rows handed to the per-event path
    columnar: bool = True                                 # False when the whole batch fell back
    keys: list[int] | None = None                         # per row: its outcome's template key (-1: its own)
    exact_labels: tuple[str, ...] = ()                    # labels decided per row by the exact path


# ---- the compiled form ----------------------------------------------------------------


@dataclass
class _Enricher:
    name: str
    source_idx: int
    key: Node
    key_reads: list[tuple[str, ...]]
    lookup: Callable[[Any], Any]
    paths: list[tuple[str, ...]]  # field paths under this enricher (root included)


class ColumnarPlan:
    """A policy's expressions as column nodes, built once per compiled policy."""

    def __init__(self, plan: Plan, labels: list[_Label], enrichers: list[_Enricher],
                 event_paths: list[tuple[str, ...]], now: Now | None, every_rule: bool,
                 slow: Callable[[int, dict[str, Any]], Any] | None) -> None:
        self._plan = plan
        self._labels = labels
        self._enrichers = enrichers
        self._event_paths = event_paths
        self._extract = make_extractor([p[1:] for p in event_paths])
        self._now = now
        self._every_rule = every_rule
        self._ordered = any(lp.guard is not None for lp in plan.labels)
        self._slow = slow

    # ---- building ---------------------------------------------------------

    @classmethod
    def build(cls, source: CompiledPolicy | Plan) -> ColumnarPlan | None:
        """The columnar form of a compiled policy (or of a bare plan, with no exact-path fallback).

        None when the policy has two windowed guards (the clock reads of their windows
        interleave per event), or, for a bare plan, a label only the exact path decides.
        """
        if isinstance(source, Plan):
            plan, now, every_rule, slow = source, None, False, None
        else:
            plan, now, every_rule, slow = source.plan, source.now, source.every_rule, source.slow
        if sum(1 for lp in plan.labels if lp.guard is not None and getattr(lp.guard, "window", None)) > 1:
            return None
        roots = {"event", *(ep.spec.name for ep in plan.enrichers)}
        comp = ExprCompiler(roots, plan.uses_now)
        wrapped: dict[int, Node] = {}
        inputs: dict[int, frozenset[tuple[str, ...]] | None] = {}

        def node(prog: cel.Program) -> tuple[Node, list[tuple[str, ...]]]:
            reads = [p for p in _reads(prog) if p[0] in roots and len(p) > 1] + [
                p for p in _reads(prog) if p[0] == "labels" and len(p) > 1]
            for p in reads:
                if p[0] != "labels":
                    comp.paths[p] = None
            if sum(isinstance(x, Macro) for x in walk(prog.ast.root)) > 1:
                return _row_node(prog, plan, comp), reads  # macros share one step budget per evaluation
            try:
                return share_distinct(comp.build(prog.ast.root), wrapped, inputs), reads
            except Untranslatable:
                return _row_node(prog, plan, comp), reads

        enrichers = []
        for ep in plan.enrichers:
            key, key_reads = node(ep.key_prog)
            enrichers.append(_Enricher(ep.spec.name, ep.source_idx, key, key_reads, ep.runtime.lookup, []))
        labels = []
        for lp in plan.labels:
            spec = lp.spec
            rules = []
            for rp in lp.rules:
                cond, cond_reads = node(rp.when) if rp.when is not None else (None, [])
                vnode, vreads = node(rp.value_prog) if rp.value_prog is not None else (None, [])
                conf = float(plan.source_table[rp.source_idx][1])
                rules.append(_Rule(rp.source_idx, conf, cond, cond_reads, rp.value, vnode, vreads))
            resolve = spec.resolve
            if lp.from_prog is not None:
                mode = "exact" if lp.rules or lp.models else "bucket"
            elif every_rule or resolve != "first_match":
                mode = "exact" if lp.models else "collect"
            else:
                mode = "first"
            if label_types.value_type(spec) not in _CONVERTED:
                mode = "exact"  # a label type the column conversion does not know: the exact path checks its values
            lab = _Label(lp, mode, rules, resolve, value_type=label_types.value_type(spec),
                         allowed=frozenset(label_types.allowed_values(spec) or ()) if spec.type in label_types.CHOICE_TYPES else None)
            if lp.from_prog is not None and mode == "bucket":
                lab.from_node, lab.from_reads = node(lp.from_prog)
            if mode == "exact" or lp.models:
                lab.reads = _label_reads(lp)
            if mode == "exact" and slow is None:
                return None
            labels.append(lab)
        paths = list(comp.paths)
        for en in enrichers:
            en.paths = [p for p in paths if p[0] == en.name]
        event_paths = [p for p in paths if p[0] == "event"]
        return cls(plan, labels, enrichers, event_paths, now, every_rule, slow)

    # ---- running ----------------------------------------------------------

    def run(self, events: Sequence[Any], per_event: PerEvent) -> BatchResult:
        """Label ``events``; ``per_event(event) -> (labels, why)`` labels the rows the columns cannot.

        The cyclic collector is paused meanwhile: a batch allocates thousands of acyclic dicts
        and lists, and each collection pass would walk the batch's whole heap again.
        """
        with paused_gc():
            return self._run(events, per_event)

    def _run(self, events: Sequence[Any], per_event: PerEvent) -> BatchResult:
        n = len(events)
        if n == 0:
            return BatchResult([], [], keys=[])
        b, odd, key_errors = self._read(events)
        if odd and self._ordered:
            return self._all_per_event(events, per_event)
        live = np.ones(n, dtype=bool)
        if odd:
            live[odd] = False
        counts = _Counts(live)
        for idx, err, absent in key_errors:
            counts.error(idx, err, absent)
        outs: list[_Out] = []
        exact_labels = []
        for lab in self._labels:
            out = self._decide(lab, b, events, counts, live)
            if lab.mode == "exact":
                exact_labels.append(lab.lp.spec.name)
            outs.append(out)
            b.set_label(lab.lp.spec.name, _label_col(out, lab))
        labels, why, keys = self._assemble(outs, n)
        for i in odd:
            labels[i], why[i] = per_event(events[i])
            if keys is not None:
                keys[i] = -1
        return BatchResult(labels, why, counts.hits, counts.errors, counts.absent, counts.conflicts,
                           per_event_rows=len(odd), keys=keys, exact_labels=tuple(exact_labels))

    def _all_per_event(self, events: Sequence[Any], per_event: PerEvent) -> BatchResult:
        labels, why = [], []
        for e in events:
            lab, w = per_event(e)
            labels.append(lab)
            why.append(w)
        return BatchResult(labels, why, per_event_rows=len(events), columnar=False)

    def _read(self, events: Sequence[Any]) -> tuple[Batch, list[int], list[tuple[int, np.ndarray, np.ndarray]]]:
        """The batch with every column read: event fields, then each enricher's key, lookup and fields."""
        n = len(events)
        columns, odd_rows = self._extract(events)
        odd = set(odd_rows)
        paths: dict[tuple[str, ...], Col] = {}
        for p, raw in zip(self._event_paths, columns):
            col, bad = Col.from_raw(raw)
            odd.update(bad)
            paths[p] = col
        now = self._now() if (self._now is not None and self._plan.uses_now) else None
        b = Batch(n, paths, now)
        b.objects["event"] = events
        key_errors = []
        for en in self._enrichers:
            key = en.key.eval(b)
            kind = key.kind
            err = kind <= K_ERRF
            raw = key.raw()
            keys = [None if e else v for v, e in zip(raw, err.tolist())] if err.any() else raw
            results = list(map(en.lookup, keys))
            b.objects[en.name] = results
            key_errors.append((en.source_idx, err, _absent_mask(kind, err, en.key_reads, b)))
            if en.paths:
                cols, bad_rows = make_extractor([p[1:] for p in en.paths])(results)
                odd.update(bad_rows)
                for p, raw_col in zip(en.paths, cols):
                    col, bad = Col.from_raw(raw_col)
                    odd.update(bad)
                    paths[p] = col
        return b, sorted(odd), key_errors

    # ---- one label ----------------------------------------------------------

    def _decide(self, lab: _Label, b: Batch, events: Sequence[Any], counts: _Counts, live: np.ndarray) -> _Out:
        if lab.mode == "bucket":
            out = self._bucket(lab, b, counts)
        elif lab.mode == "first":
            out = self._first_match(lab, b, counts, live)
        elif lab.mode == "collect":
            out = self._collect(lab, b, counts)
        else:
            out = self._exact(lab, b, events, live)
        if lab.lp.guard is not None:
            out = _guarded(out, lab, live)
        counts.hit(out, live)
        return out

    def _cond(self, r: _Rule, b: Batch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(matches, errors, absent errors) of a rule's condition; a non-bool value is an error, never absent."""
        n = b.n
        if r.cond is None:
            return np.ones(n, dtype=bool), np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
        c = r.cond.eval(b)
        k = c.kind
        isb = k == K_BOOL
        t = isb & c.bools() if isb.any() else isb
        err_eval = k <= K_ERRF
        err = ~isb
        absent = (k == K_ERRA)
        if (err_eval & ~absent).any():
            absent = absent | (err_eval & _reads_absent(r.cond_reads, b))
        return t, err, absent

    def _value(self, lab: _Label, r: _Rule, b: Batch) -> tuple[np.ndarray, Col, np.ndarray]:
        """(fits, the value column converted to the label's type, absent errors) of a rule's value_expr."""
        assert r.value_node is not None
        v = r.value_node.eval(b)
        ok, col = _convert(lab, v)
        bad = ~ok
        absent = v.kind == K_ERRA
        if (bad & ~absent).any():
            absent = absent | (bad & _reads_absent(r.value_reads, b))
        return ok, col, absent

    def _first_match(self, lab: _Label, b: Batch, counts: _Counts, live: np.ndarray) -> _Out:
        n = b.n
        rules = lab.rules
        oid = np.full(n, len(rules), dtype=np.int32)  # len(rules): none matched
        undecided = np.ones(n, dtype=bool)
        outcomes: list[tuple[bool, Any, Any]] = []
        dyn: np.ndarray | None = None
        dyn_cols: list[tuple[np.ndarray, Col]] = []
        for j, r in enumerate(rules):
            if not undecided.any():
                outcomes.append((True, r.value if r.value_node is None else _DYN, r.source_idx))
                continue
            t, err, absent = self._cond(r, b)
            if r.value_node is not None:
                ok, col, vabsent = self._value(lab, r, b)
                bad = t & ~ok
                won = t & ok
                err = err | bad
                absent = absent | (bad & vabsent)
                outcomes.append((True, _DYN, r.source_idx))
            else:
                won = t
                outcomes.append((True, r.value, r.source_idx))
            counts.error(r.source_idx, err & undecided, absent & undecided)
            w = won & undecided
            if w.any():
                oid[w] = j
                if r.value_node is not None:
                    dyn = w if dyn is None else dyn | w
                    dyn_cols.append((w, col))
            undecided &= ~w
            if r.cond is None and r.value_node is None:
                break
        outcomes += [(True, r.value, r.source_idx) for r in rules[len(outcomes):]]
        out = _Out(oid, outcomes, dyn)
        if dyn is not None:
            out.dyn_vals = _gather_values(dyn_cols, n)
            out.dyn_parts = dyn_cols
        _set_default(out, lab, len(rules))
        if lab.lp.models:
            self._models(lab, b, out, undecided & live)
        return out

    def _models(self, lab: _Label, b: Batch, out: _Out, rows: np.ndarray) -> None:
        """Each model once for the rows no rule decided; the first answer (in model order) wins."""
        idx = np.flatnonzero(rows).tolist()
        if not idx:
            return
        getters = _getters(b)
        binds = [b.bindings(i, getters, lab.reads) for i in idx]
        open_rows = list(idx)
        if out.dyn is None:
            out.dyn = np.zeros(b.n, dtype=bool)
            out.dyn_vals = [None] * b.n
        assert out.dyn_vals is not None
        out.dyn_codes = [None] * b.n
        model_outcome = len(out.outcomes)
        out.outcomes.append((True, _DYN, _DYN))
        for model, src in zip(lab.lp.models, lab.lp.model_sources):
            preds = model.predict_batch([features(model, bd) for bd in binds])
            for i, pred in zip(idx, preds):
                if pred is not None and out.oid[i] == len(lab.rules) and i in open_rows:
                    out.oid[i] = model_outcome
                    out.dyn[i] = True
                    out.dyn_vals[i] = pred[0]
                    out.dyn_codes[i] = (src, float(pred[1]))
            open_rows = [i for i in open_rows if out.oid[i] != model_outcome]

    def _collect(self, lab: _Label, b: Batch, counts: _Counts) -> _Out:
        """Every rule on every row, resolved as the generated code's `_collect` resolves one event.

        Rows where only constant-valued rules match are resolved once per distinct set of
        matching rules; rows where a ``value_expr`` rule matches, once per row.
        """
        n = b.n
        rules = lab.rules
        bits = []
        values: list[Col | None] = []
        for r in rules:
            t, err, absent = self._cond(r, b)
            if r.value_node is not None:
                ok, col, vabsent = self._value(lab, r, b)
                bad = t & ~ok
                err = err | bad
                absent = absent | (bad & vabsent)
                t = t & ok
                values.append(col)
            else:
                values.append(None)
            counts.error(r.source_idx, err, absent)
            bits.append(t)
        if not rules:
            out = _Out(np.zeros(n, dtype=np.int32), [])
            _set_default(out, lab, 0)
            return out
        matrix = np.stack(bits, axis=1)
        dyn_rules = [j for j, v in enumerate(values) if v is not None]
        dyn: np.ndarray | None = np.asarray(matrix[:, dyn_rules].any(axis=1)) if dyn_rules else None
        if dyn is not None and dyn.any():
            matrix = matrix & ~dyn[:, None]  # resolved per row below
        if len(rules) <= 62:
            weights = (np.int64(1) << np.arange(len(rules), dtype=np.int64))
            packed = matrix.astype(np.int64) @ weights
            uniq, inv = np.unique(packed, return_inverse=True)
            sets = [[j for j in range(len(rules)) if (int(u) >> j) & 1] for u in uniq.tolist()]
        else:
            rows_bytes = np.packbits(matrix, axis=1)
            view = np.ascontiguousarray(rows_bytes).view(np.dtype((np.void, rows_bytes.shape[1])))
            uniq_v, inv = np.unique(view, return_inverse=True)
            first_row = {int(g): i for i, g in reversed(list(enumerate(inv.ravel().tolist())))}
            sets = [np.flatnonzero(matrix[first_row[g]]).tolist() for g in range(len(uniq_v))]
        outcomes = []
        conflicts = np.zeros(len(sets) + 1, dtype=np.int64)
        for g, matched in enumerate(sets):
            value, code, conflict = _resolve(lab, [(rules[j].value, rules[j].conf, rules[j].source_idx) for j in matched])
            outcomes.append((value is not MISSING, value, code))
            conflicts[g] = conflict
        oid = inv.ravel().astype(np.int32)
        out = _Out(oid, outcomes)
        per_row_conflict = conflicts[oid]
        if dyn is not None and dyn.any():
            out.outcomes.append((True, _DYN, _DYN))
            dyn_id = len(out.outcomes) - 1
            out.dyn = dyn
            dyn_vals: list[Any] = [None] * n
            dyn_codes: list[Any] = [None] * n
            raws = [None if v is None else v.raw() for v in values]
            for i in np.flatnonzero(dyn).tolist():
                cands = []
                for j, r in enumerate(rules):
                    if bits[j][i]:
                        got = raws[j]
                        cands.append((r.value if got is None else got[i], r.conf, r.source_idx))
                value, code, conflict = _resolve(lab, cands)
                out.oid[i] = dyn_id
                dyn_vals[i] = value
                dyn_codes[i] = code
                per_row_conflict[i] = conflict
            out.dyn_vals, out.dyn_codes = dyn_vals, dyn_codes
        if per_row_conflict.any():
            counts.conflict(lab.lp.index, per_row_conflict)
        return out

    def _bucket(self, lab: _Label, b: Batch, counts: _Counts) -> _Out:
        """``from`` as a column: numbers (not NaN) to their bucket; null, absent or anything else an error."""
        assert lab.from_node is not None
        lp = lab.lp
        spec = lp.spec
        x = lab.from_node.eval(b)
        k = x.kind
        n = b.n
        names = list(spec.bucket_names)
        nb = len(names)
        oid = np.full(n, nb, dtype=np.int32)
        isnum = (k == K_INT) | (k == K_DBL)
        num = x.num() if isnum.any() else np.zeros(n)
        nan = isnum & np.isnan(num)
        isnum &= ~nan
        bounds = np.array(spec.bounds, dtype=np.float64)
        exact_bounds = all(float(v) == v for v in spec.bounds)
        if isnum.any() and exact_bounds:
            idx = np.searchsorted(bounds, num, side="right").astype(np.int32)
            oid[isnum] = idx[isnum]
        elif isnum.any():
            raw = x.raw()
            for i in np.flatnonzero(isnum).tolist():
                oid[i] = label_types.bucket_index(spec.bounds, raw[i])
        other = k == K_OTHER
        if other.any():
            raw = x.raw()
            for i in np.flatnonzero(other).tolist():
                v = raw[i]
                if v.__class__ is int or (v.__class__ is float and v == v):
                    oid[i] = label_types.bucket_index(spec.bounds, v)
                    isnum[i] = True
        err = ~isnum
        absent = (k == K_ERRA) | (k == K_NULL)
        rest = err & ~absent
        if rest.any():
            absent = absent | (rest & (k <= K_ERRF) & _reads_absent(lab.from_reads, b))
        counts.error(lp.from_idx, err, absent)
        outcomes: list[tuple[bool, Any, Any]] = [(True, name, lp.from_idx) for name in names]
        out = _Out(oid, outcomes)
        _set_default(out, lab, nb)
        return out

    def _exact(self, lab: _Label, b: Batch, events: Sequence[Any], live: np.ndarray) -> _Out:
        """The label decided per row by the exact path (it counts its own errors and conflicts)."""
        lp = lab.lp
        compiled_slow = self._slow
        assert compiled_slow is not None, "build() refuses exact-mode labels without a compiled policy"
        n = b.n
        getters = _getters(b)
        vals: list[Any] = [MISSING] * n
        codes: list[Any] = [-1] * n
        for i in np.flatnonzero(live).tolist():
            vals[i], codes[i] = compiled_slow(lp.index, b.bindings(i, getters, lab.reads))
        out = _Out(np.zeros(n, dtype=np.int32), [(True, _DYN, _DYN), (False, None, -1)])
        unset = np.array([v is MISSING for v in vals], dtype=bool)
        out.oid[unset] = 1
        out.dyn = ~unset
        out.dyn_vals = vals
        out.dyn_codes = codes
        return out

    # ---- assembling the per-row dicts -----------------------------------------

    def _assemble(self, outs: list[_Out], n: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[int] | None]:
        if not outs:
            return [{} for _ in range(n)], [{} for _ in range(n)], None
        key = np.zeros(n, dtype=np.int64)
        radix = 1
        for out in outs:
            size = max(1, len(out.outcomes))
            if radix * size >= 2**62:
                key = np.unique(key, return_inverse=True)[1].ravel().astype(np.int64)
                radix = n + 1
            key = key * size + out.oid
            radix *= size
        inv = np.unique(key, return_inverse=True)[1].ravel()
        firsts = np.unique(inv, return_index=True)[1]
        names = [lab.lp.spec.name for lab in self._labels]
        tpl_labels: list[dict[str, Any]] = []
        tpl_why: list[dict[str, Any]] = []
        for i in firsts.tolist():
            lab_d: dict[str, Any] = {}
            why_d: dict[str, Any] = {}
            for name, out in zip(names, outs):
                present, value, code = out.outcomes[out.oid[i]]
                if present:
                    lab_d[name] = value
                    why_d[name] = code
            tpl_labels.append(lab_d)
            tpl_why.append(why_d)
        ids = inv.tolist()
        labels = [tpl_labels[k].copy() for k in ids]
        why = [tpl_why[k] for k in ids]
        own_why: set[int] = set()
        dynamic = False
        for name, out in zip(names, outs):
            if out.dyn is None or not out.dyn.any():
                continue
            dynamic = True
            dv = out.dyn_vals
            dc = out.dyn_codes
            assert dv is not None
            for i in np.flatnonzero(out.dyn).tolist():
                labels[i][name] = dv[i]
                if dc is not None and dc[i] is not None and not (dc[i].__class__ is int and dc[i] < 0):
                    if i not in own_why:
                        why[i] = dict(why[i])
                        own_why.add(i)
                    why[i][name] = dc[i]
        return labels, why, None if dynamic else ids

    def run_lines(self, raws: Sequence[bytes], events: Sequence[Any], per_event: PerEvent,
                  field: str = "labels") -> tuple[BatchResult, list[bytes]]:
        """Label decoded records and splice each one's labels into its original bytes.

        ``raws[i]`` is the JSON text ``events[i]`` was decoded from. The labels'
        JSON is serialised once per distinct outcome where the batch's labels are all
        template outcomes; a record that already has ``field`` (or is not a plain
        ``{...}``) is re-serialised whole.
        """
        result = self.run(events, per_event)
        dumps = orjson.dumps
        prefix = b"," + dumps(field) + b":"
        cache: dict[int, bytes] = {}
        keys = result.keys
        lines: list[bytes] = []
        append = lines.append
        for i, raw in enumerate(raws):
            labels = result.labels[i]
            event = events[i]
            body = raw.rstrip()
            if field in event or not body.endswith(b"}"):
                merged = dict(event)
                merged[field] = labels
                append(dumps(merged))
                continue
            k = keys[i] if keys is not None else -1
            text = cache.get(k) if k >= 0 else None
            if text is None:
                text = dumps(labels)
                if k >= 0:
                    cache[k] = text
            inner = body[:-1].rstrip()
            append(inner + (prefix[1:] if inner.endswith(b"{") else prefix) + text + b"}")
        return result, lines


# ---- counters -------------------------------------------------------------------------


def _row_node(prog: cel.Program, plan: Plan, comp: ExprCompiler) -> RowNode:
    """A whole expression evaluated per row by the CEL evaluator."""
    roots = ["event", *(ep.spec.name for ep in plan.enrichers)]
    refs = [ref.path for ref in cel.references(prog.ast) if ref.path[0] == "labels"]
    labels = None if any(len(p) == 1 for p in refs) else sorted({p[1] for p in refs})
    node = RowNode(prog, roots, labels)
    node.deps = frozenset(lp.spec.name for lp in plan.labels) if labels is None else frozenset(labels)
    return node


def _getters(b: Batch) -> dict[str, Callable[[int], Any]]:
    return {name: objs.__getitem__ for name, objs in b.objects.items()}


#: Below this many events the per-event path is as fast.
COLUMNAR_MIN_BATCH = 1024


def decide_batch(compiled: CompiledPolicy, plan: ColumnarPlan, events: Sequence[Any]) -> list[Decision]:
    """``Labeler.label_batch`` through the columnar path: Decisions, and the counters as ``label`` leaves them.

    The hits, errors and conflicts are merged into ``compiled``; the caller (the Labeler) counts the events.
    """
    from activelabel.engine.decision import Decision
    from activelabel.errors import InputError

    fn = compiled.fn

    def per_event(event: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        if event.__class__ is not dict:
            if not isinstance(event, Mapping):
                raise InputError(f"an event must be a JSON object, not {type(event).__name__}", kind="not_object")
            event = dict(event)
        return fn(event)

    t0 = time.perf_counter_ns()
    result = plan.run(events, per_event)
    add_counts(compiled, result)
    each = (time.perf_counter_ns() - t0) // max(1, len(events))
    return list(map(Decision, result.labels, result.why, repeat(compiled), events, repeat(each)))


def add_counts(compiled: CompiledPolicy, result: BatchResult) -> None:
    """Merge a columnar result's counters into the compiled policy's."""
    compiled.add_counts(result.hits, result.errors, result.absent)
    for li, c in result.conflicts.items():
        compiled.conflicts[li] += c


def label_batch_columnar(plan: ColumnarPlan | Plan, events: Sequence[Any], per_event: PerEvent) -> list[dict[str, Any]]:
    """The labels of each event (a convenience over `ColumnarPlan.run`)."""
    cp = plan if isinstance(plan, ColumnarPlan) else ColumnarPlan.build(plan)
    if cp is None:
        return [per_event(e)[0] for e in events]
    return cp.run(events, per_event).labels


__all__ = ["COLUMNAR_MIN_BATCH", "BatchResult", "ColumnarPlan", "add_counts", "decide_batch", "label_batch_columnar"]
