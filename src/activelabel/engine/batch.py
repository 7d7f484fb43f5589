"""The columnar batch path: a compiled policy evaluated column-wise with Polars.

``ColumnarPlan.build(plan)`` translates each rule's ``when`` into a Polars
expression over columns of the fields the policy reads; ``run(events, per_event)``
extracts those fields from a batch of event dicts in one pass, evaluates every
rule over the whole batch, picks each label's first matching rule, and builds
the per-event ``labels`` / ``why`` dicts from a few templates (batches repeat
the same label combinations).

Results are identical to the per-event path, CEL errors included. A CEL value
that is an error is a Polars null, and CEL's commutative ``&&``/``||``/``!``
are exactly Kleene logic on nulls, so a rule matches iff its column is true.
Leaves are translated only where the translation is exact for every column
type; a missing field and a JSON ``null`` (both Polars nulls) are told apart
from the events where it matters (``==``, ``!=``, ``in``, ``has``).

What is not translated falls back, never approximated:

- a rule whose condition uses anything else (arithmetic, macros, ``size``,
  regexes outside a subset Rust's and RE2's engines read the same way) is
  evaluated per event with the exact CEL evaluator, as one column;
- a row whose field has a value of a different type from the rest of its column,
  or that is not a plain dict, is labeled by the per-event path;
- lists, maps and bytes read as opaque values (equal to no scalar literal, an
  error for ordering and string functions), exactly as CEL treats them there;
- a batch with a NaN double (Polars orders NaN, CEL does not) is labeled by
  the per-event path;
- a policy with enrichers, models, ``value_expr``, bucket labels, cardinality
  guards, non-first-match resolution, ``labels.*`` or ``now`` has no columnar plan
  (``build`` returns None).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import polars as pl

from activelabel.cel.ast import Call, CreateList, Expr, Ident, Literal, Select, select_path, walk
from activelabel.engine._columnar_extract import (
    _INT64,
    _apply_string_fn,
    _make_extractor,
    _string_leaf_columns,
    _to_series,
)
from activelabel.engine.plan import Plan

if TYPE_CHECKING:
    from activelabel.engine.compile import CompiledPolicy
    from activelabel.engine.decision import Decision

PerEvent = Callable[[Any], "tuple[dict[str, Any], dict[str, Any]]"]

_ORDER_OPS = {"_<_": "lt", "_<=_": "le", "_>_": "gt", "_>=_": "ge"}
_FLIP = {"lt": "gt", "le": "ge", "gt": "lt", "ge": "le"}
_STRING_FNS = {"startsWith", "endsWith", "contains", "matches"}
# A regex subset that RE2 (CEL's `matches`) and Rust's regex crate (Polars) read the
# same way: ASCII text, groups, alternation, classes, repetition, escaped punctuation.
# Braces only as `{n}`, `{n,}`, `{n,m}`: RE2 reads `{,m}` as text, Rust as a repetition.
_SAFE_REGEX = re.compile(
    r"^(\(\?i\))?(?:[A-Za-z0-9 _\-/:;,'\"=<>!@#%&~`^$.|()*+?]|\{[0-9]+(?:,[0-9]*)?\}|\[(?!:)|\]"
    r"|\\[.^$|()\[\]{}*+?\\/\-])*$"
)


class Untranslatable(Exception):
    """This expression has no exact columnar form (its rule is evaluated per event)."""


@dataclass
class BatchResult:
    """What `ColumnarPlan.run` gives back; `hits`/`errors` count only columnar rows."""

    labels: list[dict[str, Any]]
    why: list[dict[str, Any]]    # shared between rows with the same outcome: read-only
    hits: dict[int, int] = field(default_factory=dict)    # source index -> labels set by it
    errors: dict[int, int] = field(default_factory=dict)  # source index -> evaluation errors
    per_event_rows: int = 0                               # rows handed to the per-event path
    columnar: bool = True                                 # False when the whole batch fell back
    keys: list[int] | None = None                         # per row: its outcome's template key (-1: per event)


@dataclass
class _Rule:
    source_idx: int
    value: Any
    node: Expr | None        # the `when` root; None means "always"
    program: Any             # the exact cel.Program, for per-event evaluation
    exact_only: bool = False  # no columnar form: evaluate per event


@dataclass
class _Label:
    name: str
    rules: list[_Rule]
    default: tuple[Any, int] | None  # (value, source index) or None when unset
    # When every rule is `field == literal` / `field in [literals]` on one field:
    # (path, literals per rule), and the winner is one dictionary lookup.
    lookup: tuple[tuple[str, ...], list[list[Any]]] | None = None


@dataclass
class _Queries:
    """Everything evaluated on one batch frame; depends on its schema, so cached per schema."""

    conds: list[pl.Expr]               # one boolean column per rule (null: a CEL error)
    wins: list[pl.Expr]                # one winner column per label: rule position, or len(rules)
    cond_names: list[str]
    win_names: list[str]
    rule_errors: list[tuple[str, str, int, int]]  # (condition column, winner column, position, source)
    mask_errors: list[tuple[str, list[int]]]      # (missing-field column of a lookup label, its rules)


class _BatchFallback(Exception):
    """This batch holds values the columnar form does not cover: use the per-event path."""


class ColumnarPlan:
    """A policy's rules as Polars expressions, built once per compiled policy."""

    def __init__(self, labels: list[_Label], paths: list[tuple[str, ...]], stateful: set[tuple[str, ...]],
                 string_leaves: list[Call]) -> None:
        self._labels = labels
        self._paths = paths
        self._stateful = stateful
        # String functions over a field: (leaf id, path, function, argument), computed per batch
        # on the column's distinct values when it has few (user agents, countries).
        self._leaf_ids = {id(n): i for i, n in enumerate(string_leaves)}
        self._string_leaves: dict[tuple[str, ...], list[tuple[int, str, str]]] = {}
        for i, n in enumerate(string_leaves):
            target, arg = (n.target, n.args[0]) if n.target is not None else n.args
            self._string_leaves.setdefault(_known_path(target), []).append((i, n.function, arg.value))  # type: ignore[attr-defined]
        self._col = {p: f"f{i}" for i, p in enumerate(paths)}
        self._extract = _make_extractor(paths, stateful)
        self._exprs: dict[tuple[Any, ...], _Queries] = {}  # by the batch frame's schema (column dtypes, masks present)
        self._templates: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}
        self._label_json: dict[int, bytes] = {}  # template key -> its labels as JSON (run_lines)

    # ---- building ---------------------------------------------------------

    @classmethod
    def build(cls, plan: Plan) -> ColumnarPlan | None:
        """The columnar form of ``plan``, or None when the policy uses what it cannot express."""
        if plan.enrichers or plan.uses_now:
            return None
        labels: list[_Label] = []
        paths: dict[tuple[str, ...], None] = {}
        stateful: set[tuple[str, ...]] = set()
        string_leaves: list[Call] = []
        for lp in plan.labels:
            spec = lp.spec
            if lp.models or lp.from_prog is not None or lp.guard is not None or spec.resolve != "first_match":
                return None
            rules = []
            for rp in lp.rules:
                if rp.value_prog is not None:
                    return None
                node = rp.when.ast.root if rp.when is not None else None
                if node is not None and not _only_event_refs(node):
                    return None  # labels.*, enrichers: the per-event path owns those
                rule = _Rule(rp.source_idx, rp.value, node, rp.when)
                if node is not None:
                    try:
                        for p in _leaf_paths(node, stateful):
                            paths[p] = None
                    except Untranslatable:
                        rule.exact_only = True
                    else:
                        string_leaves += [n for n in walk(node) if isinstance(n, Call) and n.function in _STRING_FNS]
                rules.append(rule)
            default = (spec.default, lp.default_idx) if lp.default_idx >= 0 else None
            labels.append(_Label(spec.name, rules, default, _lookup_form(rules)))
        return cls(labels, list(paths), stateful, string_leaves)

    # ---- running ----------------------------------------------------------

    def run(self, events: Sequence[Any], per_event: PerEvent) -> BatchResult:
        """Label ``events``; ``per_event(event) -> (labels, why)`` labels the rows the columns cannot."""
        n = len(events)
        try:
            frame, fallback = self._frame(events)
        except _BatchFallback:
            labels, why = [], []
            for e in events:
                lab, w = per_event(e)
                labels.append(lab)
                why.append(w)
            return BatchResult(labels, why, per_event_rows=n, columnar=False)
        exact_cols = self._exact_columns(events, fallback)
        if exact_cols:
            frame = frame.with_columns(**exact_cols)
        q = self._expressions(frame.schema)
        # with_columns, not select: a literal-only expression list must still give one row per event.
        decided = (frame.lazy().with_columns(q.conds).with_columns(q.wins)
                   .select(q.cond_names + q.win_names).collect())
        counted = decided
        if fallback:
            keep = np.ones(n, dtype=bool)
            keep[fallback] = False
            counted = decided.filter(pl.Series(keep))
        hits, errors = self._counts(q, counted)
        labels, why, keys = self._assemble(decided.select(q.win_names), n)
        for i in fallback:
            labels[i], why[i] = per_event(events[i])
            if keys is not None:
                keys[i] = -1
        return BatchResult(labels, why, hits, errors, per_event_rows=len(fallback), keys=keys)

    def run_lines(self, raws: Sequence[bytes], events: Sequence[Any], per_event: PerEvent,
                  field: str = "labels") -> tuple[BatchResult, list[bytes]]:
        """Label decoded records and splice each one's labels into its original bytes.

        ``raws[i]`` is the JSON text ``events[i]`` was decoded from. The labels'
        JSON is serialised once per distinct outcome, not once per record; a record
        that already has ``field`` (or is not a plain ``{...}``) is re-serialised whole.
        """
        result = self.run(events, per_event)
        dumps = orjson.dumps
        prefix = b"," + dumps(field) + b":"
        cache = self._label_json
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
        if len(cache) > 100_000:
            cache.clear()
        return result, lines

    def _frame(self, events: Sequence[Any]) -> tuple[pl.DataFrame, list[int]]:
        columns, odd_rows, missing, parent_errors = self._extract(events)
        fallback: set[int] = set(odd_rows)
        data: dict[str, Any] = {}
        n = len(events)
        for j, (path, values) in enumerate(zip(self._paths, columns)):
            name = self._col[path]
            series, bad, opaque = _to_series(name, values)
            fallback.update(bad)
            if series.dtype == pl.Float64 and series.is_nan().any():
                raise _BatchFallback  # NaN orders differently in Polars and CEL
            data[name] = series
            leaves = self._string_leaves.get(path)
            if leaves:
                data.update(_string_leaf_columns(series, values, leaves, clean=not bad))
            if path in self._stateful and series.null_count():
                # Null in the column: missing (an error), parent not a map, JSON null, or opaque.
                miss = np.zeros(n, dtype=bool)
                miss[missing[j]] = True
                perr = np.zeros(n, dtype=bool)
                perr[parent_errors[j]] = True
                jnull = series.is_null().to_numpy() & ~miss
                jnull[opaque] = False
                jnull[bad] = False
                data[name + "_miss"] = pl.Series(miss)
                data[name + "_perr"] = pl.Series(perr)
                data[name + "_null"] = pl.Series(jnull)
        data["_n"] = pl.Series(np.zeros(n, dtype=bool))  # the frame's height, even without fields
        return pl.DataFrame(data), sorted(fallback)

    def _exact_columns(self, events: Sequence[Any], fallback: list[int]) -> dict[str, pl.Series]:
        skip = set(fallback)
        out: dict[str, pl.Series] = {}
        for lab in self._labels:
            for r in lab.rules:
                if not r.exact_only:
                    continue
                evaluate = r.program.evaluate
                vals: list[bool | None] = []
                for i, e in enumerate(events):
                    if i in skip:
                        vals.append(None)
                        continue
                    try:
                        got = evaluate({"event": e})
                    except Exception:  # noqa: BLE001 - a CEL error: the rule does not match
                        got = None
                    vals.append(got if got is True or got is False else None)
                out[f"x{r.source_idx}"] = pl.Series(vals, dtype=pl.Boolean)
        return out

    def _expressions(self, schema: Any) -> _Queries:
        """The expressions for a batch frame of this schema (built once per schema)."""
        key = tuple(schema.items())
        cached = self._exprs.get(key)
        if cached is not None:
            return cached
        dtypes = dict(schema.items())
        translate = _Translator(self._col, dtypes, self._leaf_ids).bool_expr
        conds: list[pl.Expr] = []
        wins: list[pl.Expr] = []
        rule_errors: list[tuple[str, str, int, int]] = []
        mask_errors: list[tuple[str, list[int]]] = []
        for li, lab in enumerate(self._labels):
            lookup = self._lookup_winner(lab, dtypes) if lab.lookup is not None else None
            if lookup is not None:
                win, miss = lookup
                wins.append(win.alias(f"w{li}"))
                if miss is not None:
                    # A missing field errors every rule (none matches, so all are reached).
                    conds.append(miss.alias(f"m{li}"))
                    mask_errors.append((f"m{li}", [r.source_idx for r in lab.rules]))
                continue
            firsts = []
            for j, r in enumerate(lab.rules):
                name = f"r{r.source_idx}"
                if r.node is None:
                    cond = pl.lit(True)
                elif r.exact_only:
                    cond = pl.col(f"x{r.source_idx}")
                else:
                    cond = translate(r.node)
                conds.append(cond.cast(pl.Boolean).alias(name))
                firsts.append(pl.when(pl.col(name)).then(pl.lit(j, dtype=pl.Int32)))
                if r.node is not None:
                    rule_errors.append((name, f"w{li}", j, r.source_idx))
            k = pl.lit(len(lab.rules), dtype=pl.Int32)
            wins.append((pl.coalesce(*firsts, k) if firsts else k).alias(f"w{li}"))
        if not conds:
            conds.append(pl.lit(True).alias("_none"))
        q = _Queries(conds, wins, [c.meta.output_name() for c in conds],
                     [f"w{li}" for li in range(len(self._labels))], rule_errors, mask_errors)
        self._exprs[key] = q
        return q

    def _counts(self, q: _Queries, counted: pl.DataFrame) -> tuple[dict[int, int], dict[int, int]]:
        """(hits, errors) per source index over the rows the columns decided."""
        hits: dict[int, int] = {}
        for li, lab in enumerate(self._labels):
            k = len(lab.rules)
            per = np.bincount(counted[f"w{li}"].to_numpy(), minlength=k + 1)
            for j, r in enumerate(lab.rules):
                if per[j]:
                    hits[r.source_idx] = hits.get(r.source_idx, 0) + int(per[j])
            if lab.default is not None and per[k]:
                hits[lab.default[1]] = hits.get(lab.default[1], 0) + int(per[k])
        # An error counts when its rule was reached: no earlier rule of the label matched.
        # Only columns with nulls can have any, so only those are counted.
        exprs: list[pl.Expr] = []
        targets: list[list[int]] = []
        if q.rule_errors:
            nulls = counted.select([name for name, _, _, _ in q.rule_errors]).null_count().row(0)
            for (name, win, j, idx), c in zip(q.rule_errors, nulls):
                if c:
                    exprs.append((pl.col(name).is_null() & (pl.col(win) >= j)).sum().alias(f"_e{len(exprs)}"))
                    targets.append([idx])
        for name, idxs in q.mask_errors:
            exprs.append(pl.col(name).sum().alias(f"_e{len(exprs)}"))
            targets.append(idxs)
        errors: dict[int, int] = {}
        if exprs:
            for idxs, v in zip(targets, counted.select(exprs).row(0)):
                if v:
                    for idx in idxs:
                        errors[idx] = errors.get(idx, 0) + int(v)
        return hits, errors

    def _lookup_winner(self, lab: _Label, dtypes: dict[str, Any]) -> tuple[pl.Expr, pl.Expr | None] | None:
        """(winner expression, missing-row mask) for a label in lookup form, or None to evaluate rule by rule."""
        assert lab.lookup is not None
        path, per_rule = lab.lookup
        c = self._col[path]
        dtype = dtypes[c]
        if dtype not in (pl.String, pl.Int64, pl.Boolean, pl.Null):
            return None  # doubles: -0.0 and 0.0 must stay equal, which hashing does not promise
        fam = _family(dtype)
        table: dict[Any, int] = {}
        null_rule = None
        for j, lits in enumerate(per_rule):
            for v in lits:
                if v is None:
                    null_rule = j if null_rule is None else null_rule
                elif _lit_family(v) == fam:
                    if dtype == pl.Int64 and v.__class__ is float:
                        if not v.is_integer() or not _INT64[0] <= v <= _INT64[1]:
                            continue
                        v = int(v)
                    table.setdefault(v, j)
        k = len(lab.rules)
        none = pl.lit(k, dtype=pl.Int32)
        col = pl.col(c)
        found = (col.replace_strict(list(table), list(table.values()), default=k, return_dtype=pl.Int32)
                 if table and dtype != pl.Null else none)
        if c + "_miss" not in dtypes:
            return pl.when(col.is_null()).then(none).otherwise(found), None
        on_null = pl.lit(null_rule if null_rule is not None else k, dtype=pl.Int32)
        win = pl.when(pl.col(c + "_null")).then(on_null).when(col.is_null()).then(none).otherwise(found)
        return win, pl.col(c + "_miss")

    def _assemble(self, winners: pl.DataFrame, n: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[int] | None]:
        """Per row: a fresh labels dict, the (shared, read-only) why dict of its outcome, and its template key."""
        if not self._labels:
            return [{} for _ in range(n)], [{} for _ in range(n)], None
        # One integer per distinct combination of winners (mixed radix, re-densified
        # before it can overflow); templates are kept across batches while the radix fits.
        key = pl.Series("k", np.zeros(n, dtype=np.int64))
        radix = 1
        stable = True
        for li, lab in enumerate(self._labels):
            size = len(lab.rules) + 1
            if radix * size >= 2**62:
                key = key.rank("dense").cast(pl.Int64)
                radix = n + 1
                stable = False
            key = key * size + winners[f"w{li}"].cast(pl.Int64)
            radix *= size
        ids = key.to_list()
        templates = self._templates if stable else {}
        new = [i for i, k in enumerate(ids) if k not in templates] if templates else list(range(n))
        if new:
            seen: set[int] = set()
            firsts = [i for i in new if not (ids[i] in seen or seen.add(ids[i]))]  # type: ignore[func-returns-value]
            if stable and len(templates) + len(firsts) > 100_000:
                templates.clear()
                self._label_json.clear()
            for i, row in zip(firsts, winners[firsts].rows()):
                lab_d: dict[str, Any] = {}
                why_d: dict[str, Any] = {}
                for lab, j in zip(self._labels, row):
                    if j < len(lab.rules):
                        r = lab.rules[j]
                        lab_d[lab.name] = r.value
                        why_d[lab.name] = r.source_idx
                    elif lab.default is not None:
                        lab_d[lab.name] = lab.default[0]
                        why_d[lab.name] = lab.default[1]
                templates[ids[i]] = (lab_d, why_d)
        return ([templates[k][0].copy() for k in ids], [templates[k][1] for k in ids],
                ids if stable else None)


#: Below this many events the per-event path is as fast (at 512 they break even on the bench policy).
COLUMNAR_MIN_BATCH = 1024


def decide_batch(compiled: CompiledPolicy, plan: ColumnarPlan, events: Sequence[Any]) -> list[Decision]:
    """``Labeler.label_batch`` through the columnar path: Decisions, and the counters as ``label`` leaves them.

    The hits and errors are merged into ``compiled``; the caller (the Labeler) counts the events.
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
    compiled.add_counts(result.hits, result.errors)
    each = (time.perf_counter_ns() - t0) // max(1, len(events))
    return [Decision(lab, why, compiled, e, each) for lab, why, e in zip(result.labels, result.why, events)]


def label_batch_columnar(plan: ColumnarPlan | Plan, events: Sequence[Any], per_event: PerEvent) -> list[dict[str, Any]]:
    """The labels of each event (a convenience over `ColumnarPlan.run`)."""
    cp = plan if isinstance(plan, ColumnarPlan) else ColumnarPlan.build(plan)
    if cp is None:
        return [per_event(e)[0] for e in events]
    return cp.run(events, per_event).labels


# ---- translation -------------------------------------------------------------


def _lookup_form(rules: list[_Rule]) -> tuple[tuple[str, ...], list[list[Any]]] | None:
    """(path, literals per rule) when every rule is `field == literal` or `field in [literals]` on one field."""
    if not rules:
        return None
    path = None
    per_rule: list[list[Any]] = []
    for r in rules:
        n = r.node
        if n is None or r.exact_only or not isinstance(n, Call):
            return None
        try:
            if n.function == "_==_":
                a, b = n.args
                p, lit = (_field_path(a), b) if _field_path(a) is not None else (_field_path(b), a)
                lits = [_literal(lit)]
            elif n.function == "@in" and isinstance(n.args[1], CreateList):
                p = _field_path(n.args[0])
                lits = [_literal(el) for el in n.args[1].elements]
            else:
                return None
        except Untranslatable:
            return None
        if p is None or (path is not None and p != path):
            return None
        path = p
        per_rule.append(lits)
    return (path, per_rule) if path is not None and len(rules) >= 4 else None


def _known_path(node: Expr) -> tuple[str, ...]:
    """The field path of a node translation already accepted as one (so it is never None here)."""
    got = _field_path(node)
    assert got is not None, "translation admitted a leaf that is not a field path"
    return got


def _only_event_refs(node: Expr) -> bool:
    return all(n.name == "event" for n in walk(node) if isinstance(n, Ident))


def _field_path(node: Expr) -> tuple[str, ...] | None:
    got = select_path(node)
    if got is None or got[0].name != "event" or len(got[1]) < 2:
        return None
    return got[1][1:]


def _has_path(n: Select) -> tuple[str, ...]:
    """The field path `has(event.a.b)` tests; Untranslatable for anything else."""
    if isinstance(n.operand, Ident):
        if n.operand.name != "event":
            raise Untranslatable
        return (n.field,)
    base = _field_path(n.operand)
    if base is None:
        raise Untranslatable
    return (*base, n.field)


def _literal(node: Expr) -> Any:
    if not isinstance(node, Literal):
        raise Untranslatable
    v = node.value
    if v is None or v.__class__ in (bool, str, float):
        return v
    if isinstance(v, int):
        if not _INT64[0] <= v <= _INT64[1]:
            raise Untranslatable
        return int(v)
    raise Untranslatable  # bytes and other literals


def _leaf_paths(node: Expr, stateful: set[tuple[str, ...]] | None = None) -> list[tuple[str, ...]]:
    """The field paths a translatable condition reads; Untranslatable otherwise.

    Paths read by `==`, `!=`, `in` or `has` go into ``stateful``: there a JSON
    null and a missing field give different results, so the batch tells them apart.
    """
    out: list[tuple[str, ...]] = []
    states: set[tuple[str, ...]] = set()

    def bool_node(n: Expr) -> None:
        if isinstance(n, Literal):
            return
        if isinstance(n, Select) and n.test_only:
            out.append(_has_path(n))
            states.add(out[-1])
            return
        p = _field_path(n)
        if p is not None:
            out.append(p)
            return
        if not isinstance(n, Call):
            raise Untranslatable
        f = n.function
        if f in ("_&&_", "_||_"):
            bool_node(n.args[0])
            bool_node(n.args[1])
        elif f == "!_":
            bool_node(n.args[0])
        elif f in ("_==_", "_!=_") or f in _ORDER_OPS:
            a, b = n.args
            pa_, pb = _field_path(a), _field_path(b)
            if pa_ is not None and isinstance(b, Literal):
                _literal(b)
                out.append(pa_)
            elif pb is not None and isinstance(a, Literal):
                _literal(a)
                out.append(pb)
            else:
                raise Untranslatable
            if f in _ORDER_OPS and (_literal(b if pa_ is not None else a).__class__ in (bool, type(None))):
                raise Untranslatable
            if f not in _ORDER_OPS:
                states.add(out[-1])
        elif f == "@in":
            p = _field_path(n.args[0])
            if p is None or not isinstance(n.args[1], CreateList):
                raise Untranslatable
            for el in n.args[1].elements:
                _literal(el)
            out.append(p)
            states.add(p)
        elif f in _STRING_FNS:
            if n.target is not None and len(n.args) == 1:
                target, arg = n.target, n.args[0]
            elif n.target is None and f == "matches" and len(n.args) == 2:
                target, arg = n.args
            else:
                raise Untranslatable
            p = _field_path(target)
            if p is None or not isinstance(arg, Literal) or arg.value.__class__ is not str:
                raise Untranslatable
            if f == "matches" and not _regex_ok(arg.value):
                raise Untranslatable
            out.append(p)
        else:
            raise Untranslatable

    bool_node(node)
    if stateful is not None:
        stateful.update(states)
    return out


def _regex_ok(pattern: str) -> bool:
    if not _SAFE_REGEX.match(pattern):
        return False
    try:
        pl.Series(["x"]).str.contains(pattern)
    except Exception:  # noqa: BLE001 - Rust's regex refuses it: evaluate per event
        return False
    return True


def _family(dtype: Any) -> str:
    if dtype == pl.String:
        return "str"
    if dtype in (pl.Int64, pl.Float64):
        return "num"
    if dtype == pl.Boolean:
        return "bool"
    return "null"


def _lit_family(v: Any) -> str:
    if v is None:
        return "null"
    if v.__class__ is bool:
        return "bool"
    if v.__class__ is str:
        return "str"
    return "num"


_NULL_BOOL = pl.lit(None, dtype=pl.Boolean)


class _Translator:
    """CEL node -> Polars boolean expression whose null means a CEL error."""

    def __init__(self, columns: dict[tuple[str, ...], str], dtypes: dict[str, Any], string_leaves: dict[int, int]) -> None:
        self.columns = columns
        self.dtypes = dtypes
        self.string_leaves = string_leaves

    def bool_expr(self, n: Expr) -> pl.Expr:
        if isinstance(n, Literal):
            return pl.lit(n.value, dtype=pl.Boolean) if n.value.__class__ is bool else _NULL_BOOL
        if isinstance(n, Select) and n.test_only:
            c = self.columns[_has_path(n)]
            if c + "_miss" not in self.dtypes:
                return pl.lit(True)  # no nulls in this batch: present on every row
            # has(): error when the parent is not a map, false when the key is absent.
            return pl.when(pl.col(c + "_perr")).then(_NULL_BOOL).otherwise(~pl.col(c + "_miss"))
        p = _field_path(n)
        if p is not None:
            c = self.columns[p]
            return pl.col(c) if self.dtypes[c] == pl.Boolean else _NULL_BOOL
        assert isinstance(n, Call)
        f = n.function
        if f == "_&&_":
            return self.bool_expr(n.args[0]) & self.bool_expr(n.args[1])
        if f == "_||_":
            return self.bool_expr(n.args[0]) | self.bool_expr(n.args[1])
        if f == "!_":
            return ~self.bool_expr(n.args[0])
        if f in ("_==_", "_!=_"):
            a, b = n.args
            path, lit = (_known_path(a), _literal(b)) if _field_path(a) is not None else (_known_path(b), _literal(a))
            eq = self._equal_any(self.columns[path], [lit])
            return eq if f == "_==_" else ~eq
        if f in _ORDER_OPS:
            a, b = n.args
            op = _ORDER_OPS[f]
            if _field_path(a) is not None:
                path, lit = _known_path(a), _literal(b)
            else:
                path, lit, op = _known_path(b), _literal(a), _FLIP[op]
            c = self.columns[path]
            if _family(self.dtypes[c]) != _lit_family(lit):
                return _NULL_BOOL  # no such overload (or null / missing): an error
            col = pl.col(c)
            compared: pl.Expr = {"lt": col < lit, "le": col <= lit, "gt": col > lit, "ge": col >= lit}[op]
            return compared
        if f == "@in":
            path = _known_path(n.args[0])
            lits = [_literal(el) for el in n.args[1].elements]  # type: ignore[attr-defined]
            return self._equal_any(self.columns[path], lits)
        # string functions: precomputed when the column has few distinct values
        leaf = f"s{self.string_leaves[id(n)]}"
        if leaf in self.dtypes:
            return pl.col(leaf)
        target, arg = (n.target, n.args[0]) if n.target is not None else n.args
        c = self.columns[_known_path(target)]
        if self.dtypes[c] != pl.String:
            return _NULL_BOOL
        applied: pl.Expr = _apply_string_fn(pl.col(c), f, arg.value)  # type: ignore[attr-defined]
        return applied

    def _equal_any(self, c: str, lits: list[Any]) -> pl.Expr:
        """CEL `field == l1 || field == l2 ...` (heterogeneous equality, never an error on values)."""
        fam = _family(self.dtypes[c])
        same = [v for v in lits if _lit_family(v) == fam and fam != "null"]
        col = pl.col(c)
        if not same:
            present = pl.lit(False)
        elif fam == "num":
            if self.dtypes[c] == pl.Int64 and all(v.__class__ is int for v in same):
                present = col.is_in(same)
            else:
                present = pl.any_horizontal(*[col == v for v in same]) if len(same) > 1 else col == same[0]
        else:
            present = col.is_in(same) if len(same) > 1 else col == same[0]
        if c + "_miss" not in self.dtypes:
            return present  # no nulls in this batch
        present = present.fill_null(False)
        if any(v is None for v in lits):
            return pl.when(pl.col(c + "_miss")).then(_NULL_BOOL).otherwise(pl.col(c + "_null") | present)
        return pl.when(~pl.col(c + "_miss")).then(present)  # null (an error) where missing


__all__ = ["COLUMNAR_MIN_BATCH", "BatchResult", "ColumnarPlan", "decide_batch", "label_batch_columnar"]
