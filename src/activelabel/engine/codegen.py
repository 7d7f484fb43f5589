"""Policy → one generated Python function (the per-event hot path).

The function reads every field the rules use once into a local (the CEL
emitter's prologue), evaluates each label's rules as one ``if/elif`` chain,
and records for each label only its value and an integer source code. A label
whose fast code raises is handed to the exact path (``exact.decide_label``),
which also counts the rule errors: the fast path never counts anything but
hits, so it stays as cheap as hand-written code.

``generate(plan)`` returns the source and the namespace to ``exec`` it in;
``Labeler.generated_source`` shows it for debugging, as jinja2's ``raw=True``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from activelabel.cel import ast as cast
from activelabel.cel.codegen import MISSING, PythonEmitter
from activelabel.engine.plan import LabelPlan, Plan
from activelabel.policy import label_types


class NotBool(Exception):
    """A value that does not fit where it is used (the exact path reports CEL's error)."""


def _root(node: Any) -> Any:
    return node.root if hasattr(node, "root") else node


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.depth = 1

    def __call__(self, line: str) -> None:
        self.lines.append("    " * self.depth + line)


def _fail() -> Any:
    raise NotBool


def generate(plan: Plan, *, every_rule: bool, slow: Callable[..., Any], resolvers: list[Any], hits: list[int],
             errors: list[int], exact_rules: Callable[..., Any], runs: list[Any]) -> tuple[str, dict[str, Any]]:
    """The source of ``label_event(event) -> (labels, codes)`` and its namespace."""
    ns: dict[str, Any] = {"_MISSING": MISSING, "_NotBool": NotBool, "_slow": slow, "_hits": hits, "_errors": errors,
                          "_bisect": label_types.bucket_index, "_fail": _fail, "_exact_rules": exact_rules}
    labels_referenced = {
        ref.path[1]
        for lp in plan.labels
        for rp in lp.rules
        for prog in (rp.when, rp.value_prog)
        if prog is not None
        for ref in __import__("activelabel.cel", fromlist=["references"]).references(prog.ast)
        if ref.path[0] == "labels" and len(ref.path) > 1
    }
    roots = {"event": "event", "labels": "out", "now": "_now"}
    for ep in plan.enrichers:
        roots[ep.spec.name] = f"_enr_{ep.source_idx}"
    bound = {("labels", name): f"_L_{lp.index}" for lp in plan.labels for name in [lp.spec.name] if name in labels_referenced}
    em = PythonEmitter(ns, roots=roots, bound=bound)

    # Emit every expression first: the prologue must know every hoisted path.
    exprs: dict[int, str] = {}

    def emit(prog: Any) -> str:
        key = id(prog)
        if key not in exprs:
            node = _root(prog.ast) if hasattr(prog, "ast") else prog  # a Program or a bare sub-node
            exprs[key] = em.emit(node)
        return exprs[key]

    conds: dict[int, str] = {}

    def emit_cond(prog: Any) -> str:
        # A Python bool, or a raise when CEL's value is not a bool: `if <it>:` is exact.
        key = id(prog)
        if key not in conds:
            conds[key] = em.emit_bool(_root(prog.ast))
        return conds[key]

    for ep in plan.enrichers:
        emit(ep.key_prog)
    for lp in plan.labels:
        if lp.from_prog is not None:
            emit(lp.from_prog)
        for rp in lp.rules:
            if rp.when is not None:
                emit_cond(rp.when)
            if rp.value_prog is not None:
                emit(rp.value_prog)

    hoisted = {**em.hoisted_paths(), **bound}

    def missing_test(prog: Any) -> str | None:
        """For a strict condition: a test true when a field it reads is absent (so it errors)."""
        return _missing_test(_root(prog.ast), prog.ast, hoisted)

    w = _Writer()
    bind_names = ["'event': event", "'labels': out"]
    if plan.uses_now:
        bind_names.append("'now': _now")
    w("out = {}")
    w("why = {}")
    if plan.uses_now:
        ns["_clock_now"] = None  # set by the Labeler
        w("_now = _clock_now()")
    for line in em.prologue("event"):
        w(line)
    for ep in plan.enrichers:
        i = ep.source_idx
        ns[f"_lookup_{i}"] = ep.runtime.lookup
        w("try:")
        w(f"    _k = {emit(ep.key_prog)}")
        w("except Exception:")
        absent = missing_test(ep.key_prog)
        if absent is not None:  # the key field is absent: a miss, and an error of the key
            w(f"    if {absent}:")
            w(f"        _k = None; _errors[{ep.source_idx}] += 1")
            w("    else:")
            w(f"        _k = _slow({-1 - plan.enrichers.index(ep)}, {{{', '.join(bind_names)}}})")
        else:
            w(f"    _k = _slow({-1 - plan.enrichers.index(ep)}, {{{', '.join(bind_names)}}})")
        w(f"_enr_{i} = _lookup_{i}(_k)")
        bind_names.append(f"{ep.spec.name!r}: _enr_{i}")
        for line in em.prologue(ep.spec.name):
            w(line)
    bindings = "{" + ", ".join(bind_names) + "}"

    for lp in plan.labels:
        _label_block(w, ns, lp, plan, emit, emit_cond, bindings, every_rule, resolvers, runs, missing_test)
        name = lp.spec.name
        if lp.guard is not None:
            ns[f"_guard_{lp.index}"] = lp.guard.admit
            w(f"if _v is not _MISSING: _v = _guard_{lp.index}(_v)")
        # A label with a default is always set (the exact path applies it too).
        ind = "" if lp.default_idx >= 0 and lp.guard is None else "    "
        if ind:
            w("if _v is not _MISSING:")
        w(f"{ind}out[{name!r}] = _v")
        w(f"{ind}why[{name!r}] = _w")
        if lp.spec.resolve == "first_match" and not lp.models:
            w(f"{ind}_hits[_w] += 1")
        else:
            w(f"{ind}_hits[_w if _w.__class__ is int else _w[0]] += 1")
        if ("labels", name) in bound:
            w(f"_L_{lp.index} = _v")
    w("return out, why")
    source = "def label_event(event):\n" + "\n".join(w.lines) + "\n"
    return source, ns


def _const(ns: dict[str, Any], value: Any) -> str:
    if value is None or value.__class__ in (bool, int, str):
        return repr(value)
    name = f"_C{len(ns)}"
    ns[name] = value
    return name


def _label_block(w: _Writer, ns: dict[str, Any], lp: LabelPlan, plan: Plan, emit: Callable[[Any], str],
                 emit_cond: Callable[[Any], str], bindings: str, every_rule: bool, resolvers: list[Any],
                 runs: list[Any], missing_test: Callable[[Any], str | None]) -> None:
    spec = lp.spec
    li = lp.index
    w(f"# label {spec.name} ({spec.type}, {spec.resolve})")
    if lp.models:
        # Models predict through the exact path; their cost dwarfs rule evaluation.
        w(f"_v, _w = _slow({li}, {bindings})")
        return
    default_v = _const(ns, spec.default) if lp.default_idx >= 0 else "_MISSING"
    default_w = str(lp.default_idx)
    if lp.from_prog is not None:
        ns[f"_BN_{li}"] = spec.bucket_names
        ns[f"_BB_{li}"] = spec.bounds
        w("try:")
        w(f"    _x = {emit(lp.from_prog)}")
        w("except Exception:")
        absent = missing_test(lp.from_prog)
        if absent is not None:
            w(f"    if {absent}:")
            w(f"        _errors[{lp.from_idx}] += 1; _v = {default_v}; _w = {default_w}")
            w("    else:")
            w(f"        _v, _w = _slow({li}, {bindings})")
        else:
            w(f"    _v, _w = _slow({li}, {bindings})")
        w("else:")
        w("    if (_x.__class__ is int or _x.__class__ is float) and _x == _x:")
        w(f"        _v = _BN_{li}[_bisect(_BB_{li}, _x)]; _w = {lp.from_idx}")
        w("    else:  # null, a string, NaN...: an error of `from`, counted like a rule error")
        w(f"        _errors[{lp.from_idx}] += 1; _v = {default_v}; _w = {default_w}")
        return
    check = None
    if any(rp.value_prog is not None for rp in lp.rules):
        ns[f"_ENUM_{li}"] = frozenset(spec.values or ())
        check = label_types.generated_check(spec.type, f"_ENUM_{li}")
    collect = every_rule or spec.resolve != "first_match"
    if not collect:
        _first_match_chain(w, ns, lp, emit, emit_cond, bindings, check, default_v, default_w, runs, missing_test)
        return
    w("try:")
    w("    _cs = []")
    for rp in lp.rules:
        value = _const(ns, rp.value) if rp.value_prog is None else check.format(emit(rp.value_prog))
        if rp.when is None:
            w(f"    _cs.append(({value}, {rp.source_idx}))")
            continue
        w(f"    if {emit_cond(rp.when)}: _cs.append(({value}, {rp.source_idx}))")
    w("except Exception:")
    w(f"    _v, _w = _slow({li}, {bindings})")
    w("else:")
    ns[f"_resolve_{li}"] = resolvers[li]
    w(f"    _v, _w = _resolve_{li}(_cs)")


def _first_match_chain(w: _Writer, ns: dict[str, Any], lp: LabelPlan, emit: Callable[[Any], str],
                       emit_cond: Callable[[Any], str], bindings: str, check: str | None,
                       default_v: str, default_w: str, runs: list[Any],
                       missing_test: Callable[[Any], str | None]) -> None:
    """First match as a loop body of `if ...: break` steps, each in its own `try`.

    A step whose fast code raises (a missing field, a wrong type) is re-decided
    exactly on its own, and the chain goes on: one odd field costs one rule's
    exact evaluation, not the whole label's. `try` costs nothing in CPython 3.11+
    until something raises.
    """
    w("while True:")
    closed = False
    for step in _dispatch_steps(lp.rules, emit, ns):
        if isinstance(step, _Dispatch):
            rules, bulk, test = step.rules, step.bulk, step.test
        else:
            rules, bulk, test = [step], False, None
        runs.append((lp, rules, bulk))
        run_id = len(runs) - 1
        w("    try:")
        if test is not None:
            w(f"        if (_t := {test}) is not None:")
            w("            _v, _w = _t; break")
        else:
            rp = step
            value = _const(ns, rp.value) if rp.value_prog is None else check.format(emit(rp.value_prog))  # type: ignore[union-attr]
            if rp.when is None:
                w(f"        _v = {value}; _w = {rp.source_idx}; break")
            else:
                w(f"        if {emit_cond(rp.when)}:")
                w(f"            _v = {value}; _w = {rp.source_idx}; break")
        w("    except Exception:")
        # A field the step reads is absent: when CEL certainly errors, count it here
        # instead of asking the evaluator (events often lack a field many rules read).
        absent = missing_test(rules[0].when) if rules[0].when is not None and (bulk or test is None) else None
        if absent is not None:
            if bulk:
                ns[f"_RUN_ERR_{run_id}"] = [rp.source_idx for rp in rules]
                w(f"        if {absent}:")
                w(f"            for _i in _RUN_ERR_{run_id}: _errors[_i] += 1")
            else:
                w(f"        if {absent}:")
                w(f"            _errors[{rules[0].source_idx}] += 1")
            w(f"        elif (_t := _exact_rules({run_id}, {bindings})) is not None:")
        else:
            w(f"        if (_t := _exact_rules({run_id}, {bindings})) is not None:")
        w("            _v, _w = _t; break")
        if test is None and step.when is None and step.value_prog is None:
            closed = True  # an unconditional constant: later rules can never win
            break
    if not closed:
        w(f"    _v = {default_v}; _w = {default_w}; break")


def _missing_test(node: Any, ast: Any, hoisted: dict[tuple[str, ...], str]) -> str | None:
    """``_a is _MISSING or ...`` over the fields a *strict* condition reads, else None.

    Strict: no operator that can absorb or skip an error (`&&`, `||`, `?:`, `has`,
    macros), so an absent field makes the whole condition an error, which is what
    the exact path would report.
    """
    from activelabel.cel import references

    for n in cast.walk(node):
        if isinstance(n, cast.Macro) or (isinstance(n, cast.Select) and n.test_only):
            return None
        if isinstance(n, cast.Call) and n.function in ("_&&_", "_||_", "_?_:_"):
            return None
    names = []
    for ref in references(ast):
        local = hoisted.get(tuple(ref.path))
        if local is None:
            return None
        names.append(local)
    if not names:
        return None
    return " or ".join(f"{name} is _MISSING" for name in dict.fromkeys(names))


# ---- rule indexing: runs of rules testing one field become one lookup ----------

#: Runs shorter than this stay an if/elif chain (a lookup has a fixed cost).
MIN_DISPATCH_RUN = 3


class _Dispatch:
    """A run of first-match rules replaced by one expression giving (value, code) or None.

    ``bulk``: every rule of the run fails exactly when its first one fails (they all
    test one field the same way), so an error can be counted for the whole run at once.
    """

    def __init__(self, test: str, rules: list[Any], bulk: bool) -> None:
        self.test = test
        self.rules = rules
        self.bulk = bulk


def _eq_test(node: Any) -> tuple[Any, list[Any]] | None:
    """(field node, constant keys) for `F == c`, `c == F` or `F in [c, ...]` with str/int constants."""
    if not isinstance(node, cast.Call) or node.target is not None:
        return None
    if node.function == "_==_" and len(node.args) == 2:
        a, b = node.args
        if isinstance(b, cast.Literal) and _path_like(a):
            field, consts = a, [b.value]
        elif isinstance(a, cast.Literal) and _path_like(b):
            field, consts = b, [a.value]
        else:
            return None
    elif node.function == "@in" and len(node.args) == 2 and isinstance(node.args[1], cast.CreateList) and _path_like(node.args[0]):
        field = node.args[0]
        if not all(isinstance(e, cast.Literal) for e in node.args[1].elements):
            return None
        consts = [e.value for e in node.args[1].elements]
    else:
        return None
    if not consts or not all(c.__class__ in (str, int) for c in consts):
        return None
    return field, consts


def _conjuncts(node: Any) -> list[Any]:
    if isinstance(node, cast.Call) and node.function == "_&&_" and node.target is None:
        return [part for arg in node.args for part in _conjuncts(arg)]
    return [node]


def _eq_keys(node: Any) -> list[tuple[Any, list[Any]]] | None:
    """For a conjunction of equality tests on distinct fields: [(field node, keys), ...]."""
    tests = []
    for part in _conjuncts(node):
        got = _eq_test(part)
        if got is None:
            return None
        tests.append(got)
    return tests


def _regex_of(node: Any) -> tuple[Any, str] | None:
    """(field node, pattern) for `F.matches("...")`."""
    if (isinstance(node, cast.Call) and node.function == "matches" and node.target is not None
            and len(node.args) == 1 and isinstance(node.args[0], cast.Literal)
            and node.args[0].value.__class__ is str and _path_like(node.target)):
        return node.target, node.args[0].value
    return None


def _path_like(node: Any) -> bool:
    """A field path from a root: `a.b.c`, or `a["b-c"]` with a constant string key."""
    while True:
        if isinstance(node, cast.Select) and not node.test_only:
            node = node.operand
        elif (isinstance(node, cast.Call) and node.function == "_[_]" and node.target is None and len(node.args) == 2
              and isinstance(node.args[1], cast.Literal) and node.args[1].value.__class__ is str):
            node = node.args[0]
        else:
            return isinstance(node, cast.Ident)


def _dispatch_steps(rules: list[Any], emit: Callable[[Any], str], ns: dict[str, Any]) -> list[Any]:
    """The rules of a first-match label, with long runs on the same fields folded into lookups.

    Two kinds of run: equality tests (`F == c`, `F in [..]`, or a conjunction of
    those over the same fields) become one dict lookup on the field values; regex
    tests on one field become one RE2 Set pass. Exactness: a run keeps rule order
    (the earliest matching rule of the run wins, as in the chain), and a field
    that is missing or of a type the lookup cannot judge raises, so the exact
    path decides.
    """
    steps: list[Any] = []
    i = 0
    while i < len(rules):
        run_kind: str | None = None
        run: list[tuple[Any, Any]] = []
        run_fields: tuple[str, ...] | None = None
        j = i
        while j < len(rules):
            rp = rules[j]
            if rp.when is None or rp.value_prog is not None:
                break
            root = _root(rp.when.ast)
            eq = _eq_keys(root)
            rx = None if eq else _regex_of(root)
            if eq:
                fields = tuple(emit(f) for f, _ in eq)
                if len(set(fields)) != len(fields):
                    break
                order = sorted(range(len(fields)), key=lambda k: fields[k])
                kind, key_fields, payload = "eq", tuple(fields[k] for k in order), [eq[k][1] for k in order]
            elif rx:
                kind, key_fields, payload = "rx", (emit(rx[0]),), rx[1]
            else:
                break
            if run_kind is None:
                run_kind, run_fields = kind, key_fields
            elif kind != run_kind or key_fields != run_fields:
                break
            run.append((rp, payload))
            j += 1
        if len(run) >= MIN_DISPATCH_RUN and run_fields is not None:
            k = len(ns)
            rules_in_run = [rp for rp, _ in run]
            bulk = len(run_fields) == 1
            if run_kind == "eq":
                steps.append(_Dispatch(_eq_lookup(run, run_fields, ns, k), rules_in_run, bulk))
            else:
                ns[f"_RS{k}"] = _regex_set([pat for _, pat in run], [(rp.value, rp.source_idx) for rp, _ in run])
                steps.append(_Dispatch(f"_RS{k}({run_fields[0]})", rules_in_run, bulk))
            i = j
        else:
            steps.append(rules[i])
            i += 1
    return steps


def _eq_lookup(run: list[tuple[Any, Any]], fields: tuple[str, ...], ns: dict[str, Any], k: int) -> str:
    """A dict from field values to the first rule's (value, code), and the expression looking it up."""
    from itertools import product

    table: dict[Any, tuple[Any, int]] = {}
    int_fields = [False] * len(fields)
    for rp, key_lists in run:
        for n, consts in enumerate(key_lists):
            int_fields[n] = int_fields[n] or any(c.__class__ is int for c in consts)
        for combo in product(*key_lists):
            table.setdefault(combo[0] if len(fields) == 1 else combo, (rp.value, rp.source_idx))
    ns[f"_D{k}"] = table
    if len(fields) == 1:
        if int_fields[0]:  # True == 1 in Python but not in CEL: keep bools out of an int lookup
            return f"(_D{k}.get(_f) if (_f := {fields[0]}).__class__ is not bool else None)"
        return f"_D{k}.get({fields[0]})"
    parts = []
    guards = []
    for n, src in enumerate(fields):
        if int_fields[n]:
            parts.append(f"(_f{n} := {src})")
            guards.append(f"_f{n}.__class__ is not bool")
        else:
            parts.append(src)
    lookup = f"_D{k}.get(({', '.join(parts)},))"
    if guards:
        # The tuple is built first (binding the walrus names), then the guards read them.
        return f"(_r if ((_r := {lookup}) is not None and {' and '.join(guards)}) else None)"
    return lookup


def _regex_set(patterns: list[str], results: list[tuple[Any, int]]) -> Callable[[Any], Any]:
    """One RE2 pass for many `matches` rules: the earliest matching rule's (value, code), or None."""
    import re2

    options = re2.Options()
    options.log_errors = False
    rset = re2.Set.SearchSet(options)
    for pat in patterns:
        rset.Add(pat)
    rset.Compile()
    match = rset.Match

    def first_match(s: Any) -> Any:
        if s.__class__ is not str:
            raise NotBool  # not a string: the exact path reports CEL's error
        hits = match(s)
        return results[min(hits)] if hits else None

    return first_match
