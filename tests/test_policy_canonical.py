"""Every field of every policy spec changes the policy version, unless it is excluded on purpose with a reason."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Any

import pytest

from activelabel.policy import _spec
from activelabel.policy._canonical import NOT_HASHED, canonical_form, digest_of
from activelabel.policy._yaml import Loc

E = _spec.Expr
WHERE = Loc("p.yaml", 3, 5)

# One fully filled spec of each kind: every hashed field holds a non-default value.
BASE: dict[str, Any] = {
    "Metadata": _spec.Metadata(name="n", version="7", owner="o", description="d", loc=WHERE),
    "LabelSpec": _spec.LabelSpec(
        name="band", type="enum", values=("a", "b"), default="a", has_default=True, resolve="vote",
        description="d", owner="o", sensitivity="pii", max_cardinality=10, overflow="__x__", window=60.0,
        bucket_from=E("event.x"), bounds=(1.0,), bound_texts=("1",), bucket_names=("<1", ">=1"), loc=WHERE, index=2),
    "RuleSpec": _spec.RuleSpec(id="r", label="band", value="a", value_expr=E("event.v"), when=E("event.ok"),
                               confidence=0.5, description="d", loc=WHERE, index=1),
    "EnricherSpec": _spec.EnricherSpec(name="t", type="lookup", file="t.csv", path=Path("/x/t.csv"), format="csv",
                                       key=E("event.k"), key_field="k", table="tb", key_column="kc", description="d",
                                       sha256="abc", loc=WHERE, index=1, _rows={"k": {"a": 1}}),
    "ModelSpec": _spec.ModelSpec(name="m", label="band", type="sklearn", path=Path("/x/m.pkl"), path_text="m.pkl",
                                 features={"f": E("event.f")}, min_confidence=0.1, timeout_ms=20.0, on_error="a",
                                 version="1", description="d", breaker_failures=3, breaker_cooldown_s=9.0,
                                 loc=WHERE, index=1),
    "PolicyTest": _spec.PolicyTest(name="t", event={"x": 1}, expect={"band": "a"}, loc=WHERE, index=1),
    "ProtectSpec": _spec.ProtectSpec(kind="mask", marker="##", keep_prefix=1, keep_suffix=2, loc=WHERE),
    "OutputsSpec": _spec.OutputsSpec(clearance="pii", loc=WHERE),
    "DetectorSpec": _spec.DetectorSpec(entity="TICKET", pattern="T-[0-9]+", score=0.7, loc=WHERE),
    "PiiSpec": _spec.PiiSpec(detectors=(), max_scan_chars=100, undeclared_sample=0.5),
    "RedactSpec": _spec.RedactSpec(allowed_keys=("a",), ignored_keys=("b",), blocked_values=("x+",),
                                   entities=("EMAIL_ADDRESS",), treatment="pseudonymize", marker="[r]", summary="info",
                                   loc=WHERE),
}


def _form(specs: dict[str, Any]) -> bytes:
    # Nested specs are composed here, so an edit of the inner one reaches the outer one.
    label = specs["LabelSpec"]
    if label.protect is None:
        label = dataclasses.replace(label, protect=specs["ProtectSpec"])
    pii = specs["PiiSpec"]
    if not pii.detectors:
        pii = dataclasses.replace(pii, detectors=(specs["DetectorSpec"],))
    form = canonical_form(_spec.API_VERSION, _spec.KIND, specs["Metadata"], labels={label.name: label},
                          rules=[specs["RuleSpec"]], enrichers=[specs["EnricherSpec"]], models=[specs["ModelSpec"]],
                          tests=[specs["PolicyTest"]], outputs=specs["OutputsSpec"], redact=specs["RedactSpec"],
                          pii=pii)
    return digest_of(form)[0]


def _changed(value: Any) -> Any:
    """A different value of the same kind: what an edit of the policy would give."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "_changed"
    if isinstance(value, E):
        return E(value.source + " && true")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        first = next(f.name for f in dataclasses.fields(value) if isinstance(getattr(value, f.name), str))
        return dataclasses.replace(value, **{first: _changed(getattr(value, first))})
    if isinstance(value, tuple):
        return (*value, value[0] if dataclasses.is_dataclass(value[0]) else "zz")
    if isinstance(value, dict):
        return {**value, "zz": next(iter(value.values()))}
    if isinstance(value, Path):
        return value.with_name("other")
    if isinstance(value, Loc):
        return Loc("q.yaml", value.line + 1, value.column + 1)
    raise AssertionError(f"no way to change {value!r}; extend _changed")


# Fields that hold a nested spec composed in `_form`: an edit puts a different nested spec there.
COMPOSED = {
    ("LabelSpec", "protect"): _spec.ProtectSpec(kind="drop"),
    ("PiiSpec", "detectors"): (_spec.DetectorSpec(entity="OTHER", pattern="O-[0-9]+"),),
}

SPEC_FIELDS = [(name, f.name) for name, spec in BASE.items() for f in dataclasses.fields(spec)]


@pytest.mark.parametrize(("spec", "field"), SPEC_FIELDS, ids=[f"{s}.{f}" for s, f in SPEC_FIELDS])
def test_a_field_changes_the_canonical_form_exactly_when_it_is_not_excluded(spec, field):
    """Editing a hashed field changes the canonical form; editing an excluded one does not."""
    before = _form(BASE)
    new = COMPOSED[(spec, field)] if (spec, field) in COMPOSED else _changed(getattr(BASE[spec], field))
    after = _form({**BASE, spec: dataclasses.replace(BASE[spec], **{field: new})})
    if (spec, field) in NOT_HASHED:
        assert after == before, f"{spec}.{field} is listed as not hashed, yet it changes the form"
    else:
        assert after != before, f"{spec}.{field} is not in the canonical form: hash it, or add it to NOT_HASHED with a reason"


def test_every_spec_dataclass_is_covered():
    """Each dataclass in policy/_spec.py is filled in above (Policy and Expr through the checks below)."""
    dataclasses_in_spec = {n for n, obj in vars(_spec).items()
                           if inspect.isclass(obj) and dataclasses.is_dataclass(obj) and obj.__module__ == _spec.__name__}
    assert dataclasses_in_spec == set(BASE) | {"Policy", "Expr"}


def test_expr_hashes_its_source_only():
    """An expression is hashed by its text; its parsed tree and position are excluded."""
    assert {f.name for f in dataclasses.fields(_spec.Expr)} == {"source", "ast", "loc"}
    assert ("Expr", "source") not in NOT_HASHED and {("Expr", "ast"), ("Expr", "loc")} <= NOT_HASHED.keys()
    moved = dataclasses.replace(BASE["RuleSpec"], when=E("event.ok", ast=object(), loc=Loc("q.yaml", 9, 9)))
    assert _form({**BASE, "RuleSpec": moved}) == _form(BASE)


def test_every_policy_field_is_hashed_content_or_excluded():
    """Each field of Policy is an argument of canonical_form or is excluded with a reason."""
    hashed = set(inspect.signature(canonical_form).parameters)
    for f in dataclasses.fields(_spec.Policy):
        assert f.name in hashed or ("Policy", f.name) in NOT_HASHED, f"Policy.{f.name} is neither hashed nor excluded"


def test_every_exclusion_names_a_real_field_and_gives_a_reason():
    """NOT_HASHED lists no stale field, and every entry says why."""
    classes = {**{k: type(v) for k, v in BASE.items()}, "Policy": _spec.Policy, "Expr": _spec.Expr}
    for (spec, field), reason in NOT_HASHED.items():
        assert field in {f.name for f in dataclasses.fields(classes[spec])}, (spec, field)
        assert len(reason) > 10
