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

from activelabel.cel import Program, references
from activelabel.cel import ast as cast
from activelabel.cel.emit import MISSING, PythonEmitter
from activelabel.engine.index import Dispatch, NotBool, Step
from activelabel.engine.plan import LabelPlan, Plan, RulePlan
from activelabel.policy import label_types

#: The exact-path fallbacks the generated code calls (``CompiledPolicy.slow`` / ``.exact_rules``).
SlowPath = Callable[[int, dict[str, Any]], Any]
ExactRules = Callable[[int, dict[str, Any]], "tuple[Any, int] | None"]
Resolver = Callable[[list[tuple[Any, int]]], tuple[Any, Any]]
#: Per first-match step: (label plan, its rules, bulk), indexed by the step's run id.
Runs = list[tuple[LabelPlan, list[RulePlan], bool]]
Emit = Callable[[Program | cast.Expr], str]
EmitCond = Callable[[Program], str]
MissingTest = Callable[[Program], str | None]


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.depth = 1

    def __call__(self, line: str) -> None:
        self.lines.append("    " * self.depth + line)


def _fail() -> Any:
    raise NotBool


def generate(plan: Plan, steps: list[list[Step]], *, every_rule: bool, slow: SlowPath, resolvers: list[Resolver],
             hits: list[int], errors: list[int], exact_rules: ExactRules, runs: Runs) -> tuple[str, dict[str, Any]]:
    """The source of ``label_event(event) -> (labels, codes)`` and its namespace.

    ``steps[i]``: label ``i``'s first-match steps from the indexing pass (``index.index_plan``).
    """
    ns: dict[str, Any] = {"_MISSING": MISSING, "_NotBool": NotBool, "_slow": slow, "_hits": hits, "_errors": errors,
                          "_bisect": label_types.bucket_index, "_fail": _fail, "_exact_rules": exact_rules}
    labels_referenced = {
        ref.path[1]
        for lp in plan.labels
        for rp in lp.rules
        for prog in (rp.when, rp.value_prog)
        if prog is not None
        for ref in references(prog.ast)
        if ref.path[0] == "labels" and len(ref.path) > 1
    }
    roots = {"event": "event", "labels": "out", "now": "_now"}
    for ep in plan.enrichers:
        roots[ep.spec.name] = f"_enr_{ep.source_idx}"
    bound: dict[tuple[str, ...], str] = {
        ("labels", lp.spec.name): f"_L_{lp.index}" for lp in plan.labels if lp.spec.name in labels_referenced
    }
    em = PythonEmitter(ns, roots=roots, bound=bound)

    # Emit every expression first: the prologue must know every hoisted path.
    exprs: dict[int, str] = {}

    def emit(prog: Program | cast.Expr) -> str:
        key = id(prog)
        if key not in exprs:
            # A whole expression, or a sub-node of one (the field a folded run looks up).
            exprs[key] = em.emit(prog.ast.root if isinstance(prog, Program) else prog)
        return exprs[key]

    conds: dict[int, str] = {}

    def emit_cond(prog: Program) -> str:
        # A Python bool, or a raise when CEL's value is not a bool: `if <it>:` is exact.
        key = id(prog)
        if key not in conds:
            conds[key] = em.emit_bool(prog.ast.root)
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

    hoisted: dict[tuple[str, ...], str] = {**em.hoisted_paths(), **bound}

    def missing_test(prog: Program) -> str | None:
        """For a strict condition: a test true when a field it reads is absent (so it errors)."""
        return _missing_test(prog.ast.root, prog.ast, hoisted)

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
        _label_block(w, ns, lp, steps[lp.index], emit, emit_cond, bindings, every_rule, resolvers, runs, missing_test)
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


def _label_block(w: _Writer, ns: dict[str, Any], lp: LabelPlan, steps: list[Step], emit: Emit,
                 emit_cond: EmitCond, bindings: str, every_rule: bool, resolvers: list[Resolver],
                 runs: Runs, missing_test: MissingTest) -> None:
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
        check = label_types.generated_check(label_types.value_type(spec), f"_ENUM_{li}")
    collect = every_rule or spec.resolve != "first_match"
    if not collect:
        _first_match_chain(w, ns, lp, steps, emit, emit_cond, bindings, check, default_v, default_w, runs, missing_test)
        return
    w("try:")
    w("    _cs = []")
    for rp in lp.rules:
        value = _const(ns, rp.value) if rp.value_prog is None or check is None else check.format(emit(rp.value_prog))
        w(f"    # {_where(rp)}")
        if rp.when is None:
            w(f"    _cs.append(({value}, {rp.source_idx}))")
            continue
        w(f"    if {emit_cond(rp.when)}: _cs.append(({value}, {rp.source_idx}))")
    w("except Exception:")
    w(f"    _v, _w = _slow({li}, {bindings})")
    w("else:")
    ns[f"_resolve_{li}"] = resolvers[li]
    w(f"    _v, _w = _resolve_{li}(_cs)")


def _where(rp: RulePlan) -> str:
    """``rule <id> (file:line)``: what a comment in the generated source points at."""
    loc = rp.spec.loc
    return f"rule {rp.spec.id} ({loc.file}:{loc.line})" if loc.file else f"rule {rp.spec.id} (line {loc.line})"


def _first_match_chain(w: _Writer, ns: dict[str, Any], lp: LabelPlan, steps: list[Step], emit: Emit,
                       emit_cond: EmitCond, bindings: str, check: str | None,
                       default_v: str, default_w: str, runs: Runs, missing_test: MissingTest) -> None:
    """First match as a loop body of `if ...: break` steps, each in its own `try`.

    A step whose fast code raises (a missing field, a wrong type) is re-decided
    exactly on its own, and the chain goes on: one odd field costs one rule's
    exact evaluation, not the whole label's. `try` costs nothing in CPython 3.11+
    until something raises. ``steps`` come from the indexing pass (engine/index.py).
    """
    w("while True:")
    closed = False
    for step in steps:
        test: str | None
        if isinstance(step, Dispatch):
            rules, bulk, test = step.rules, step.bulk, _dispatch_test(step, emit, ns)
            w(f"    # {len(rules)} rules as one {'dict lookup' if step.kind == 'eq' else 'RE2 set'}: "
              + ", ".join(_where(rp) for rp in rules))
        else:
            rules, bulk, test = [step], False, None
            w(f"    # {_where(step)}")
        runs.append((lp, rules, bulk))
        run_id = len(runs) - 1
        w("    try:")
        if test is not None:
            w(f"        if (_t := {test}) is not None:")
            w("            _v, _w = _t; break")
        else:
            rp = rules[0]
            value = _const(ns, rp.value) if rp.value_prog is None or check is None else check.format(emit(rp.value_prog))
            if rp.when is None:
                w(f"        _v = {value}; _w = {rp.source_idx}; break")
            else:
                w(f"        if {emit_cond(rp.when)}:")
                w(f"            _v = {value}; _w = {rp.source_idx}; break")
        w("    except Exception:")
        # A field the step reads is absent: when CEL certainly errors, count it here
        # instead of asking the evaluator (events often lack a field many rules read).
        first_when = rules[0].when
        absent = missing_test(first_when) if first_when is not None and (bulk or test is None) else None
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
        if test is None and rules[0].when is None and rules[0].value_prog is None:
            closed = True  # an unconditional constant: later rules can never win
            break
    if not closed:
        w(f"    _v = {default_v}; _w = {default_w}; break")


def _dispatch_test(step: Dispatch, emit: Emit, ns: dict[str, Any]) -> str:
    """The expression reading a folded run's table (or RE2 set): ``(value, code)`` or None."""
    k = len(ns)
    fields = [emit(f) for f in step.fields]
    if step.kind == "rx":
        ns[f"_RS{k}"] = step.matcher
        return f"_RS{k}({fields[0]})"
    ns[f"_D{k}"] = step.table
    int_fields = step.int_fields
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


def _missing_test(node: cast.Expr, ast: cast.Ast, hoisted: dict[tuple[str, ...], str]) -> str | None:
    """``_a is _MISSING or ...`` over the fields a *strict* condition reads, else None.

    Strict: no operator that can absorb or skip an error (`&&`, `||`, `?:`, `has`,
    macros), so an absent field makes the whole condition an error, which is what
    the exact path would report.
    """
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
