"""``compile_policy``: a policy through plan → index → generate → exec, into a ``CompiledPolicy``.

The four passes, each in its own module:

1. **plan** (``engine/plan.py``): every CEL expression compiled once, the source table
   (an integer code for every way a label can get its value), enrichers and guards built;
2. **index** (``engine/index.py``): runs of first-match rules on one field folded into a
   dict lookup or an RE2 set;
3. **generate** (``engine/generate.py``): the Python source of one ``label_event``
   function, each step commented with its rule id and file:line;
4. **exec**: the source compiled and executed into a namespace holding the tables.

A ``CompiledPolicy`` is what a ``Decision`` reads (its source table, its version, the
exact path for ``explain``); the ``Labeler`` wraps one and adds the public surface.
It owns the per-source counters the generated code increments.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from activelabel.cel.emit import MISSING
from activelabel.engine.exact import (
    Candidate,
    LabelOutcome,
    decide_label,
    decide_rule,
    failure,
    features,
    is_absent_error,
    reads_absent,
)
from activelabel.engine.generate import Counters, generate
from activelabel.engine.index import index_plan
from activelabel.engine.plan import LabelPlan, Plan, RulePlan, compile_plan
from activelabel.errors import NoOverloadError, PolicyError, PolicyIssue
from activelabel.governance.sensitivity import is_sensitive
from activelabel.policy import Policy
from activelabel.policy._load import paused_gc

if TYPE_CHECKING:
    from activelabel.engine.decision import Decision
    from activelabel.models import ModelLabeler

#: The generated function: event -> (labels, codes).
LabelFunction = Callable[[dict[str, Any]], tuple[dict[str, Any], dict[str, Any]]]


def _wall_now() -> datetime:
    return datetime.now(UTC)


class CompiledPolicy:
    """A policy compiled into one function, with the tables and counters it reads.

    ``fn(event) -> (labels, codes)`` is the hot path; ``hits[i]`` / ``errors[i]`` count,
    per source code ``i``, the times it decided its label / failed to evaluate.
    ``now`` gives CEL's ``now`` on every path (fast, exact, explain, batch models).
    """

    def __init__(self, policy: Policy, plan: Plan, *, every_rule: bool, now: Callable[[], datetime]) -> None:
        self.policy = policy
        self.plan = plan
        self.every_rule = every_rule
        self.now = now
        self.version = policy.version
        self.source_table = plan.source_table
        self.hits = [0] * len(plan.source_table)
        self.errors = [0] * len(plan.source_table)  # every failure to evaluate
        self.absent = [0] * len(plan.source_table)  # of those: an absent field or unset label was read
        self.run_absent: list[int] = []  # per folded run (self.runs): absent reads of all its rules at once
        self.conflicts = [0] * len(plan.labels)
        self.source = ""
        self.fn: LabelFunction = _unbuilt
        # (label plan, rules, bulk) per first-match step, filled by the generator
        self.runs: list[tuple[LabelPlan, list[RulePlan], bool]] = []
        # Model answers computed for a whole batch, and the index of the event being labeled.
        self.batch_preds: dict[str, list[Any]] | None = None
        self.batch_cursor = 0

    # ---- counters -----------------------------------------------------

    def add_counts(self, hits: dict[int, int], errors: dict[int, int], absent: dict[int, int] | None = None) -> None:
        """Merge counts computed elsewhere (the columnar path) into this policy's counters.

        ``errors`` counts every failure; ``absent`` the part of them that read an absent field.
        """
        for idx, c in hits.items():
            self.hits[idx] += c
        for idx, c in errors.items():
            self.errors[idx] += c
        for idx, c in (absent or {}).items():
            self.absent[idx] += c

    def error_counts(self) -> tuple[list[int], list[int]]:
        """Per source code: (every failure, the absent-field part of them), folded runs spread over their rules."""
        errors = list(self.errors)
        absent = list(self.absent)
        for run_id, c in enumerate(self.run_absent):
            if c:
                for rp in self.runs[run_id][1]:
                    errors[rp.source_idx] += c
                    absent[rp.source_idx] += c
        return errors, absent

    def _count_error(self, idx: int, message: str) -> None:
        self.errors[idx] += 1
        if is_absent_error(message):
            self.absent[idx] += 1

    # ---- the exact path -------------------------------------------------

    def base_bindings(self, event: dict[str, Any]) -> dict[str, Any]:
        """What an expression can see before any label is decided: event, enrichers, now."""
        plan = self.plan
        bindings: dict[str, Any] = {"event": event, "labels": {}}
        if plan.uses_now:
            bindings["now"] = self.now()
        for ep in plan.enrichers:
            try:
                key = ep.key_prog.evaluate(bindings)
            except Exception:  # noqa: BLE001 - a key CEL cannot compute is a miss, as on the fast path
                key = None
            bindings[ep.spec.name] = ep.runtime.lookup(key)
        return bindings

    def predict_batch(self, models: Sequence[ModelLabeler], events: list[dict[str, Any]]) -> dict[str, list[Any]]:
        """Each model's answers for a whole batch, one ``predict_batch`` call per model."""
        bindings = [self.base_bindings(e) for e in events]
        return {model.name: model.predict_batch([features(model, b) for b in bindings]) for model in models}

    def label_exact(self, event: dict[str, Any]) -> dict[str, Any]:
        """The labels by the reference semantics; counters and guards untouched."""
        plan = self.plan
        bindings = self.base_bindings(event)
        for lp in plan.labels:
            outcome = decide_label(plan, lp, bindings, every_rule=False, counted=False)
            if outcome.value is not MISSING:
                bindings["labels"][lp.spec.name] = outcome.value
        labels: dict[str, Any] = bindings["labels"]
        return labels

    def slow(self, index: int, bindings: dict[str, Any]) -> Any:
        """The generated code's fallback: an enricher key (index < 0) or a whole label, exactly."""
        plan = self.plan
        if index < 0:  # an enricher key the fast code could not compute
            ep = plan.enrichers[-1 - index]
            try:
                return ep.key_prog.evaluate(bindings)
            except Exception as exc:  # noqa: BLE001 - a key CEL cannot compute is a miss, counted as the key's error
                self._count_error(ep.source_idx, failure(str(exc), ep.key_prog, bindings))
                return None
        lp = plan.labels[index]
        preds = self.batch_preds
        outcome = decide_label(plan, lp, bindings, every_rule=self.every_rule,
                               predictions=None if preds is None else (preds, self.batch_cursor))
        for idx, msg in outcome.errors:
            self._count_error(idx, msg)
        if outcome.conflict:
            self.conflicts[index] += 1
        return outcome.value, outcome.code

    def cel_error(self, idx: int, prog: Any, exc: Exception, bindings: dict[str, Any] | None) -> None:
        """A CEL error the generated code caught in place (a strict expression): counted as the exact path would.

        ``prog`` None (and no ``bindings``): the generated code has already seen every field it reads present.
        """
        if isinstance(exc, NoOverloadError):
            # The commonest error (a string where a number was expected): classified from the
            # operands, as `is_absent_error` would from the message, without building it.
            ops = exc.operands
            self.errors[idx] += 1
            if (any(o is None for o in ops) or (exc.function == "_[_]" and ops[-1].__class__ is str)
                    or (prog is not None and reads_absent(prog, bindings or {}))):
                self.absent[idx] += 1
            return
        self._count_error(idx, failure(str(exc) or type(exc).__name__, prog, bindings or {}))

    def rule_error(self, idx: int, prog: Any, bindings: dict[str, Any]) -> None:
        """A rule error decided in place (a value that does not fit, a comparison of wrong types).

        Not an absent read by itself; absent when ``prog`` read an absent field, as on the exact path.
        """
        self.errors[idx] += 1
        if reads_absent(prog, bindings):
            self.absent[idx] += 1

    def exact_rules(self, run_id: int, bindings: dict[str, Any]) -> tuple[Any, int] | None:
        """Re-decide one first-match step (a rule, or a folded run) exactly; count its errors."""
        lp, rules, bulk = self.runs[run_id]
        for n, rp in enumerate(rules):
            got = decide_rule(self.plan, lp, rp, bindings)
            if isinstance(got, Candidate):
                return got.value, got.source_idx
            if got is not None:
                self._count_error(rp.source_idx, got)
                if bulk and n == 0:
                    # The run tests one field the same way: the field failed, so every rule fails.
                    for other in rules[1:]:
                        self._count_error(other.source_idx, got)
                    return None
        return None

    def explain(self, decision: Decision) -> dict[str, Any]:
        """``Decision.explain``: every label re-decided exactly, every rule evaluated."""
        plan = self.plan
        bindings = self.base_bindings(decision._event)
        table = self.source_table
        labels = decision.labels
        codes = decision._why
        confidences = decision.confidences
        sources = decision.sources
        out: dict[str, Any] = {}
        for lp in plan.labels:
            name = lp.spec.name
            outcome: LabelOutcome = decide_label(plan, lp, bindings, every_rule=True, counted=False)
            winner = codes.get(name)
            win_idx = winner[0] if isinstance(winner, tuple) else winner
            matched = [table[c.source_idx][0] for c in outcome.candidates]
            entry: dict[str, Any] = {
                "value": labels.get(name),
                "set": name in labels,
                "confidence": confidences.get(name),
                "source": sources.get(name),
                "matched": [m for m in matched if m.startswith(("rule:", "model:"))],
                "lost": [table[c.source_idx][0] for c in outcome.candidates
                         if c.source_idx != win_idx and table[c.source_idx][0].startswith(("rule:", "model:"))],
                "candidates": [
                    {"source": table[c.source_idx][0], "value": c.value, "confidence": c.confidence}
                    for c in outcome.candidates
                ],
                "errors": [{"source": table[i][0],
                            "error": msg if not is_sensitive(lp.spec.sensitivity) else "evaluation failed"}
                           for i, msg in outcome.errors],
            }
            if (lp.guard is not None and not lp.tracks_distinct and name in labels
                    and labels[name] == lp.spec.overflow and outcome.value != lp.spec.overflow):
                entry["overflowed"] = True
            out[name] = entry
            if name in labels:
                bindings["labels"][name] = labels[name]
        return {
            "policy": plan.policy.metadata.name,
            "policy_version": self.version,
            "elapsed_us": round(decision.elapsed_ns / 1000, 3),
            "labels": out,
        }


def _unbuilt(event: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    raise RuntimeError("the policy function is set by compile_policy before anything calls it")


def compile_policy(
    policy: Policy,
    *,
    models: list[ModelLabeler] | None = None,
    every_rule: bool = False,
    clock: Callable[[], float] | None = None,
    now: Callable[[], datetime] | None = None,
) -> CompiledPolicy:
    """Compile ``policy`` (plan → index → generate → exec); PolicyError lists every failure.

    ``every_rule`` evaluates all rules of every label (conflict counting); ``clock`` feeds
    cardinality windows; ``now`` gives CEL's ``now`` (default: wall time, UTC).
    """
    with paused_gc():  # see policy._load.paused_gc: builds only allocate
        return _compile_policy(policy, models=models, every_rule=every_rule, clock=clock, now=now)


def _compile_policy(
    policy: Policy,
    *,
    models: list[ModelLabeler] | None,
    every_rule: bool,
    clock: Callable[[], float] | None,
    now: Callable[[], datetime] | None,
) -> CompiledPolicy:
    plan = compile_plan(policy, models=models, clock=clock)
    compiled = CompiledPolicy(policy, plan, every_rule=every_rule, now=now or _wall_now)
    steps = index_plan(plan, every_rule=every_rule)
    counters = Counters(compiled.hits, compiled.errors, compiled.absent, compiled.run_absent, compiled.conflicts)
    source, ns = generate(plan, steps, every_rule=every_rule, slow=compiled.slow, counters=counters,
                          exact_rules=compiled.exact_rules, runs=compiled.runs, cel_error=compiled.cel_error,
                          rule_error=compiled.rule_error)
    compiled.run_absent.extend([0] * len(compiled.runs))
    ns["_clock_now"] = compiled.now
    compiled.source = source
    try:
        code = compile(source, f"<activelabel policy {policy.metadata.name or policy.source}>", "exec")
        exec(code, ns)  # noqa: S102 - our own generated source, built from a validated policy
    except SyntaxError as exc:  # a bug in code generation, never the user's
        raise PolicyError([PolicyIssue(f"internal error compiling policy: {exc}", file=policy.source)]) from exc
    compiled.fn = ns["label_event"]
    return compiled


__all__ = ["CompiledPolicy", "LabelFunction", "compile_policy"]
