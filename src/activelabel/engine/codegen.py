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

from bisect import bisect_right
from typing import Any, Callable

from activelabel.cel import _ast as cast
from activelabel.cel.codegen import MISSING, PythonEmitter
from activelabel.engine.plan import LabelPlan, Plan

_BOOL_OPERATORS = {
    "_==_", "_!=_", "_<_", "_<=_", "_>_", "_>=_", "_&&_", "_||_", "!_", "@in",
    "matches", "startsWith", "endsWith", "contains",
}


class NotBool(Exception):
    """A `when` that gave something other than a bool (the exact path reports it)."""


def _is_bool(node: Any) -> bool:
    """Whether ``node`` certainly evaluates to a bool or raises (so `is True` is exact)."""
    if isinstance(node, cast.Literal):
        return node.value.__class__ is bool
    if isinstance(node, cast.Select) and node.test_only:
        return True
    if isinstance(node, cast.Call):
        return node.function in _BOOL_OPERATORS
    if isinstance(node, cast.Macro):
        return node.kind in ("all", "exists", "exists_one") if hasattr(node, "kind") else False
    return False


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
             errors: list[int]) -> tuple[str, dict[str, Any]]:
    """The source of ``label_event(event) -> (labels, codes)`` and its namespace."""
    ns: dict[str, Any] = {"_MISSING": MISSING, "_NotBool": NotBool, "_slow": slow, "_hits": hits, "_errors": errors,
                          "_bisect": bisect_right, "_fail": _fail}
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
            exprs[key] = em.emit(_root(prog.ast))
        return exprs[key]

    for ep in plan.enrichers:
        emit(ep.key_prog)
    for lp in plan.labels:
        if lp.from_prog is not None:
            emit(lp.from_prog)
        for rp in lp.rules:
            for prog in (rp.when, rp.value_prog):
                if prog is not None:
                    emit(prog)

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
        w(f"    _k = _slow({-1 - plan.enrichers.index(ep)}, {{{', '.join(bind_names)}}})")
        w(f"_enr_{i} = _lookup_{i}(_k)")
        bind_names.append(f"{ep.spec.name!r}: _enr_{i}")
        for line in em.prologue(ep.spec.name):
            w(line)
    bindings = "{" + ", ".join(bind_names) + "}"

    for lp in plan.labels:
        _label_block(w, ns, lp, plan, emit, bindings, every_rule, resolvers)
        name = lp.spec.name
        if lp.guard is not None:
            ns[f"_guard_{lp.index}"] = lp.guard.admit
            w(f"if _v is not _MISSING: _v = _guard_{lp.index}(_v)")
        w("if _v is not _MISSING:")
        w(f"    out[{name!r}] = _v")
        w(f"    why[{name!r}] = _w")
        w("    _hits[_w if _w.__class__ is int else _w[0]] += 1")
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
                 bindings: str, every_rule: bool, resolvers: list[Any]) -> None:
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
        check = {
            "enum": f"(_y if (_y := {{}}) in _ENUM_{li} and _y.__class__ is str else _fail())",
            "string": "(_y if (_y := {}).__class__ is str else _fail())",
            "bool": "(_y if (_y := {}).__class__ is bool else _fail())",
            "int": "(_y if (_y := {}).__class__ is int else _fail())",
            "float": "(float(_y) if (_y := {}).__class__ is float or _y.__class__ is int else _fail())",
        }[spec.type]
    collect = every_rule or spec.resolve != "first_match"
    w("try:")
    if not collect:
        first = True
        for rp in lp.rules:
            value = _const(ns, rp.value) if rp.value_prog is None else check.format(emit(rp.value_prog))
            kw = "if" if first else "elif"
            if rp.when is None:
                cond = None
            else:
                src = emit(rp.when)
                cond = src if _is_bool(_root(rp.when.ast)) else None
            if rp.when is None:
                if first:
                    w(f"    _v = {value}; _w = {rp.source_idx}")
                else:
                    w("    else:")
                    w(f"        _v = {value}; _w = {rp.source_idx}")
                first = None  # chain closed: later rules can never win
                break
            if cond is not None:
                w(f"    {kw} {cond}:")
            else:
                w(f"    {kw} (_c := ({src})) is True:")
            w(f"        _v = {value}; _w = {rp.source_idx}")
            if cond is None:
                w("    elif _c is not False: raise _NotBool")
            first = False
        if first is True:
            w(f"    _v = {default_v}; _w = {default_w}")
        elif first is False:
            w("    else:")
            w(f"        _v = {default_v}; _w = {default_w}")
        w("except Exception:")
        w(f"    _v, _w = _slow({li}, {bindings})")
        return
    w("    _cs = []")
    for rp in lp.rules:
        value = _const(ns, rp.value) if rp.value_prog is None else check.format(emit(rp.value_prog))
        if rp.when is None:
            w(f"    _cs.append(({value}, {rp.source_idx}))")
            continue
        src = emit(rp.when)
        if _is_bool(_root(rp.when.ast)):
            w(f"    if {src}: _cs.append(({value}, {rp.source_idx}))")
        else:
            w(f"    _c = {src}")
            w(f"    if _c is True: _cs.append(({value}, {rp.source_idx}))")
            w("    elif _c is not False: raise _NotBool")
    w("except Exception:")
    w(f"    _v, _w = _slow({li}, {bindings})")
    w("else:")
    ns[f"_resolve_{li}"] = resolvers[li]
    w(f"    _v, _w = _resolve_{li}(_cs)")
