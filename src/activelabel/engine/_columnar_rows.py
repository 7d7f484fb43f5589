"""Columnar nodes that reorganise rows: macros over every element, one-field expressions per distinct value,
and whole expressions per row.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from activelabel import cel
from activelabel.cel.emit import PythonEmitter
from activelabel.engine._columnar_extract import (
    K_BOOL,
    K_ERRA,
    K_ERRF,
    K_NULL,
    K_OTHER,
    K_STR,
    Col,
    const_kind,
    make_extractor,
)
from activelabel.engine._columnar_nodes import (
    _UNHASHABLE,
    Batch,
    LabelNode,
    Node,
    PathNode,
    _Gathered,
    _memo_key,
    bool_parts,
)
from activelabel.engine._columnar_ops import ExactCallNode, HasNode, IndexNode, LabelHasNode, SelectNode, StringFnNode
from activelabel.engine.exact import is_absent_error

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
