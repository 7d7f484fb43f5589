"""The rule-indexing pass: runs of first-match rules on one field become one lookup.

The second step of ``compile_policy`` (plan → **index** → generate → exec). It reads
the rules of each first-match label as CEL ASTs and folds runs of rules that test
the same field(s) against constants into one step:

- equality tests (``F == c``, ``c == F``, ``F in [c, ...]``, or a conjunction of
  those over the same distinct fields) become one dict from the field values to
  the earliest rule's ``(value, source code)``;
- ``F.matches("...")`` tests on one field become one RE2 Set pass;
- ``F.startsWith("...")`` tests on one field, each optionally refined by ``G == "..."``
  on one other field, become one table of prefixes by length (route tables).

The pass decides *what* is folded and builds the tables; ``engine/generate.py``
writes the Python that reads them. Exactness: a folded run keeps rule order (the
earliest matching rule of the run wins, as in the chain), and a field that is
absent or of a type the lookup cannot judge makes the step raise, so the exact
path decides (`generate` re-decides the run rule by rule).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import product
from typing import Any, Literal

from activelabel.cel.ast import Call, CreateList, Expr, Ident, Select, select_path
from activelabel.cel.ast import Literal as CelLiteral
from activelabel.engine.plan import Plan, RulePlan

#: Runs shorter than this stay an if/elif chain (a lookup has a fixed cost).
MIN_DISPATCH_RUN = 3

#: A field a run tests, named by its path from a root: ("event", "http", "status").
FieldKey = tuple[str, ...]


class NotBool(Exception):
    """A value that does not fit where it is used (the exact path reports CEL's error)."""


@dataclass
class Dispatch:
    """A run of first-match rules replaced by one lookup giving ``(value, code)`` or None.

    ``kind`` is ``"eq"`` (``table`` maps a field value, or a tuple of them in ``fields``
    order, to the earliest rule's result) or ``"rx"`` (``matcher`` takes the field's
    value; for ``"px"`` it takes the prefix field's string and, when the run has a refining
    field, that field's string: the generated code calls it only when they are strings, and
    runs the rules one by one otherwise). ``int_fields[n]``: field ``n`` is compared with int constants, so a bool
    must be kept out of the lookup (``True == 1`` in Python, not in CEL).
    ``bulk``: every rule of the run fails exactly when its first one fails (they all
    test one field the same way), so an error can be counted for the whole run at once.
    """

    kind: Literal["eq", "rx", "px"]
    fields: list[Expr]  # the field nodes, in key order (one per key element)
    rules: list[RulePlan]
    bulk: bool
    table: dict[Any, tuple[Any, int]] | None = None
    int_fields: tuple[bool, ...] = ()
    matcher: Callable[..., tuple[Any, int] | None] | None = None


#: One step of a first-match chain: a single rule, or a folded run.
Step = RulePlan | Dispatch


def index_plan(plan: Plan, *, every_rule: bool = False) -> list[list[Step]]:
    """Per label (in plan order): its first-match steps, long runs on the same fields folded.

    With ``every_rule`` (conflict tracking) every rule is evaluated anyway, so nothing is folded.
    """
    return [index_rules(lp.rules) if lp.spec.resolve == "first_match" and not every_rule else list(lp.rules)
            for lp in plan.labels]


def index_rules(rules: Sequence[RulePlan]) -> list[Step]:
    """``rules`` in order, each run of at least ``MIN_DISPATCH_RUN`` foldable rules as one ``Dispatch``."""
    steps: list[Step] = []
    i = 0
    while i < len(rules):
        px = _prefix_run(rules, i)
        if px is not None:
            steps.append(px)
            i += len(px.rules)
            continue
        run_kind: str | None = None
        run: list[tuple[RulePlan, Any]] = []
        run_fields: tuple[FieldKey, ...] | None = None
        run_nodes: list[Expr] = []
        j = i
        while j < len(rules):
            rp = rules[j]
            if rp.when is None or rp.value_prog is not None:
                break
            root = rp.when.ast.root
            eq = _eq_keys(root)
            rx = None if eq else _regex_of(root)
            if eq:
                keys = [field_key(f) for f, _ in eq]
                if len(set(keys)) != len(keys):
                    break
                order = sorted(range(len(keys)), key=lambda k: keys[k])
                kind = "eq"
                key_fields = tuple(keys[k] for k in order)
                nodes = [eq[k][0] for k in order]
                payload: Any = [eq[k][1] for k in order]
            elif rx:
                kind, key_fields, nodes, payload = "rx", (field_key(rx[0]),), [rx[0]], rx[1]
            else:
                break
            if run_kind is None:
                run_kind, run_fields, run_nodes = kind, key_fields, nodes
            elif kind != run_kind or key_fields != run_fields:
                break
            run.append((rp, payload))
            j += 1
        if len(run) >= MIN_DISPATCH_RUN and run_fields is not None:
            rules_in_run = [rp for rp, _ in run]
            bulk = len(run_fields) == 1
            if run_kind == "eq":
                table, int_fields = _eq_table(run, len(run_fields))
                steps.append(Dispatch("eq", run_nodes, rules_in_run, bulk, table=table, int_fields=int_fields))
            else:
                matcher = regex_set([pat for _, pat in run], [(rp.value, rp.source_idx) for rp, _ in run])
                steps.append(Dispatch("rx", run_nodes, rules_in_run, bulk, matcher=matcher))
            i = j
        else:
            steps.append(rules[i])
            i += 1
    return steps


def _prefix_test(node: Expr) -> tuple[Expr, str, Expr | None, str | None] | None:
    """(F, prefix, G, d) for `F.startsWith("p")` or `F.startsWith("p") && G == "d"` (either order)."""
    parts = _conjuncts(node)
    if len(parts) > 2:
        return None
    starts = [p for p in parts if isinstance(p, Call) and p.function == "startsWith" and p.target is not None
              and len(p.args) == 1 and isinstance(p.args[0], CelLiteral) and p.args[0].value.__class__ is str
              and _path_like(p.target)]
    if len(starts) != 1:
        return None
    st = starts[0]
    assert isinstance(st, Call) and st.target is not None
    lit = st.args[0]
    assert isinstance(lit, CelLiteral)
    prefix: str = lit.value
    if len(parts) == 1:
        return st.target, prefix, None, None
    other = parts[1] if parts[0] is st else parts[0]
    eq = _eq_test(other)
    if eq is None or len(eq[1]) != 1 or eq[1][0].__class__ is not str or not (
            isinstance(other, Call) and other.function == "_==_"):
        return None
    return st.target, prefix, eq[0], eq[1][0]


def _prefix_run(rules: Sequence[RulePlan], i: int) -> Dispatch | None:
    """The run of prefix rules starting at ``rules[i]`` as one ``px`` Dispatch, or None when shorter than the minimum."""
    run: list[tuple[RulePlan, str, str | None]] = []
    f_key: FieldKey | None = None
    g_key: FieldKey | None = None
    nodes: list[Expr] = []
    g_node: Expr | None = None
    for rp in rules[i:]:
        if rp.when is None or rp.value_prog is not None:
            break
        got = _prefix_test(rp.when.ast.root)
        if got is None:
            break
        f, prefix, g, d = got
        fk = field_key(f)
        if f_key is None:
            f_key, nodes = fk, [f]
        elif fk != f_key:
            break
        if g is not None:
            gk = field_key(g)
            if gk == f_key or (g_key is not None and gk != g_key):
                break
            if g_key is None:
                g_key, g_node = gk, g
        run.append((rp, prefix, d))
    if len(run) < MIN_DISPATCH_RUN:
        return None
    if g_node is not None:
        nodes.append(g_node)
    by_len: dict[int, dict[str, list[tuple[int, str | None, tuple[Any, int]]]]] = {}
    for pos, (rp, prefix, d) in enumerate(run):
        by_len.setdefault(len(prefix), {}).setdefault(prefix, []).append((pos, d, (rp.value, rp.source_idx)))
    tables = sorted(by_len.items())

    def first_prefix(s: str, g: str | None = None) -> tuple[Any, int] | None:
        # Called with strings only: no rule of the run can error, so the earliest true one wins.
        best_pos = len(run)
        best: tuple[Any, int] | None = None
        for n, table in tables:
            cands = table.get(s[:n])
            if cands is None or len(s) < n:
                continue
            for pos, d, res in cands:
                if pos >= best_pos:
                    break
                if d is None or d == g:
                    best_pos, best = pos, res
                    break
        return best

    return Dispatch("px", nodes, [rp for rp, _, _ in run], False, matcher=first_prefix)


def field_key(node: Expr) -> FieldKey:
    """The path a field node reads (``a.b`` and ``a["b"]`` read the same field)."""
    got = select_path(node)
    assert got is not None, "field_key is only called on nodes _path_like accepted"
    return got[1]


def _eq_test(node: Expr) -> tuple[Expr, list[Any]] | None:
    """(field node, constant keys) for `F == c`, `c == F` or `F in [c, ...]` with str/int constants."""
    if not isinstance(node, Call) or node.target is not None:
        return None
    if node.function == "_==_" and len(node.args) == 2:
        a, b = node.args
        if isinstance(b, CelLiteral) and _path_like(a):
            field, consts = a, [b.value]
        elif isinstance(a, CelLiteral) and _path_like(b):
            field, consts = b, [a.value]
        else:
            return None
    elif (node.function == "@in" and len(node.args) == 2 and isinstance(node.args[1], CreateList)
          and _path_like(node.args[0])):
        field = node.args[0]
        elements = node.args[1].elements
        if not all(isinstance(e, CelLiteral) for e in elements):
            return None
        consts = [e.value for e in elements if isinstance(e, CelLiteral)]
    else:
        return None
    if not consts or not all(c.__class__ in (str, int) for c in consts):
        return None
    return field, consts


def _conjuncts(node: Expr) -> list[Expr]:
    if isinstance(node, Call) and node.function == "_&&_" and node.target is None:
        return [part for arg in node.args for part in _conjuncts(arg)]
    return [node]


def _eq_keys(node: Expr) -> list[tuple[Expr, list[Any]]] | None:
    """For a conjunction of equality tests: [(field node, keys), ...]."""
    tests = []
    for part in _conjuncts(node):
        got = _eq_test(part)
        if got is None:
            return None
        tests.append(got)
    return tests


def _regex_of(node: Expr) -> tuple[Expr, str] | None:
    """(field node, pattern) for `F.matches("...")`."""
    if (isinstance(node, Call) and node.function == "matches" and node.target is not None
            and len(node.args) == 1 and isinstance(node.args[0], CelLiteral)
            and node.args[0].value.__class__ is str and _path_like(node.target)):
        return node.target, node.args[0].value
    return None


def _path_like(node: Expr) -> bool:
    """A field path from a root: `a.b.c`, or `a["b-c"]` with a constant string key."""
    while True:
        if isinstance(node, Select) and not node.test_only:
            node = node.operand
        elif (isinstance(node, Call) and node.function == "_[_]" and node.target is None and len(node.args) == 2
              and isinstance(node.args[1], CelLiteral) and node.args[1].value.__class__ is str):
            node = node.args[0]
        else:
            return isinstance(node, Ident)


def _eq_table(run: list[tuple[RulePlan, Any]], n_fields: int) -> tuple[dict[Any, tuple[Any, int]], tuple[bool, ...]]:
    """A dict from field values to the earliest rule's (value, code), and which fields take ints."""
    table: dict[Any, tuple[Any, int]] = {}
    int_fields = [False] * n_fields
    for rp, key_lists in run:
        for n, consts in enumerate(key_lists):
            int_fields[n] = int_fields[n] or any(c.__class__ is int for c in consts)
        for combo in product(*key_lists):
            table.setdefault(combo[0] if n_fields == 1 else combo, (rp.value, rp.source_idx))
    return table, tuple(int_fields)


def regex_set(patterns: list[str], results: list[tuple[Any, int]]) -> Callable[[Any], tuple[Any, int] | None]:
    """One RE2 pass for many `matches` rules: the earliest matching rule's (value, code), or None."""
    import re2

    options = re2.Options()
    options.log_errors = False
    rset = re2.Set.SearchSet(options)
    for pat in patterns:
        rset.Add(pat)
    rset.Compile()
    match = rset.Match

    def first_match(s: Any) -> tuple[Any, int] | None:
        if s.__class__ is not str:
            raise NotBool  # not a string: the exact path reports CEL's error
        hits = match(s)
        return results[min(hits)] if hits else None

    return first_match


__all__ = ["MIN_DISPATCH_RUN", "Dispatch", "NotBool", "Step", "field_key", "index_plan", "index_rules", "regex_set"]
