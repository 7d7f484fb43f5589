"""The compiled form of a policy: per-label plans, the source table, counters.

Built once by ``compile_plan``; both the generated fast path and the exact
path read it. The *source table* gives every way a label can get its value an
integer code: the hot path records only that integer.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from activelabel import cel
from activelabel.engine.cardinality import CardinalityGuard, DistinctTracker
from activelabel.errors import PolicyError, PolicyIssue, RuleValueError
from activelabel.governance.sensitivity import is_sensitive
from activelabel.policy import EnricherSpec, Expr, LabelSpec, Policy, RuleSpec, label_types

if TYPE_CHECKING:
    from activelabel.enrich import Enricher
    from activelabel.models import ModelLabeler

#: Distinct values of an unguarded free-form label are tracked up to this many.
DISTINCT_TRACKING_LIMIT = 10_000


@dataclass
class RulePlan:
    spec: RuleSpec
    source_idx: int
    when: cel.Program | None
    value: Any
    value_prog: cel.Program | None


@dataclass
class LabelPlan:
    spec: LabelSpec
    index: int
    rules: list[RulePlan]
    models: list[ModelLabeler] = field(default_factory=list)
    model_sources: list[int] = field(default_factory=list)
    default_idx: int = -1
    from_idx: int = -1
    from_prog: cel.Program | None = None
    guard: CardinalityGuard | DistinctTracker | None = None
    tracks_distinct: bool = False


@dataclass
class EnricherPlan:
    spec: EnricherSpec
    runtime: Enricher
    key_prog: cel.Program
    source_idx: int


@dataclass
class Plan:
    policy: Policy
    labels: list[LabelPlan]
    enrichers: list[EnricherPlan]
    source_table: list[tuple[str, float]]  # code -> (source string, static confidence)
    source_label: list[str | None]  # code -> the label it sets (None for enricher keys)
    uses_now: bool = False


def check_value(spec: LabelSpec, value: Any) -> Any:
    """``value`` converted to the label's type, or RuleValueError (a rule error, not a crash)."""
    fitted = label_types.convert(label_types.value_type(spec), value, label_types.allowed_values(spec))
    if fitted is not label_types.NO_FIT:
        return fitted
    if spec.type == "enum":
        raise RuleValueError(f"value {value!r} is not one of {list(spec.values or ())}" if not is_sensitive(spec.sensitivity) else "value is not in the label's enum")
    raise RuleValueError(f"a {value.__class__.__name__} value does not fit label {spec.name!r} of type {spec.type}")


def bucket_value(spec: LabelSpec, number: Any) -> str:
    """The bucket name for ``number``, or RuleValueError for non-numbers and NaN."""
    if number.__class__ is bool or not isinstance(number, (int, float)) or (isinstance(number, float) and math.isnan(number)):
        got = "null" if number is None else type(number).__name__
        raise RuleValueError(f"`from` of bucket label {spec.name!r} gave {got}, not a number")
    return spec.bucket_of(number)


def _program(expr: Expr, issues: list[PolicyIssue], where: str) -> cel.Program | None:
    try:
        return cel.compile(expr.source)
    except Exception as exc:  # noqa: BLE001 - the loader already reported syntax errors; this is a backstop
        loc = expr.loc
        issues.append(PolicyIssue(f"{where}: {exc}", file=loc.file, line=loc.line, column=loc.column))
        return None


def compile_plan(policy: Policy, *, models: list[ModelLabeler] | None = None,
                 clock: Callable[[], float] | None = None) -> Plan:
    """Compile every expression of ``policy`` once; raise PolicyError listing every failure."""
    issues: list[PolicyIssue] = []
    table: list[tuple[str, float]] = []
    table_label: list[str | None] = []

    def add_source(name: str, conf: float, label: str | None) -> int:
        table.append((name, conf))
        table_label.append(label)
        return len(table) - 1

    enrichers = []
    for espec in policy.enrichers:
        prog = _program(espec.key, issues, f"enricher {espec.name} key")
        idx = add_source(f"enricher:{espec.name}", 1.0, None)
        if prog is not None:  # else the PolicyError below is raised before anything reads it
            enrichers.append(EnricherPlan(espec, espec.build(), prog, idx))

    by_label: dict[str, list[RuleSpec]] = {name: [] for name in policy.labels}
    for rule in policy.rules:
        by_label.setdefault(rule.label, []).append(rule)
    models_by_label: dict[str, list[ModelLabeler]] = {}
    for m in models or []:
        models_by_label.setdefault(m.label, []).append(m)

    plans: list[LabelPlan] = []
    for index, (name, spec) in enumerate(policy.labels.items()):
        rules = []
        for rule in by_label.get(name, []):
            when = _program(rule.when, issues, f"rule {rule.id} when") if rule.when is not None else None
            vprog = _program(rule.value_expr, issues, f"rule {rule.id} value_expr") if rule.value_expr is not None else None
            idx = add_source(f"rule:{rule.id}", float(rule.confidence), name)
            rules.append(RulePlan(rule, idx, when, rule.value, vprog))
        plan = LabelPlan(spec, index, rules)
        for m in models_by_label.get(name, []):
            plan.models.append(m)
            plan.model_sources.append(add_source(f"model:{m.name}@{m.version}", 1.0, name))
        if spec.type == "bucket" and spec.bucket_from is not None:
            plan.from_prog = _program(spec.bucket_from, issues, f"label {name} from")
            plan.from_idx = add_source(f"from:{name}", 1.0, name)
        if spec.has_default:
            # A default is the absence of evidence: confidence 0, so review queues see it as uncertain.
            plan.default_idx = add_source("default", 0.0, name)
        if spec.max_cardinality is not None:
            kw = {"clock": clock} if clock is not None else {}
            plan.guard = CardinalityGuard(spec.max_cardinality, spec.overflow, spec.window, **kw)
        elif spec.type in label_types.OPEN_TYPES and (
            any(r.value_prog is not None for r in rules) or plan.models
        ):
            plan.guard = DistinctTracker(DISTINCT_TRACKING_LIMIT)
            plan.tracks_distinct = True
        plans.append(plan)
    if issues:
        raise PolicyError(issues)
    uses_now = any("now" in _roots(p) for p in _all_programs(plans, enrichers))
    return Plan(policy, plans, enrichers, table, table_label, uses_now)


def _all_programs(plans: list[LabelPlan], enrichers: list[EnricherPlan]) -> list[cel.Program]:
    progs: list[cel.Program] = [e.key_prog for e in enrichers]
    for p in plans:
        if p.from_prog is not None:
            progs.append(p.from_prog)
        for r in p.rules:
            progs.extend(x for x in (r.when, r.value_prog) if x is not None)
    return progs


def _roots(prog: cel.Program) -> set[str]:
    return {ref.path[0] for ref in cel.references(prog.ast)}
