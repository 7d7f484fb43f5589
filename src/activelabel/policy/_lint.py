"""Warnings about a policy that loads but probably does not do what its author meant.

    - a rule that can never apply (an earlier ``first_match`` rule always sets the label);
    - a label nothing sets (no rule, model, default or ``from``);
    - a default that is never used (a rule always sets the label);
    - an enricher no expression reads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._spec import RuleSpec

if TYPE_CHECKING:
    from ._merge import Merger


def _always_sets(rule: RuleSpec) -> bool:
    """A constant rule without a condition (``when`` absent or ``true``) sets its label on every event."""
    return rule.value_expr is None and (rule.when is None or rule.when.source.strip() == "true")


def lint(merged: Merger) -> None:
    """Report warnings on ``merged.rep`` (the policy has no errors when this runs)."""
    rep = merged.rep
    always: dict[str, RuleSpec] = {}
    set_by: dict[str, int] = {}
    for p in merged.rules:
        rule: RuleSpec = p.spec
        label = merged.labels[rule.label].spec
        set_by[rule.label] = set_by.get(rule.label, 0) + 1
        first = always.get(rule.label)
        if first is not None and label.resolve == "first_match":
            rep.add(
                f"rule `{rule.id}` never applies: rule `{first.id}` comes first and always sets `{rule.label}`",
                rule.loc,
                rule_id=rule.id,
                suggestion=f"move it before `{first.id}`, or give `{first.id}` a `when`",
                warning=True,
            )
        elif first is None and _always_sets(rule):
            always[rule.label] = rule
    for p in merged.models:
        set_by[p.spec.label] = set_by.get(p.spec.label, 0) + 1
    for name, p in merged.labels.items():
        label = p.spec
        if label.type == "bucket":
            continue
        if not set_by.get(name) and not label.has_default:
            rep.add(f"label `{name}` is never set: no rule, model or default", label.loc, warning=True)
        elif label.has_default and name in always:
            rep.add(
                f"the default of `{name}` is never used: rule `{always[name].id}` always sets it",
                label.loc,
                warning=True,
            )
    read = {path[0].lstrip(".") for group in (merged.labels.values(), merged.rules, merged.models) for p in group for _, path, _, _ in p.refs}
    for p in merged.enrichers:
        if p.spec.name not in read:
            hint = (f": `activelabel loop` writes it for a rule such as `when: {p.spec.name}.novel` (send lines unlike "
                    "the training data to review); add one, or ignore this" if p.spec.type == "novelty" else "")
            rep.add(f"enricher `{p.spec.name}` is never read by any expression{hint}", p.locs.get("name", p.spec.loc),
                    warning=True)
