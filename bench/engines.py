"""Every engine the benchmark compares, behind one shape: `label(event) -> dict`.

Each peer is used the way its documentation shows and a user would: every
rule's condition compiled once, then per event the conditions of each label are
evaluated in rule order until one is true (first match), the label's default
applying when none is. A condition that raises (missing key, wrong type) does
not match, which is CEL's rule too. Per-event conversions a peer needs (cel-python's
`json_to_cel`, the Rust binding's `Context`) are done once per event, not per rule.

`build_engines(spec, policy_path)` returns them all; peers whose package is not
installed are left out with the reason.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.handwritten import make_labeler
from bench.policies import PolicySpec, to_cel, to_rule_engine, to_simpleeval

LabelFn = Callable[[dict], dict]


@dataclass
class Engine:
    """One way of labeling events, with the name the tables show."""

    name: str
    label: LabelFn
    # Labels a whole list at once (activelabel's label_batch); None for per-event engines.
    label_many: Callable[[list[dict]], list[dict]] | None = None
    # Speed class ("fast", "medium", "slow", "slowest"): slower engines are timed on fewer events.
    speed: str = "fast"
    notes: list[str] = field(default_factory=list)


def _plan(spec: PolicySpec, compile_one: Callable[[object], object]) -> list[tuple[str, list, str | None]]:
    by_label = spec.rules_by_label()
    return [(lab.name, [(compile_one(r.when), r.value) for r in by_label[lab.name]], lab.default)
            for lab in spec.labels]


def first_match(plan: list[tuple[str, list, str | None]], test: Callable[[object, object], bool],
                prepare: Callable[[dict], object] = lambda e: e) -> LabelFn:
    """A labeler that walks `plan` in order; `test(compiled, prepared_event)` decides a rule."""

    def label(event: dict) -> dict:
        ctx = prepare(event)
        out = {}
        for name, rules, default in plan:
            for compiled, value in rules:
                try:
                    if test(compiled, ctx):
                        out[name] = value
                        break
                except Exception:
                    pass
            else:
                if default is not None:
                    out[name] = default
        return out

    return label


def handwritten(spec: PolicySpec) -> Engine:
    return Engine("hand-written Python", make_labeler(spec))


def simpleeval_engine(spec: PolicySpec) -> Engine:
    from simpleeval import EvalWithCompoundTypes

    def matches(text: str, pattern: str) -> bool:
        return re.search(pattern, text) is not None

    ev = EvalWithCompoundTypes(functions={"matches": matches})
    plan = _plan(spec, lambda p: (to_simpleeval(p), ev.parse(to_simpleeval(p))))

    def prepare(event: dict) -> dict:
        ev.names = event
        return event

    def test(compiled: tuple, _event: dict) -> bool:
        return ev.eval(compiled[0], previously_parsed=compiled[1]) is True

    return Engine("simpleeval", first_match(plan, test, prepare), speed="medium")


def rule_engine_engine(spec: PolicySpec) -> Engine:
    import rule_engine

    ctx = rule_engine.Context()
    plan = _plan(spec, lambda p: rule_engine.Rule(to_rule_engine(p), context=ctx))
    return Engine("rule-engine", first_match(plan, lambda rule, e: rule.matches(e)), speed="slow")


def cel_python_engine(spec: PolicySpec) -> Engine:
    import celpy
    from celpy.adapter import json_to_cel

    env = celpy.Environment()
    plan = _plan(spec, lambda p: env.program(env.compile(to_cel(p))))

    def prepare(event: dict) -> dict:
        return {"event": json_to_cel(event)}

    def test(prog, activation) -> bool:
        result = prog.evaluate(activation)
        return isinstance(result, celpy.celtypes.BoolType) and bool(result)

    return Engine("cel-python", first_match(plan, test, prepare), speed="slowest")


def cel_rust_engine(spec: PolicySpec) -> Engine:
    import cel  # the Rust-backed `common-expression-language` bindings

    plan = _plan(spec, lambda p: cel.compile(to_cel(p)))

    def prepare(event: dict):
        # One Context per event: the dict is converted to CEL values once, not per rule.
        return cel.Context(variables={"event": event})

    return Engine("common-expression-language (Rust)",
                  first_match(plan, lambda prog, ctx: prog.execute(ctx) is True, prepare), speed="slow")


def activelabel_engines(policy_path: Path) -> list[Engine]:
    from activelabel import Labeler

    labeler = Labeler.from_file(policy_path)
    label = labeler.label
    label_batch = labeler.label_batch

    def per_event(event: dict) -> dict:
        return label(event).labels

    def batch(events: list[dict]) -> list[dict]:
        return [d.labels for d in label_batch(events)]

    engines = [
        Engine("activelabel label()", per_event),
        Engine("activelabel label_batch()", per_event, label_many=batch),
    ]
    if hasattr(labeler, "labels_only"):  # the bulk path the CLI uses: no Decision object
        engines.append(Engine("activelabel labels_only()", labeler.labels_only))
    return engines


PEERS: dict[str, Callable[[PolicySpec], Engine]] = {
    "simpleeval": simpleeval_engine,
    "rule-engine": rule_engine_engine,
    "cel-python": cel_python_engine,
    "cel-rust": cel_rust_engine,
}


def build_engines(spec: PolicySpec, policy_path: Path | None,
                  peers: tuple[str, ...] = tuple(PEERS)) -> tuple[list[Engine], dict[str, str]]:
    """(engines, {name: why it is missing}); the hand-written baseline comes first."""
    engines = [handwritten(spec)]
    missing: dict[str, str] = {}
    if policy_path is not None:
        try:
            engines += activelabel_engines(policy_path)
        except Exception as exc:
            missing["activelabel"] = f"{type(exc).__name__}: {exc}"
    for key in peers:
        try:
            engines.append(PEERS[key](spec))
        except ImportError as exc:
            missing[key] = f"not installed ({exc})"
    return engines, missing
