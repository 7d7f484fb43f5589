"""Policy → one generated Python function (the per-event hot path).

The function reads every field the rules use once into a local (the CEL
emitter's prologue), evaluates each label's rules as one ``if/elif`` chain,
and records for each label only its value and an integer source code.

CEL's error semantics are decided inline, not by raising: an absent field or an
unset label makes a strict condition (one with no operator that can absorb an
error) an error without evaluating it, and the boolean operators above such parts
are written out three-valued (``_tri_cond``), so ``labels.tier == "gold" && ...``
on an event without a tier costs what a matching event costs. Those errors are
counted in place as *absent* reads (``Counters.absent``). Only what the fast code
cannot decide (a wrong type, a value that does not fit the label) raises, and that
one rule is re-decided by the exact path (``CompiledPolicy.exact_rules``).
``max_confidence`` and ``vote`` resolve inline too (``_collect``).

``generate(plan)`` returns the source and the namespace to ``exec`` it in;
``Labeler.generated_source`` shows it for debugging, as jinja2's ``raw=True``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from activelabel.cel import Program, references
from activelabel.cel import ast as cast
from activelabel.cel.emit import ERR, MISSING, TYPE_ERR, PythonEmitter
from activelabel.engine.cardinality import DistinctTracker
from activelabel.engine.index import Dispatch, NotBool, Step, field_key
from activelabel.engine.plan import LabelPlan, Plan, RulePlan
from activelabel.enrich import EMPTY as EMPTY_ROW
from activelabel.enrich import LookupEnricher
from activelabel.errors import CELEvalError
from activelabel.policy import label_types

#: The exact-path fallbacks the generated code calls (``CompiledPolicy.slow`` / ``.exact_rules``).
SlowPath = Callable[[int, dict[str, Any]], Any]
ExactRules = Callable[[int, dict[str, Any]], "tuple[Any, int] | None"]
#: Per first-match step: (label plan, its rules, bulk), indexed by the step's run id.
Runs = list[tuple[LabelPlan, list[RulePlan], bool]]
Emit = Callable[[Program | cast.Expr], str]
EmitValue = Callable[[Program], str]
MissingTest = Callable[[Program], str | None]
SourceTable = list[tuple[str, float]]
#: Counts a CEL error the generated code caught in place: (source, program, error, bindings).
CelErrorCount = Callable[[int, Program | None, Exception, dict[str, Any] | None], None]
#: Counts a rule error decided in place that is not an absent read by itself (a value that does
#: not fit its label, a comparison of wrong types): (source, program, bindings); the program's
#: reads decide whether it counts as absent, as on the exact path.
RuleErrorCount = Callable[[int, Program, dict[str, Any]], None]
LeafMiss = Callable[[cast.Expr, str], "str | None"]


# A three-valued condition part is True, False, ERR (an absent read) or TYPE_ERR (see ``_tri_cond``).


class _ValueSrc(str):
    """An emitted value expression; ``three``: it gives ERR / TYPE_ERR instead of raising (``emit_value3``)."""

    three: bool

    def __new__(cls, src: str, three: bool) -> _ValueSrc:
        out = super().__new__(cls, src)
        out.three = three
        return out


@dataclass
class Counters:
    """The per-source counters the generated code increments (owned by ``CompiledPolicy``).

    ``errors[i]``: times source ``i`` failed to evaluate (every kind); ``absent[i]``: of
    those, the ones caused by an absent field or unset label; ``run_absent[r]``: absent
    reads of a folded run ``r`` (every rule of the run failed), spread over its rules
    when counters are read; ``conflicts[label]``: events whose candidates disagreed.
    """

    hits: list[int]
    errors: list[int]
    absent: list[int]
    run_absent: list[int]
    conflicts: list[int]


@dataclass
class Cond:
    """How generated code decides a rule's `when`.

    ``miss`` set: a strict condition (it errors exactly when a field it reads is absent);
    `if miss: <absent> elif src:`. ``tri``: ``src`` gives True, False or ``ERR`` (CEL's
    `&&`/`||`/`!`/`?:` over parts that may read absent fields). ``soft``: ``src`` may also
    give ``TYPE_ERR`` (an ordering comparison of types CEL does not compare), counted as
    the rule's error in place. Otherwise ``src`` is a Python bool. In every form ``src``
    raises where the fast code cannot decide, and the caller re-decides the rule exactly.
    """

    src: str
    miss: str | None = None
    tri: bool = False
    strict: bool = False  # no operator that can absorb an error: any CEL error is the rule's error
    soft: bool = False
    # soft: a test true when a field the condition reads is absent ("False": none can be,
    # or the miss test has already been passed); None when some read has no such test.
    any_absent: str | None = None


EmitCond = Callable[[Program], Cond]


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.depth = 1

    def __call__(self, line: str) -> None:
        self.lines.append("    " * self.depth + line)


class _NoFit:
    """What a label's value check gives for a value that does not fit the label (counted as a rule error)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NOFIT"


NOFIT: Any = _NoFit()


def generate(plan: Plan, steps: list[list[Step]], *, every_rule: bool, slow: SlowPath, counters: Counters,
             exact_rules: ExactRules, runs: Runs, cel_error: CelErrorCount,
             rule_error: RuleErrorCount) -> tuple[str, dict[str, Any]]:
    """The source of ``label_event(event) -> (labels, codes)`` and its namespace.

    ``steps[i]``: label ``i``'s first-match steps from the indexing pass (``index.index_plan``).
    """
    ns: dict[str, Any] = {"_MISSING": MISSING, "_ERR": ERR, "_TERR": TYPE_ERR, "_NotBool": NotBool, "_slow": slow,
                          "_hits": counters.hits, "_errors": counters.errors, "_absent": counters.absent,
                          "_run_absent": counters.run_absent, "_conflicts": counters.conflicts,
                          "_bisect": label_types.bucket_index, "_vote_sum": vote_sum, "_NOFIT": NOFIT, "_exact_rules": exact_rules,
                          "_CELError": CELEvalError, "_cel_error": cel_error, "_rule_error": rule_error}
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

    def hoisted() -> dict[tuple[str, ...], str]:
        return {**em.hoisted_paths(), **bound}

    def leaf_miss(node: cast.Expr, text: str) -> str | None:
        if isinstance(node, cast.Macro):
            # A comprehension over an absent field is an error, whatever its body: CEL's
            # `no such key`, read as absent (its body's reads are of the loop variable).
            got = cast.select_path(node.target)
            if got is None or len(got[1]) == 1:
                return None
            local = hoisted().get((got[1][0].lstrip("."), *got[1][1:]))
            return None if local is None else f"{local} is _MISSING"
        if isinstance(node, cast.Select) and node.test_only:
            # has(x.f) is an error when x itself is absent or not a map: the loaded x is MISSING
            got = cast.select_path(node.operand)
            if got is None or len(got[1]) == 1:
                return None  # has(root.f): a root is always there
            local = hoisted().get((got[1][0].lstrip("."), *got[1][1:]))
            return None if local is None else f"{local} is _MISSING"
        return _missing_test(node, cast.Ast(node, text), hoisted())

    conds: dict[int, Cond] = {}

    def emit_cond(prog: Program) -> Cond:
        # How `if` decides the condition: a Python bool, a strict test behind an absent-field
        # check, or a three-valued expression (True, False, _ERR) deciding CEL's error absorption.
        key = id(prog)
        if key not in conds:
            conds[key] = _tri_cond(em, prog.ast, leaf_miss)
        return conds[key]

    values: dict[int, str | None] = {}

    def emit_value(prog: Program) -> str:
        key = id(prog)
        if key not in values:
            exprs[key] = em.emit(prog.ast.root)
            values[key] = leaf_miss(prog.ast.root, prog.ast.text)
        return exprs[key]

    def emit_rule_value(prog: Program) -> None:
        # A rule's value: three-valued arithmetic where the emitter can (see _value_lines).
        src, three = em.emit_value3(prog.ast.root)
        exprs[id(prog)] = _ValueSrc(src, three)
        values[id(prog)] = leaf_miss(prog.ast.root, prog.ast.text)

    for ep in plan.enrichers:
        emit_value(ep.key_prog)
    for lp in plan.labels:
        if lp.from_prog is not None:
            emit_value(lp.from_prog)
        for rp in lp.rules:
            if rp.when is not None:
                emit_cond(rp.when)
            if rp.value_prog is not None:
                emit_rule_value(rp.value_prog)

    def missing_test(prog: Program) -> str | None:
        """For a strict expression: a test true when a field or label it reads is absent (so it errors)."""
        emit_value(prog)
        return values[id(prog)]

    w = _Writer()
    bind_names = ["'event': event", "'labels': out"]
    if plan.uses_now:
        bind_names.append("'now': _now")
    w("out = {}")
    w("why = {}")
    if plan.uses_now:
        ns["_clock_now"] = None  # set by the Labeler
        w("_now = _clock_now()")
    # The event is a dict on every path (the Labeler checks): one test here, not one per field.
    w("_evm = event if event.__class__ is _T_dict or _isinstance(event, _T_dict) else _NOT_A_MAP")
    ns.update(_NOT_A_MAP=EMPTY_ROW, _T_dict=dict, _isinstance=isinstance)
    for line in em.prologue("event", map_local="_evm"):
        w(line)
    for ep in plan.enrichers:
        i = ep.source_idx
        ns[f"_lookup_{i}"] = ep.runtime.lookup
        slow_key = f"_slow({-1 - plan.enrichers.index(ep)}, {{{', '.join(bind_names)}}})"
        absent = missing_test(ep.key_prog)
        if absent is not None:  # the key field is absent: a miss, and an absent read of the key
            w(f"if {absent}:")
            w(f"    _k = None; {_count_absent(i)}")
            w("else:")
            w("    try:")
            w(f"        _k = {emit(ep.key_prog)}")
            w("    except Exception:")
            w(f"        _k = {slow_key}")
        else:
            w("try:")
            w(f"    _k = {emit(ep.key_prog)}")
            w("except Exception:")
            w(f"    _k = {slow_key}")
        if isinstance(ep.runtime, LookupEnricher):  # a str key: the table's own dict.get, without a call
            ns[f"_rows_{i}"] = ep.runtime.string_get
            ns["_EMPTY_ROW"] = EMPTY_ROW
            w(f"_enr_{i} = _rows_{i}(_k, _EMPTY_ROW) if _k.__class__ is str else _lookup_{i}(_k)")
        else:
            w(f"_enr_{i} = _lookup_{i}(_k)")
        bind_names.append(f"{ep.spec.name!r}: _enr_{i}")
        for line in em.prologue(ep.spec.name):
            w(line)
    bindings = "{" + ", ".join(bind_names) + "}"

    for lp in plan.labels:
        _label_block(w, ns, lp, plan.source_table, steps[lp.index], emit, em, bound, emit_cond, emit_value, bindings,
                     every_rule, runs, missing_test)
        name = lp.spec.name
        if isinstance(lp.guard, DistinctTracker):  # counts distinct values, never changes one: inline
            ns[f"_seen_{lp.index}"] = lp.guard.seen
            w(f"if _v is not _MISSING and len(_seen_{lp.index}) < {lp.guard.limit}: _seen_{lp.index}.add(_v)")
        elif lp.guard is not None:
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


def _count_absent(idx: int) -> str:
    """The statements counting an absent read for source ``idx`` (an error, and of the absent kind)."""
    return f"_errors[{idx}] += 1; _absent[{idx}] += 1"


def _if_cond(cond: Cond, idx: int) -> list[str]:
    """The lines opening `if <the condition holds>:` for source ``idx``, counting an absent read in place.

    The body follows, indented one level deeper than the returned lines; the caller
    appends it after the first line (the returned tail, if any, closes the `if`).
    """
    test = f"(_c := {cond.src}) is True" if cond.tri or cond.soft else cond.src
    if cond.miss is not None:
        return [f"if {cond.miss}: {_count_absent(idx)}", f"elif {test}:"]
    return [f"if {test}:"]


def _after_cond(cond: Cond, idx: int, prog: str, bindings: str) -> list[str]:
    """Lines after the body of `_if_cond`: the error branches of a three-valued condition."""
    out = [f"elif _c is _ERR: {_count_absent(idx)}"] if cond.tri or cond.soft else []
    if cond.soft:
        if cond.any_absent is None:  # some read has no absent test: the exact test decides
            out.append(f"elif _c is _TERR: _rule_error({idx}, {prog}, {bindings})")
        elif cond.any_absent == "False":
            out.append(f"elif _c is _TERR: _errors[{idx}] += 1")
        else:  # a type error with another read absent counts as absent, as on the exact path
            out.append(f"elif _c is _TERR: _errors[{idx}] += 1; _absent[{idx}] += {cond.any_absent}")
    return out


def _label_block(w: _Writer, ns: dict[str, Any], lp: LabelPlan, table: SourceTable, steps: list[Step], emit: Emit,
                 em: PythonEmitter, bound: dict[tuple[str, ...], str], emit_cond: EmitCond, emit_value: EmitValue, bindings: str, every_rule: bool,
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
        absent = missing_test(lp.from_prog)
        pad = ""
        if absent is not None:
            w(f"if {absent}:")
            w(f"    {_count_absent(lp.from_idx)}; _v = {default_v}; _w = {default_w}")
            w("else:")
            pad = "    "
        w(f"{pad}try:")
        w(f"{pad}    _x = {emit(lp.from_prog)}")
        w(f"{pad}except Exception:")
        w(f"{pad}    _v, _w = _slow({li}, {bindings})")
        w(f"{pad}else:")
        w(f"{pad}    if (_x.__class__ is int or _x.__class__ is float) and _x == _x:")
        w(f"{pad}        _v = _BN_{li}[_bisect(_BB_{li}, _x)]; _w = {lp.from_idx}")
        w(f"{pad}    elif _x is None:  # a field that is there but null: no value, counted as absent")
        w(f"{pad}        {_count_absent(lp.from_idx)}; _v = {default_v}; _w = {default_w}")
        w(f"{pad}    else:  # a string, NaN...: an error of `from`, counted like a rule error")
        w(f"{pad}        _errors[{lp.from_idx}] += 1; _v = {default_v}; _w = {default_w}")
        return
    check = None
    if any(rp.value_prog is not None for rp in lp.rules):
        ns[f"_ENUM_{li}"] = frozenset(spec.values or ())
        check = label_types.generated_check(label_types.value_type(spec), f"_ENUM_{li}")
    collect = every_rule or spec.resolve != "first_match"
    if not collect:
        _first_match_chain(w, ns, lp, steps, emit, em, bound, emit_cond, emit_value, bindings, check, default_v, default_w, runs,
                           missing_test)
        return
    _collect(w, ns, lp, table, emit_cond, emit_value, bindings, check, default_v, default_w, runs, missing_test)


def _value_lines(ns: dict[str, Any], rp: RulePlan, emit_value: EmitValue, check: str | None,
                 missing_test: MissingTest, then: list[str], bindings: str) -> list[str]:
    """Lines computing rule ``rp``'s value into ``_x`` and running ``then``; an absent read is counted.

    A strict value expression that fails with a CEL error (`amount * 0.029` on an int) is
    counted as the rule's error in place; anything else it raises goes to the caller's
    `except`, which asks the exact path.
    """
    if rp.value_prog is None:
        return [f"_x = {_const(ns, rp.value)}", *then]
    src = emit_value(rp.value_prog)
    absent = missing_test(rp.value_prog)
    prog = _const(ns, rp.value_prog)
    value = src
    # A rule error that is not an absent read by itself: never absent once the absent test
    # below has been passed; otherwise the exact test of the program's reads decides.
    count = f"_errors[{rp.source_idx}] += 1" if absent is not None else f"_rule_error({rp.source_idx}, {prog}, {bindings})"
    if check is not None:
        value = check.format("_x" if getattr(src, "three", False) else src)
        # A value that does not fit the label is the rule's error.
        then = [f"if _x is _NOFIT: {count}", "else:", *("    " + t for t in then)]
    compute = [f"_x = {value}", *then]
    if getattr(src, "three", False):
        # Three-valued arithmetic: an error value (an int times a double, a null) is counted here.
        then = [f"if _x is _ERR: {_count_absent(rp.source_idx)}", f"elif _x is _TERR: {count}", "else:",
                *("    " + t for t in ([f"_x = {value}", *then] if check is not None else then))]
        value = src
        compute = [f"_x = {value}", *then]
    if propagates_errors(rp.value_prog.ast.root):
        # Past the absent test no field is absent: the error's own kind decides (no program to re-read).
        args = "None, _e, None" if absent is not None else f"{prog}, _e, {bindings}"
        compute = ["try:", f"    _x = {value}", "except _CELError as _e:",
                   f"    _cel_error({rp.source_idx}, {args})", "else:", *("    " + t for t in then)]
    if absent is None:
        return compute
    return [f"if {absent}: {_count_absent(rp.source_idx)}", "else:", *("    " + t for t in compute)]


def _cel_error_lines(ns: dict[str, Any], rp: RulePlan, cond: Cond | None, bindings: str) -> list[str]:
    """`except _CELError` lines counting a strict condition's CEL error in place (empty when it may absorb one)."""
    if rp.when is None or cond is None or not cond.strict:
        return []
    if rp.value_prog is not None and not propagates_errors(rp.value_prog.ast.root):
        return []  # a CEL error of the value could reach this `except`: leave it to the exact path
    # Past `if miss:` no field is absent: the error's own kind decides (nothing to re-read).
    args = "None, _e, None" if cond.miss is not None else f"{_const(ns, rp.when)}, _e, {bindings}"
    return ["except _CELError as _e:", f"    _cel_error({rp.source_idx}, {args})"]


def _collect(w: _Writer, ns: dict[str, Any], lp: LabelPlan, table: SourceTable, emit_cond: EmitCond,
             emit_value: EmitValue, bindings: str, check: str | None, default_v: str, default_w: str, runs: Runs,
             missing_test: MissingTest) -> None:
    """Every rule of the label evaluated (max_confidence, vote, or conflict tracking), resolved inline.

    No candidate list: max_confidence keeps the best so far (strictly greater wins, so
    ties keep the earlier rule), vote sums confidences per value in a dict, first_match
    keeps the first; a second distinct value marks a conflict. Each rule has its own
    `try`, so a rule the fast code cannot decide is re-decided exactly on its own.
    """
    spec = lp.spec
    li = lp.index
    mode = spec.resolve
    w("_bw = -1; _cf = False")
    slots = _vote_slots(lp) if mode == "vote" else None
    if slots is not None:
        ns[f"_VV_{li}"] = tuple(value for _, value in slots)
        w(" = ".join(f"_t{j}" for j in range(len(slots))) + " = 0.0; " + " = ".join(f"_f{j}" for j in range(len(slots))) + " = -1")
    elif mode == "vote":
        w("_vt = {}; _vf = {}")
    seen_slots: set[int] = set()
    for rp in lp.rules:
        conf = float(table[rp.source_idx][1])
        if slots is not None:
            # Constant values: one total and one first-rule index per value, in locals (no dict, no key tuple).
            j = slots[(rp.value.__class__, rp.value)]
            first = "" if j in seen_slots else "  # the first rule giving this value"
            add = [f"_t{j} += {conf!r}", f"_f{j} = {rp.source_idx}{first}" if first else f"if _f{j} < 0: _f{j} = {rp.source_idx}"]
            seen_slots.add(j)
        elif mode == "vote":
            add = ["_kx = (_x.__class__, _x)",
                   "if _kx in _vt:",
                   f"    _vt[_kx] += {conf!r}",
                   "else:",
                   f"    _vt[_kx] = {0.0 + conf!r}; _vf[_kx] = (_x, {rp.source_idx})"]
        else:
            add = ["if _bw == -1:",
                   f"    _bv = _fv = _x; _bw = {rp.source_idx}; _bc = {conf!r}",
                   "else:",
                   "    if not _cf and (_x.__class__ is not _fv.__class__ or (_x is not _fv and _x != _fv)): _cf = True"]
            if mode == "max_confidence":
                add.append(f"    if {conf!r} > _bc: _bv = _x; _bw = {rp.source_idx}; _bc = {conf!r}")
        runs.append((lp, [rp], False))
        run_id = len(runs) - 1
        w(f"# {_where(rp)}")
        w("try:")
        body = _value_lines(ns, rp, emit_value, check, missing_test, add, bindings)
        cond = None
        if rp.when is None:
            for line in body:
                w("    " + line)
        else:
            cond = emit_cond(rp.when)
            head = _if_cond(cond, rp.source_idx)
            for line in head:
                w("    " + line)
            for line in body:
                w("        " + line)
            for line in _after_cond(cond, rp.source_idx, _const(ns, rp.when), bindings):
                w("    " + line)
        for line in _cel_error_lines(ns, rp, cond, bindings):
            w(line)
        w("except Exception:")
        w(f"    if (_t := _exact_rules({run_id}, {bindings})) is not None:")
        w("        _x = _t[0]")
        for line in add:
            w("        " + line)
    if slots is not None:
        _vote_resolution(w, li, len(slots), default_v, default_w)
        return
    if mode == "vote":
        w("if _vt:")
        w("    _kx = max(_vt, key=_vt.__getitem__)  # max keeps the first (earliest) of equal totals")
        w("    _all = sum(_vt.values())")
        w("    _v, _i = _vf[_kx]; _w = (_i, _vt[_kx] / _all if _all > 0 else 0.0)")
        w(f"    if len(_vt) > 1: _conflicts[{li}] += 1")
        w("else:")
        w(f"    _v = {default_v}; _w = {default_w}")
        return
    w("if _bw != -1:")
    w("    _v = _bv; _w = " + ("(_bw, _bc)" if mode == "max_confidence" else "_bw"))
    w(f"    if _cf: _conflicts[{li}] += 1")
    w("else:")
    w(f"    _v = {default_v}; _w = {default_w}")


def _vote_slots(lp: LabelPlan) -> dict[tuple[type, Any], int] | None:
    """For a vote whose rules all give constant values: each distinct value's slot, in rule order (else None)."""
    slots: dict[tuple[type, Any], int] = {}
    try:
        for rp in lp.rules:
            if rp.value_prog is not None:
                return None
            slots.setdefault((rp.value.__class__, rp.value), len(slots))
    except TypeError:  # an unhashable constant: the dict form keys it
        return None
    return slots or None


def _vote_resolution(w: _Writer, li: int, n: int, default_v: str, default_w: str) -> None:
    """The winner of a constant-value vote, as ``exact.resolve`` picks it.

    The highest total wins; of equal totals, the value whose first matching rule is earliest
    (``_f``). The share divides by the sum of the totals in first-match order (what
    ``sum(totals.values())`` adds): with at most two values matched the other totals are 0.0
    and the plain sum is that sum exactly; with more, ``_vote_sum`` orders them.
    """
    matched = " + ".join(f"(_f{j} >= 0)" for j in range(n))
    w(f"_n = {matched}")
    w("if _n:")
    w("    _bj = 0; _bt = _t0; _bf = _f0")
    for j in range(1, n):
        w(f"    if _f{j} >= 0 and (_bf < 0 or _t{j} > _bt or (_t{j} == _bt and _f{j} < _bf)): _bj = {j}; _bt = _t{j}; _bf = _f{j}")
    plain = " + ".join(f"_t{j}" for j in range(n))
    if n >= 3:
        pairs = ", ".join(f"(_f{j}, _t{j})" for j in range(n))
        w(f"    _all = {plain} if _n < 3 else _vote_sum(({pairs},))")
    else:
        w(f"    _all = {plain}")
    w(f"    _v = _VV_{li}[_bj]; _w = (_bf, _bt / _all if _all > 0 else 0.0)")
    w(f"    if _n > 1: _conflicts[{li}] += 1")
    w("else:")
    w(f"    _v = {default_v}; _w = {default_w}")


def vote_sum(pairs: tuple[tuple[int, float], ...]) -> float:
    """The sum of the matched values' totals in first-match order (``pairs``: (first rule index or -1, total))."""
    return sum(total for first, total in sorted(p for p in pairs if p[0] >= 0))


def _where(rp: RulePlan) -> str:
    """``rule <id> (file:line)``: what a comment in the generated source points at."""
    loc = rp.spec.loc
    return f"rule {rp.spec.id} ({loc.file}:{loc.line})" if loc.file else f"rule {rp.spec.id} (line {loc.line})"


def _path_of(node: cast.Expr) -> tuple[str, ...]:
    """The field path a folded run's field node reads (root without a leading dot)."""
    key = field_key(node)
    return (key[0].lstrip("."), *key[1:])


def _first_match_chain(w: _Writer, ns: dict[str, Any], lp: LabelPlan, steps: list[Step], emit: Emit,
                       em: PythonEmitter, bound: dict[tuple[str, ...], str], emit_cond: EmitCond, emit_value: EmitValue, bindings: str, check: str | None,
                       default_v: str, default_w: str, runs: Runs, missing_test: MissingTest) -> None:
    """First match as a loop body of `if ...: break` steps, each in its own `try`.

    An absent field or unset label is decided inline, as CEL does (the condition
    errors, or `&&`/`||` absorb the error), and counted as an absent read. A step
    whose fast code raises (a wrong type) is re-decided exactly on its own, and the
    chain goes on. `try` costs nothing in CPython 3.11+ until something raises.
    ``steps`` come from the indexing pass (engine/index.py).
    """
    w("while True:")

    def single(rp: RulePlan, pad: str) -> None:
        w(f"{pad}# {_where(rp)}")
        runs.append((lp, [rp], False))
        run_id = len(runs) - 1
        w(f"{pad}try:")
        if rp.value_prog is None:
            body = [f"_v = {_const(ns, rp.value)}; _w = {rp.source_idx}; break"]
        else:
            body = _value_lines(ns, rp, emit_value, check, missing_test, [f"_v = _x; _w = {rp.source_idx}; break"],
                                bindings)
        cond = None
        if rp.when is None:
            for line in body:
                w(f"{pad}    " + line)
        else:
            cond = emit_cond(rp.when)
            for line in _if_cond(cond, rp.source_idx):
                w(f"{pad}    " + line)
            for line in body:
                w(f"{pad}        " + line)
            for line in _after_cond(cond, rp.source_idx, _const(ns, rp.when), bindings):
                w(f"{pad}    " + line)
        for line in _cel_error_lines(ns, rp, cond, bindings):
            w(pad + line)
        w(f"{pad}except Exception:")
        w(f"{pad}    if (_t := _exact_rules({run_id}, {bindings})) is not None:")
        w(f"{pad}        _v, _w = _t; break")

    closed = False
    for step in steps:
        if isinstance(step, Dispatch) and step.kind == "px":
            # Prefix table when the fields are strings (then no rule of the run can error);
            # otherwise the rules one by one, each deciding absent fields and errors as usual.
            loaded = {**em.hoisted_paths(), **bound}
            fields = [loaded.get(_path_of(f), "") for f in step.fields]
            if not all(fields):  # not a loaded local (`labels.a.b`): no table
                for rp in step.rules:
                    single(rp, "    ")
                continue
            k = len(ns)
            ns[f"_PX{k}"] = step.matcher
            w(f"    # {len(step.rules)} rules as one prefix table: " + ", ".join(_where(rp) for rp in step.rules))
            w(f"    if {' and '.join(f'{f}.__class__ is str' for f in fields)}:")
            w(f"        if (_t := _PX{k}({', '.join(fields)})) is not None:")
            w("            _v, _w = _t; break")
            w("    else:")
            for rp in step.rules:
                single(rp, "        ")
            continue
        if isinstance(step, Dispatch):
            rules, bulk = step.rules, step.bulk
            test = _dispatch_test(step, emit, ns)
            w(f"    # {len(rules)} rules as one {'dict lookup' if step.kind == 'eq' else 'RE2 set'}: "
              + ", ".join(_where(rp) for rp in rules))
            runs.append((lp, rules, bulk))
            run_id = len(runs) - 1
            first_when = rules[0].when
            absent = missing_test(first_when) if first_when is not None and bulk else None
            w("    try:")
            if absent is not None:
                # Every rule of the run reads the field: each one's absent read is counted (per run).
                w(f"        if {absent}: _run_absent[{run_id}] += 1")
                w(f"        elif (_t := {test}) is not None:")
            else:
                w(f"        if (_t := {test}) is not None:")
            w("            _v, _w = _t; break")
            w("    except Exception:")
            w(f"        if (_t := _exact_rules({run_id}, {bindings})) is not None:")
            w("            _v, _w = _t; break")
            continue
        single(step, "    ")
        if step.when is None and step.value_prog is None:
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


_ROOTS_NEVER_MISSING = frozenset({"event", "now"})


def _tri_cond(em: PythonEmitter, ast: cast.Ast, leaf_miss: LeafMiss) -> Cond:
    """The condition ``ast`` as a ``Cond``: CEL's boolean structure decided inline.

    The boolean operators at the top of the condition are written out; every other
    node is a *leaf*, emitted as a Python bool, or three-valued when it is an ordering
    comparison whose operand types may not compare (``TYPE_ERR``, see ``emit_bool3``).
    A strict leaf (no operator inside that can absorb an error) reading an absent field
    is ``ERR`` without being evaluated. Then, as CEL says: ``false && x`` and
    ``x && false`` are false, ``true || x`` and ``x || true`` are true, of two errors
    the left one stands, ``!err``, ``err ? a : b`` and the rest are that error.
    """
    names = itertools.count()
    text = ast.text
    misses: list[str] = []
    soft = False
    covered = True  # every leaf that reads a field has an absent test
    read_misses: list[str] = []  # the absent tests of the leaves that read a value

    def is_err(name: str) -> str:
        return f"({name} is not True and {name} is not False)"

    def part(node: cast.Expr) -> tuple[str, bool]:  # (source, may be an error value)
        nonlocal soft
        if isinstance(node, cast.Call) and node.target is None:
            fn = node.function
            if fn in ("_&&_", "_||_") and len(node.args) == 2:
                (a, ea), (b, eb) = part(node.args[0]), part(node.args[1])
                stop, go = ("False", "True") if fn == "_&&_" else ("True", "False")
                op = "and" if fn == "_&&_" else "or"
                if not ea:  # `A and B` / `A or B` is exact when A is a plain bool
                    return f"({a} {op} {b})", eb
                ta = f"_ta{next(names)}"
                if not eb:
                    return f"({stop} if ({ta} := {a}) is {stop} else ({b} {op} {ta}))", True
                tb = f"_tb{next(names)}"
                return (f"({stop} if ({ta} := {a}) is {stop} else ({stop} if ({tb} := {b}) is {stop} else "
                        f"({ta} if {tb} is {go} or {ta} is not {go} else {tb})))"), True
            if fn == "!_" and len(node.args) == 1:
                a, ea = part(node.args[0])
                if not ea:
                    return f"(not {a})", False
                ta = f"_ta{next(names)}"
                return f"({ta} if {is_err(f'({ta} := {a})')} else not {ta})", True
            if fn == "_?_:_" and len(node.args) == 3:
                (c, ec), (t, et), (f, ef) = (part(x) for x in node.args)
                if not ec:
                    return f"({t} if {c} else {f})", et or ef
                tc = f"_tc{next(names)}"
                return f"({tc} if {is_err(f'({tc} := {c})')} else ({t} if {tc} else {f}))", True
        nonlocal covered
        src, three = em.emit_bool3(node)
        soft = soft or three
        miss = leaf_miss(node, text)
        if miss is None:
            covered = covered and not _reads_fields(node, text)
            return src, three
        misses.append(miss)
        if not (isinstance(node, cast.Select) and node.test_only):
            read_misses.append(miss)  # `has(x.f)` reads nothing to the exact path's absent test
        return f"(_ERR if {miss} else {src})", True

    root = ast.root
    if not (isinstance(root, cast.Call) and root.target is None and root.function in ("_&&_", "_||_", "!_", "_?_:_")):
        src, three = em.emit_bool3(root)
        miss = leaf_miss(root, text)
        covered_root = miss is not None or not _reads_fields(root, text)
        return Cond(src, miss=miss, strict=is_strict(root), soft=three, any_absent="False" if covered_root else None)
    src, may_err = part(root)
    if not may_err:
        return Cond(src)
    if soft:
        # A leaf may give TYPE_ERR on any event: the three-valued form always (the plain
        # one would raise into the exact path on every event with a wrong type).
        reads_absent = " or ".join(dict.fromkeys(m for miss in read_misses for m in miss.split(" or "))) or "False"
        return Cond(src, tri=True, soft=True, any_absent=f"({reads_absent})" if covered else None)
    any_absent = " or ".join(dict.fromkeys(m for miss in misses for m in miss.split(" or ")))
    # Only a leaf's absent field makes ERR: when none is absent (the usual event), the plain
    # Python form (`A and B`) is the same function, without the three-valued bookkeeping.
    return Cond(f"({src} if ({any_absent}) else {em.emit_bool(root)})", tri=True)


def _reads_fields(node: cast.Expr, text: str) -> bool:
    """Whether ``node`` reads anything that can be absent (a field, a label: not only `event` or `now`)."""
    return any(not (len(ref.path) == 1 and ref.path[0] in _ROOTS_NEVER_MISSING)
               for ref in references(cast.Ast(node, text)))


def propagates_errors(node: cast.Expr) -> bool:
    """No operator in ``node`` can absorb an error (`&&`, `||`, `has`, macros): any CEL error raised is its value.

    Unlike ``is_strict``, `c ? a : b` is allowed: it evaluates only the branch chosen, as
    Python's conditional expression does, and absorbs nothing.
    """
    for n in cast.walk(node):
        if isinstance(n, cast.Macro) or (isinstance(n, cast.Select) and n.test_only):
            return False
        if isinstance(n, cast.Call) and n.function in ("_&&_", "_||_"):
            return False
    return True


def is_strict(node: cast.Expr) -> bool:
    """No operator in ``node`` can absorb or skip an error (`&&`, `||`, `?:`, `has`, macros)."""
    for n in cast.walk(node):
        if isinstance(n, cast.Macro) or (isinstance(n, cast.Select) and n.test_only):
            return False
        if isinstance(n, cast.Call) and n.function in ("_&&_", "_||_", "_?_:_"):
            return False
    return True


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
        if len(ref.path) == 1 and ref.path[0] in _ROOTS_NEVER_MISSING:
            continue  # the event itself, `now`: always there
        local = hoisted.get(tuple(ref.path))
        if local is None:
            return None
        names.append(local)
    if not names:
        return None
    return " or ".join(f"{name} is _MISSING" for name in dict.fromkeys(names))
