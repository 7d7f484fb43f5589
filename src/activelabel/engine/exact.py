"""The exact path: one label decided rule by rule with the CEL evaluator.

The generated fast path hands a label over to this module whenever its fast
code raises (a missing field, a wrong type, an error to absorb), and
``Decision.explain`` uses it to list every matching rule. It is the reference
semantics: the fast path must agree with it whenever the fast path returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from activelabel.cel import references
from activelabel.cel.ast import Select, select_path, walk
from activelabel.cel.emit import MISSING
from activelabel.engine.plan import LabelPlan, Plan, RulePlan, bucket_value, check_value

if TYPE_CHECKING:
    from activelabel.models import ModelLabeler


@dataclass
class Candidate:
    """A value a rule, model or bucket proposes for a label, with its confidence and source code."""

    value: Any
    confidence: float
    source_idx: int


@dataclass
class LabelOutcome:
    """How one label was decided: value (MISSING when unset), its code, every candidate."""

    value: Any
    code: Any  # int source index, or (index, confidence) when the confidence is computed
    candidates: list[Candidate] = field(default_factory=list)
    errors: list[tuple[int, str]] = field(default_factory=list)

    @property
    def conflict(self) -> bool:
        return len({_key(c.value) for c in self.candidates}) > 1


def _key(value: Any) -> Any:
    return (value.__class__, value)


def resolve(mode: str, cands: list[Candidate]) -> tuple[Any, Any]:
    """The winning (value, code) among candidates in rule order; (MISSING, -1) if none."""
    if not cands:
        return MISSING, -1
    if mode == "first_match":
        c = cands[0]
        return c.value, c.source_idx
    if mode == "max_confidence":
        best = cands[0]
        for c in cands[1:]:
            if c.confidence > best.confidence:  # strict: ties keep the earlier rule
                best = c
        return best.value, (best.source_idx, best.confidence)
    # vote: highest summed confidence; ties go to the value whose first rule is earliest
    totals: dict[Any, float] = {}
    first: dict[Any, Candidate] = {}
    for c in cands:
        k = _key(c.value)
        totals[k] = totals.get(k, 0.0) + c.confidence
        first.setdefault(k, c)
    winner = max(totals, key=lambda k: totals[k])  # max keeps the first (earliest) of equals
    all_conf = sum(totals.values())
    share = totals[winner] / all_conf if all_conf > 0 else 0.0
    return first[winner].value, (first[winner].source_idx, share)


class RuleFailure(str):
    """An error message from the exact path, knowing whether an absent read caused it (``absent``)."""

    __slots__ = ("absent",)
    absent: bool


def is_absent_error(message: str) -> bool:
    """Whether an error (a ``RuleFailure``, or a CEL error message) came from reading a field with no value.

    A ``RuleFailure`` knows (``failure``); for a bare message: the evaluator's words for a
    key a map does not have, a field of something that is not a map, or null given to an
    operator or a bucket (a JSON field that is there without a value, such as the body
    size of a 304 response).
    """
    known = getattr(message, "absent", None)
    if known is not None:
        return bool(known)
    if message.startswith("no such key") or "does not support field selection" in message:
        return True
    if message.startswith("no such overload: "):
        args = [a.strip() for a in message[message.find("(") + 1:message.rfind(")")].split(",")]
        # `x["f"]` on something that is not a map reads as an absent field, as `x.f` does
        return "null_type" in args or (message.startswith("no such overload: _[_](") and args[-1:] == ["string"])
    return message.startswith("`from` of bucket label") and " gave null, " in message


_READS: dict[int, tuple[Any, list[tuple[str, ...]]]] = {}


def _reads(prog: Any) -> list[tuple[str, ...]]:
    """The field paths ``prog`` reads as values (a path only tested by ``has()`` is not read)."""
    got = _READS.get(id(prog))
    if got is not None and got[0] is prog:
        return got[1]
    ast = prog.ast
    tested: dict[tuple[str, ...], int] = {}
    for node in walk(ast.root):
        if isinstance(node, Select) and node.test_only:
            sp = select_path(node.operand)
            if sp is not None:
                path = (sp[1][0].lstrip("."), *sp[1][1:], node.field)
                tested[path] = tested.get(path, 0) + 1
    paths = []
    for ref in references(ast):
        path = (ref.path[0].lstrip("."), *ref.path[1:])
        if tested.get(path):
            tested[path] -= 1
            continue
        paths.append(path)
    if len(_READS) > 50_000:  # programs of policies long replaced: start over rather than grow
        _READS.clear()
    _READS[id(prog)] = (prog, paths)
    return paths


def reads_absent(prog: Any, bindings: dict[str, Any]) -> bool:
    """Whether ``prog`` reads a field that ``bindings`` lack (a key not there, or a parent that is not a map).

    The same test the generated code makes when it loads a field (``MISSING``).
    """
    for path in _reads(prog):
        v = bindings.get(path[0], MISSING)
        if v is MISSING:
            continue  # not a root this policy binds: never absent by an event
        for key in path[1:]:
            if (v.__class__ is dict or isinstance(v, dict)) and key in v:
                v = v[key]
            else:
                return True
    return False


def failure(message: str, prog: Any, bindings: dict[str, Any]) -> RuleFailure:
    """``message`` as a ``RuleFailure``: absent when the message says so or ``prog`` read an absent field."""
    out = RuleFailure(message)
    out.absent = is_absent_error(message) or (prog is not None and reads_absent(prog, bindings))
    return out


def decide_label(plan: Plan, lp: LabelPlan, bindings: dict[str, Any], *, every_rule: bool,
                 predictions: tuple[dict[str, list[Any]], int] | None = None, counted: bool = True) -> LabelOutcome:
    """Decide one label exactly. ``every_rule`` evaluates all rules (explain, conflicts).

    ``predictions``: model answers computed for a whole batch, and this event's index.
    ``counted=False`` (explanations, ``label_exact``): models answer without counting a call,
    an abstention or a failure, and without moving their circuit breaker.
    """
    spec = lp.spec
    outcome = LabelOutcome(MISSING, -1)
    if lp.from_prog is not None:
        try:
            value = bucket_value(spec, lp.from_prog.evaluate(bindings))
        except Exception as exc:  # noqa: BLE001 - CEL semantics: an expression that errors does not match; counted per rule
            outcome.errors.append((lp.from_idx, failure(str(exc), lp.from_prog, bindings)))
        else:
            outcome.candidates.append(Candidate(value, 1.0, lp.from_idx))
    stop_early = spec.resolve == "first_match" and not every_rule
    for rp in lp.rules:
        if stop_early and outcome.candidates:
            break
        got = decide_rule(plan, lp, rp, bindings)
        if isinstance(got, Candidate):
            outcome.candidates.append(got)
        elif got is not None:
            outcome.errors.append((rp.source_idx, got))
    if lp.models and not (stop_early and outcome.candidates):
        for model, idx in zip(lp.models, lp.model_sources):
            if predictions is not None and model.name in predictions[0]:
                pred = predictions[0][model.name][predictions[1]]
            else:
                row = features(model, bindings)
                # A model without the uncounted form (a test double, a plug-in) answers as it does.
                quiet = None if counted else getattr(model, "predict_uncounted", None)
                pred = model.predict(row) if quiet is None else quiet(row)
            if pred is not None:
                outcome.candidates.append(Candidate(pred[0], float(pred[1]), idx))
    value, code = resolve(spec.resolve, outcome.candidates)
    if lp.models and code != -1 and not isinstance(code, tuple):
        # A model's confidence is computed, not static: carry it in the code.
        cand = next(c for c in outcome.candidates if c.source_idx == code)
        if code in lp.model_sources:
            code = (code, cand.confidence)
    if value is MISSING and lp.default_idx >= 0:
        value, code = spec.default, lp.default_idx
    outcome.value, outcome.code = value, code
    return outcome


def decide_rule(plan: Plan, lp: LabelPlan, rp: RulePlan, bindings: dict[str, Any]) -> Candidate | str | None:
    """One rule, exactly: a Candidate when it matches, an error message when it fails, None otherwise."""
    if rp.when is not None:
        try:
            hit = rp.when.evaluate(bindings)
        except Exception as exc:  # noqa: BLE001 - CEL semantics: an expression that errors does not match; counted per rule
            return failure(str(exc) or type(exc).__name__, rp.when, bindings)
        if hit is not True:
            return None if hit is False else failure(f"`when` gave {type(hit).__name__}, not bool", None, bindings)
    try:
        value = rp.value if rp.value_prog is None else check_value(lp.spec, rp.value_prog.evaluate(bindings))
    except Exception as exc:  # noqa: BLE001 - a value that does not fit the label is a rule error, not a crash
        return failure(str(exc) or type(exc).__name__, rp.value_prog, bindings)
    return Candidate(value, plan.source_table[rp.source_idx][1], rp.source_idx)


def features(model: ModelLabeler, bindings: dict[str, Any]) -> dict[str, Any]:
    """The feature row a model sees for one event's bindings (a failed feature is None)."""
    feats: dict[str, Any] = {}
    for name, prog in model.feature_programs.items():
        try:
            feats[name] = prog.evaluate(bindings)
        except Exception:  # noqa: BLE001 - a missing feature is the model's to handle (it abstains)
            feats[name] = None
    return feats
