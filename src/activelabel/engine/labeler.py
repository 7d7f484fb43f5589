"""The Labeler: a compiled policy and the counters its hot path keeps."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from activelabel.cel import references as _cel_references
from activelabel.cel.codegen import MISSING
from activelabel.engine import codegen
from activelabel.engine.decision import Decision
from activelabel.engine.exact import Candidate, LabelOutcome, decide_label, decide_rule, resolve
from activelabel.engine.plan import Plan, compile_plan
from activelabel.errors import InputError, PolicyError, PolicyIssue
from activelabel.governance.sensitivity import is_sensitive
from activelabel.policy import Policy, load_policy

if TYPE_CHECKING:
    from activelabel.engine.batch import ColumnarPlan

_UNBUILT = object()

#: Batches at least this large take the columnar path (engine/batch.py) when the policy has one;
#: below it Polars' fixed cost per batch outweighs the gain.
COLUMNAR_MIN_BATCH = 1024


def _references(prog: Any) -> list[Any]:
    ast = getattr(prog, "ast", None)
    return _cel_references(ast) if ast is not None else []


@dataclass
class LabelerStats:
    """Cumulative counters since the labeler was built (the seed's M1–M6 inputs)."""

    events: int
    rule_hits: dict[str, int]  # times each rule decided its label
    rule_errors: dict[str, int]  # times each rule (or `from`, or enricher key) failed to evaluate
    label_set: dict[str, int]  # events in which each label was set
    conflicts: dict[str, int]  # events where matching rules disagreed (counted when every rule is evaluated)
    overflow: dict[str, int]  # values replaced by the overflow value (cardinality guard)
    distinct: dict[str, int]  # distinct values admitted (guarded and free-form labels)
    models: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def coverage(self) -> dict[str, float]:
        """Per label: the share of events that got it."""
        n = self.events or 1
        return {k: v / n for k, v in self.label_set.items()}


@dataclass
class PolicyTestResult:
    """The outcome of one of the policy's own `tests:`."""

    name: str
    passed: bool
    expected: dict[str, Any]
    got: dict[str, Any]
    mismatches: dict[str, tuple[Any, Any]]  # label -> (expected, got)
    file: str = ""
    line: int = 0


class Labeler:
    """Labels events with a compiled policy.

        >>> labeler = Labeler.from_file("examples/edge/policy.yaml")   # doctest: +SKIP
        >>> labeler.label({"status": 503, "path": "/pay/1"}).labels   # doctest: +SKIP

    ``track_conflicts`` evaluates every rule of every label (not only up to the
    first match) so conflicts between rules are counted; it costs time in
    proportion to the rules after the winning one. ``clock`` feeds cardinality
    windows; ``now`` gives CEL's ``now``.
    """

    def __init__(
        self,
        policy: Policy,
        *,
        track_conflicts: bool = False,
        clock: Callable[[], float] | None = None,
        now: Callable[[], datetime] | None = None,
        models: list[Any] | None = None,
    ) -> None:
        self.policy = policy
        self.track_conflicts = track_conflicts
        if models is None and policy.models:
            from activelabel.models import build_model_labelers

            models = build_model_labelers(policy)
        self._plan: Plan = compile_plan(policy, models=models, clock=clock)
        self._compiled = self._plan  # Decision reads the source table from here
        plan = self._plan
        self._hits = [0] * len(plan.source_table)
        self._errors = [0] * len(plan.source_table)
        self._conflicts = [0] * len(plan.labels)
        self._events = 0
        resolvers = [self._make_resolver(i) for i in range(len(plan.labels))]
        self._runs: list[Any] = []  # (label plan, rules, bulk) per first-match step, filled by codegen
        source, ns = codegen.generate(plan, every_rule=track_conflicts, slow=self._slow, resolvers=resolvers,
                                      hits=self._hits, errors=self._errors, exact_rules=self._exact_rules, runs=self._runs)
        ns["_clock_now"] = now or (lambda: datetime.now(UTC))
        self.generated_source = source
        try:
            code = compile(source, f"<activelabel policy {policy.metadata.name or policy.source}>", "exec")
            exec(code, ns)  # noqa: S102 - our own generated source, built from a validated policy
        except SyntaxError as exc:  # a bug in code generation, never the user's
            raise PolicyError([PolicyIssue(f"internal error compiling policy: {exc}", file=policy.source)]) from exc
        self._fn: Callable[[dict[str, Any]], tuple[dict[str, Any], dict[str, Any]]] = ns["label_event"]
        # Models whose features need no label can be called once per batch.
        self._batch_models = [
            m for lp in plan.labels for m in lp.models
            if not any(ref.path[0] == "labels" for prog in m.feature_programs.values() for ref in _references(prog))
        ]
        self._batch_preds: dict[str, list[Any]] | None = None
        self._columnar: object = _UNBUILT  # ColumnarPlan | None once built
        self._batch_cursor = 0

    @classmethod
    def from_file(cls, path: str | Path, **kwargs: Any) -> Labeler:
        """Load, validate and compile the policy at ``path``."""
        return cls(load_policy(path), **kwargs)

    @property
    def version(self) -> str:
        return self.policy.version

    # ---- the hot path -------------------------------------------------

    def label(self, event: Mapping[str, Any]) -> Decision:
        """Label one event (a JSON object as a dict)."""
        if event.__class__ is not dict:
            if not isinstance(event, Mapping):
                raise InputError(f"an event must be a JSON object, not {type(event).__name__}", kind="not_object")
            event = dict(event)
        t0 = time.perf_counter_ns()
        labels, why = self._fn(event)  # type: ignore[arg-type]
        elapsed = time.perf_counter_ns() - t0
        self._events += 1
        return Decision(labels, why, self, event, elapsed)

    def label_batch(self, events: Iterable[Mapping[str, Any]]) -> list[Decision]:
        """Label many events; identical to calling ``label`` on each.

        Each model is called once for the whole batch (``predict_batch``), not once
        per event, when its features read only the event, enrichers and ``now``.
        """
        batch = list(events)
        if len(batch) >= COLUMNAR_MIN_BATCH:
            columnar = self.columnar_plan()
            if columnar is not None:
                from activelabel.engine.batch import decide_batch

                return decide_batch(self, columnar, batch)
        if not self._batch_models or len(batch) < 2:
            return [self.label(e) for e in batch]
        dicts = [e if e.__class__ is dict else dict(e) for e in batch]
        self._batch_preds = self._predict_batch(dicts)
        try:
            out = []
            for i, event in enumerate(dicts):
                self._batch_cursor = i
                out.append(self.label(event))
            return out
        finally:
            self._batch_preds = None

    def columnar_plan(self) -> ColumnarPlan | None:
        """The policy evaluated column-wise (engine/batch.py), or None when it uses what that cannot express.

        Built on first use: many labelers (policy tests, reload candidates) never see a batch.
        """
        if self._columnar is _UNBUILT:
            plan = self._plan
            # What ColumnarPlan.build refuses anyway, checked without importing Polars (~0.15 s).
            if self.track_conflicts or plan.enrichers or plan.uses_now or any(
                lp.models or lp.from_prog is not None or lp.guard is not None or lp.spec.resolve != "first_match"
                for lp in plan.labels
            ):
                self._columnar = None
            else:
                from activelabel.engine.batch import ColumnarPlan

                self._columnar = ColumnarPlan.build(plan)
        return self._columnar  # type: ignore[return-value]

    def _base_bindings(self, event: dict[str, Any]) -> dict[str, Any]:
        """What an expression can see before any label is decided: event, enrichers, now."""
        plan = self._plan
        bindings: dict[str, Any] = {"event": event, "labels": {}}
        if plan.uses_now:
            bindings["now"] = datetime.now(UTC)
        for ep in plan.enrichers:
            try:
                key = ep.key_prog.evaluate(bindings)
            except Exception:
                key = None
            bindings[ep.spec.name] = ep.runtime.lookup(key)
        return bindings

    def _predict_batch(self, events: list[dict[str, Any]]) -> dict[str, list[Any]]:
        from activelabel.engine.exact import _features

        bindings = [self._base_bindings(e) for e in events]
        preds: dict[str, list[Any]] = {}
        for model in self._batch_models:
            preds[model.name] = model.predict_batch([_features(model, b) for b in bindings])
        return preds

    def labels_only(self, event: dict[str, Any]) -> dict[str, Any]:
        """Just the labels of one event (a dict), skipping the Decision: for bulk paths."""
        self._events += 1
        return self._fn(event)[0]

    # ---- the exact path -----------------------------------------------

    def label_exact(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """The labels by the reference semantics: every rule through the CEL evaluator.

        Slow; for tests and debugging. Counters and cardinality guards are not touched,
        so guarded labels show their value before overflow.
        """
        plan = self._plan
        bindings = self._base_bindings(dict(event))
        for lp in plan.labels:
            outcome = decide_label(plan, lp, bindings, every_rule=False)
            if outcome.value is not MISSING:
                bindings["labels"][lp.spec.name] = outcome.value
        return bindings["labels"]

    def _bindings_view(self, bindings: dict[str, Any]) -> dict[str, Any]:
        return bindings

    def _slow(self, index: int, bindings: dict[str, Any]) -> Any:
        plan = self._plan
        if index < 0:  # an enricher key the fast code could not compute
            ep = plan.enrichers[-1 - index]
            try:
                return ep.key_prog.evaluate(bindings)
            except Exception:
                self._errors[ep.source_idx] += 1
                return None
        lp = plan.labels[index]
        preds = self._batch_preds
        outcome = decide_label(plan, lp, bindings, every_rule=self.track_conflicts,
                               predictions=None if preds is None else (preds, self._batch_cursor))
        for idx, _msg in outcome.errors:
            self._errors[idx] += 1
        if outcome.conflict:
            self._conflicts[index] += 1
        return outcome.value, outcome.code

    def _exact_rules(self, run_id: int, bindings: dict[str, Any]) -> tuple[Any, int] | None:
        """Re-decide one first-match step (a rule, or a folded run) exactly; count its errors."""
        lp, rules, bulk = self._runs[run_id]
        errors = self._errors
        for n, rp in enumerate(rules):
            got = decide_rule(self._plan, lp, rp, bindings)
            if got.__class__ is Candidate:
                return got.value, got.source_idx  # type: ignore[union-attr]
            if got is not None:
                errors[rp.source_idx] += 1
                if bulk and n == 0:
                    # The run tests one field the same way: the field failed, so every rule fails.
                    for other in rules[1:]:
                        errors[other.source_idx] += 1
                    return None
        return None

    def _make_resolver(self, index: int) -> Callable[[list[tuple[Any, int]]], tuple[Any, Any]]:
        lp = self._plan.labels[index]
        mode = lp.spec.resolve
        table = self._plan.source_table
        default = (lp.spec.default, lp.default_idx) if lp.default_idx >= 0 else (MISSING, -1)
        conflicts = self._conflicts

        def resolve_label(cands: list[tuple[Any, int]]) -> tuple[Any, Any]:
            if not cands:
                return default
            if len(cands) > 1 and len({(v.__class__, v) for v, _ in cands}) > 1:
                conflicts[index] += 1
            if mode == "first_match":
                return cands[0]
            return resolve(mode, [Candidate(v, table[i][1], i) for v, i in cands])

        return resolve_label

    def _explain(self, decision: Decision) -> dict[str, Any]:
        plan = self._plan
        bindings = self._base_bindings(decision._event)
        table = plan.source_table
        confidences = decision.confidences
        sources = decision.sources
        out: dict[str, Any] = {}
        for lp in plan.labels:
            name = lp.spec.name
            outcome: LabelOutcome = decide_label(plan, lp, bindings, every_rule=True)
            winner = (decision._why.get(name))
            win_idx = winner[0] if isinstance(winner, tuple) else winner
            matched = [table[c.source_idx][0] for c in outcome.candidates]
            entry: dict[str, Any] = {
                "value": decision.labels.get(name),
                "set": name in decision.labels,
                "confidence": confidences.get(name),
                "source": sources.get(name),
                "matched": [m for m in matched if m.startswith(("rule:", "model:"))],
                "lost": [table[c.source_idx][0] for c in outcome.candidates if c.source_idx != win_idx and table[c.source_idx][0].startswith(("rule:", "model:"))],
                "candidates": [
                    {"source": table[c.source_idx][0], "value": c.value, "confidence": c.confidence}
                    for c in outcome.candidates
                ],
                "errors": [{"source": table[i][0], "error": msg if not is_sensitive(lp.spec.sensitivity) else "evaluation failed"} for i, msg in outcome.errors],
            }
            if lp.guard is not None and not lp.tracks_distinct and name in decision.labels and decision.labels[name] == lp.spec.overflow and outcome.value != lp.spec.overflow:
                entry["overflowed"] = True
            out[name] = entry
            if name in decision.labels:
                bindings["labels"][name] = decision.labels[name]
        return {
            "policy": plan.policy.metadata.name,
            "policy_version": self.version,
            "elapsed_us": round(decision.elapsed_ns / 1000, 3),
            "labels": out,
        }

    # ---- counters and tests -------------------------------------------

    def stats(self) -> LabelerStats:
        """A snapshot of the counters (cheap; safe to call at every metrics scrape)."""
        plan = self._plan
        table = plan.source_table
        rule_hits: dict[str, int] = {}
        rule_errors: dict[str, int] = {}
        label_set = {lp.spec.name: 0 for lp in plan.labels}
        for idx, (src, _conf) in enumerate(table):
            label = plan.source_label[idx]
            if label is not None:
                label_set[label] += self._hits[idx]
            if src.startswith("rule:"):
                rule_hits[src[5:]] = self._hits[idx]
                rule_errors[src[5:]] = self._errors[idx]
            elif self._errors[idx]:
                rule_errors[src] = self._errors[idx]
        overflow = {}
        distinct = {}
        models: dict[str, dict[str, Any]] = {}
        for lp in plan.labels:
            if lp.guard is not None:
                distinct[lp.spec.name] = lp.guard.distinct
                if not lp.tracks_distinct:
                    overflow[lp.spec.name] = lp.guard.overflowed
            for m in lp.models:
                models[m.name] = m.state()
        return LabelerStats(
            events=self._events,
            rule_hits=rule_hits,
            rule_errors=rule_errors,
            label_set=label_set,
            conflicts={lp.spec.name: self._conflicts[lp.index] for lp in plan.labels},
            overflow=overflow,
            distinct=distinct,
            models=models,
        )

    def run_tests(self) -> list[PolicyTestResult]:
        """Run the policy's own `tests:` on a fresh labeler (this one's counters stay untouched)."""
        fresh = Labeler(self.policy, models=[lp_m for lp in self._plan.labels for lp_m in lp.models] or None)
        results = []
        for test in self.policy.tests:
            got = fresh.label(dict(test.event)).labels
            mismatches = {}
            for label, want in test.expect.items():
                have = got.get(label)
                if want is None:
                    if label in got:
                        mismatches[label] = (None, have)
                elif label not in got or have != want or (have.__class__ is bool) != (want.__class__ is bool):
                    mismatches[label] = (want, have if label in got else None)
            loc = test.loc
            results.append(PolicyTestResult(test.name, not mismatches, dict(test.expect), got, mismatches, loc.file, loc.line))
        return results
