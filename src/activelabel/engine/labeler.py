"""The Labeler: a compiled policy and the counters its hot path keeps."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from activelabel.cel import references as _cel_references
from activelabel.engine.compile import CompiledPolicy, LabelFunction, compile_policy
from activelabel.engine.decision import Decision
from activelabel.engine.plan import Plan
from activelabel.errors import InputError
from activelabel.policy import Policy, load_policy

if TYPE_CHECKING:
    from activelabel.engine.batch import ColumnarPlan
    from activelabel.models import ModelLabeler

_UNBUILT = object()
_perf_ns = time.perf_counter_ns  # one global lookup per call on the hot path, not two attribute loads

#: Batches at least this large take the columnar path (engine/batch.py) when the policy has one;
#: below it Polars' fixed cost per batch outweighs the gain.
COLUMNAR_MIN_BATCH = 1024


def _reads_labels(model: ModelLabeler) -> bool:
    """Whether a model's features read labels decided earlier (then it cannot be called per batch)."""
    for prog in model.feature_programs.values():
        ast = getattr(prog, "ast", None)  # feature programs are cel.Programs; a test double may lack one
        if ast is not None and any(ref.path[0] == "labels" for ref in _cel_references(ast)):
            return True
    return False


@dataclass
class LabelerStats:
    """Cumulative counters since the labeler was built (the seed's M1–M6 inputs)."""

    events: int
    rule_hits: dict[str, int]  # times each rule decided its label
    rule_errors: dict[str, int]  # times each rule (or `from`, or enricher key) failed to evaluate (every kind)
    label_set: dict[str, int]  # events in which each label was set
    conflicts: dict[str, int]  # events where matching rules disagreed (counted when every rule is evaluated)
    overflow: dict[str, int]  # values replaced by the overflow value (cardinality guard)
    distinct: dict[str, int]  # distinct values admitted (guarded and free-form labels)
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Of rule_errors: the times the rule read a field or label that was absent (an optional
    # field, an enrichment miss, a label no rule set). The rest are wrong types and the like.
    rule_absent: dict[str, int] = field(default_factory=dict)

    @property
    def rule_failures(self) -> dict[str, int]:
        """Per rule: the errors that were not an absent field or label (wrong types, bad values)."""
        return {k: v - self.rule_absent.get(k, 0) for k, v in self.rule_errors.items()}

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


@dataclass
class LinesResult:
    """What ``Labeler.label_lines`` gives back: output lines, and the events that could not be labeled."""

    lines: list[bytes]  # one per labeled event, in input order (failed ones left out)
    failed: list[tuple[int, str]]  # (position in the input, reason), in input order
    # With ``label_lines(..., codes=True)``, aligned with ``lines``: each event's labels and its
    # source codes (``Labeler.source_table()`` indexes). Codes dicts may be shared between events
    # with the same outcome: read-only.
    labels: list[dict[str, Any]] | None = None
    codes: list[dict[str, Any]] | None = None


class Labeler:
    """Labels events with a compiled policy.

        >>> labeler = Labeler.from_file("examples/edge/policy.yaml")   # doctest: +SKIP
        >>> labeler.label({"status": 503, "path": "/pay/1"}).labels   # doctest: +SKIP

    ``track_conflicts`` evaluates every rule of every label (not only up to the
    first match) so conflicts between rules are counted; it costs time in
    proportion to the rules after the winning one. ``clock`` feeds cardinality
    windows; ``now`` gives CEL's ``now`` on every path (``label``, ``label_batch``,
    ``label_exact``, ``Decision.explain``, ``run_tests``).
    """

    def __init__(
        self,
        policy: Policy,
        *,
        track_conflicts: bool = False,
        clock: Callable[[], float] | None = None,
        now: Callable[[], datetime] | None = None,
        models: list[ModelLabeler] | None = None,
    ) -> None:
        self.policy = policy
        self.track_conflicts = track_conflicts
        if models is None and policy.models:
            from activelabel.models import build_model_labelers

            models = list(build_model_labelers(policy))
        self._clock = clock
        self._now = now
        compiled = compile_policy(policy, models=models, every_rule=track_conflicts, clock=clock, now=now)
        self._compiled: CompiledPolicy = compiled
        self._plan: Plan = compiled.plan
        self._fn: LabelFunction = compiled.fn
        self._events = 0
        self.generated_source = compiled.source
        # Models whose features need no label can be called once per batch.
        self._batch_models = [m for lp in compiled.plan.labels for m in lp.models if not _reads_labels(m)]
        self._columnar: object = _UNBUILT  # ColumnarPlan | None once built
        # Which batch path is faster for this policy, measured on its own traffic (_batch_path).
        self._path_trial: list[str] = ["warm", "per_event", "columnar"]
        self._path_cost: dict[str, float] = {}
        self._path_choice: str | None = None

    @classmethod
    def from_file(cls, path: str | Path, **kwargs: Any) -> Labeler:
        """Load, validate and compile the policy at ``path``."""
        return cls(load_policy(path), **kwargs)

    @property
    def version(self) -> str:
        return self.policy.version

    @property
    def compiled(self) -> CompiledPolicy:
        """The compiled policy (``compile_policy``'s result) this labeler runs."""
        return self._compiled

    # ---- the hot path -------------------------------------------------

    def label(self, event: Mapping[str, Any]) -> Decision:
        """Label one event (a JSON object as a dict)."""
        if event.__class__ is not dict:
            if not isinstance(event, Mapping):
                raise InputError(f"an event must be a JSON object, not {type(event).__name__}", kind="not_object")
            event = dict(event)
        t0 = _perf_ns()
        labels, why = self._fn(event)
        elapsed = _perf_ns() - t0
        self._events += 1
        return Decision(labels, why, self._compiled, event, elapsed)

    def label_batch(self, events: Iterable[Mapping[str, Any]]) -> list[Decision]:
        """Label many events; identical to calling ``label`` on each.

        Each model is called once for the whole batch (``predict_batch``), not once
        per event, when its features read only the event, enrichers and ``now``.
        """
        batch = list(events)
        columnar, step = self._batch_path(len(batch))
        t0 = _perf_ns()
        if columnar is not None:
            from activelabel.engine.batch import decide_batch

            decisions = decide_batch(self._compiled, columnar, batch)
            self._events += len(decisions)
            self._path_measured(step, _perf_ns() - t0, len(batch))
            return decisions
        if not self._batch_models or len(batch) < 2:
            out = [self.label(e) for e in batch]
            self._path_measured(step, _perf_ns() - t0, len(batch))
            return out
        dicts = [e if e.__class__ is dict else dict(e) for e in batch]
        compiled = self._compiled
        compiled.batch_preds = compiled.predict_batch(self._batch_models, dicts)
        try:
            out = []
            for i, event in enumerate(dicts):
                compiled.batch_cursor = i
                out.append(self.label(event))
        finally:
            compiled.batch_preds = None
        self._path_measured(step, _perf_ns() - t0, len(batch))
        return out

    def _batch_path(self, n: int) -> tuple[ColumnarPlan | None, str | None]:
        """The columnar plan if a batch of ``n`` events should go column-wise, and the trial step it serves.

        Both paths give identical results; which is faster depends on the policy and its
        traffic (the columnar path wins on regexes, models and repeated values, the
        generated function on short policies). So the first eligible batches try each
        (one to warm Polars up, then one per path) and the faster is kept.
        """
        if n < COLUMNAR_MIN_BATCH or self._path_choice == "per_event":
            return None, None
        plan = self.columnar_plan()
        if plan is None or self._path_choice == "columnar":
            return plan, None
        step = self._path_trial[len(self._path_cost)]
        return (None if step == "per_event" else plan), step

    def _path_measured(self, step: str | None, ns: int, n: int) -> None:
        if step is None:
            return
        self._path_cost[step] = ns / max(n, 1)
        if len(self._path_cost) == len(self._path_trial):
            cost = self._path_cost
            self._path_choice = "columnar" if cost["columnar"] < cost["per_event"] else "per_event"

    def columnar_plan(self) -> ColumnarPlan | None:
        """The policy evaluated column-wise (engine/batch.py), or None when it has no columnar form.

        Built on first use: many labelers (policy tests, reload candidates) never see a batch,
        and importing Polars costs ~0.15 s.
        """
        if self._columnar is _UNBUILT:
            from activelabel.engine.batch import ColumnarPlan

            self._columnar = ColumnarPlan.build(self._compiled)
        return self._columnar  # type: ignore[return-value]  # set to a ColumnarPlan or None above

    def labels_only(self, event: dict[str, Any]) -> dict[str, Any]:
        """Just the labels of one event (a dict), skipping the Decision: for bulk paths."""
        self._events += 1
        return self._fn(event)[0]

    def label_codes(self, event: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(labels, codes)`` of one event, the generated function's own answer (counts the event).

        ``codes`` are source-table indexes (``source_table()``); for benchmarks and the batch path.
        """
        self._events += 1
        return self._fn(event)

    def label_lines(self, raws: list[bytes], events: list[dict[str, Any]], labels_field: str = "labels", *,
                    codes: bool = False) -> LinesResult:
        """Label decoded events and splice each one's labels into its original JSON line.

        ``raws[i]`` is the line ``events[i]`` was decoded from. Output is the line with a
        ``labels_field`` object added (replaced, if the event had one). Large batches go
        column-wise when the policy allows (engine/batch.py); an event whose labeling
        raises is reported in ``failed`` with the reason, never lost. The counters
        (``stats()``) include every labeled event. ``codes``: also give each labeled
        event's labels and source codes (what an audit log needs, without building Decisions).
        """
        columnar, step = self._batch_path(len(events))
        t0 = _perf_ns()
        if columnar is not None:
            from activelabel.engine.batch import add_counts

            try:
                result, lines = columnar.run_lines(raws, events, self._fn, labels_field)
            except Exception:  # noqa: BLE001 - a fault in the batch path must not lose the batch: label it per event
                pass
            else:
                add_counts(self._compiled, result)
                self._events += len(lines)
                self._path_measured(step, _perf_ns() - t0, len(events))
                if codes:
                    return LinesResult(lines, [], result.labels, result.why)
                return LinesResult(lines, [])
        out = self._label_lines_each(raws, events, labels_field, codes)
        self._path_measured(step, _perf_ns() - t0, len(events))
        return out

    def _label_lines_each(self, raws: list[bytes], events: list[dict[str, Any]], labels_field: str,
                          codes: bool = False) -> LinesResult:
        from activelabel.engine.record_loop import splice_each

        answers: list[tuple[dict[str, Any], dict[str, Any]]] | None = [] if codes else None
        lines, failed = splice_each(self._fn, raws, events, labels_field, pairs=True, answers=answers)
        self._events += len(lines)
        if answers is not None:
            return LinesResult(lines, failed, [a[0] for a in answers], [a[1] for a in answers])
        return LinesResult(lines, failed)

    # ---- the exact path -----------------------------------------------

    def label_exact(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """The labels by the reference semantics: every rule through the CEL evaluator.

        Slow; for tests and debugging. Counters and cardinality guards are not touched,
        so guarded labels show their value before overflow.
        """
        return self._compiled.label_exact(dict(event))

    # ---- counters and tests -------------------------------------------

    def source_table(self) -> list[tuple[str, str | None, float]]:
        """Every way a label can get its value, by source code: ``(source, label, static confidence)``.

        ``source`` is ``rule:<id>``, ``model:<name>@<version>``, ``from:<label>``,
        ``enricher:<name>`` (label None: an enricher key) or ``default``.
        """
        plan = self._plan
        return [(src, label, conf) for (src, conf), label in zip(plan.source_table, plan.source_label)]

    def hits_by_source(self) -> dict[str, dict[str, int]]:
        """Per label: how many events each source (``rule:<id>``, ``default``, ...) set it in."""
        plan = self._plan
        hits = self._compiled.hits
        out: dict[str, dict[str, int]] = {lp.spec.name: {} for lp in plan.labels}
        for idx, (src, _conf) in enumerate(plan.source_table):
            label = plan.source_label[idx]
            if label is not None and hits[idx]:
                out[label][src] = out[label].get(src, 0) + hits[idx]
        return out

    def stats(self) -> LabelerStats:
        """A snapshot of the counters (cheap; safe to call at every metrics scrape)."""
        plan = self._plan
        compiled = self._compiled
        hits = compiled.hits
        errors, absent = compiled.error_counts()
        table = plan.source_table
        rule_hits: dict[str, int] = {}
        rule_errors: dict[str, int] = {}
        rule_absent: dict[str, int] = {}
        label_set = {lp.spec.name: 0 for lp in plan.labels}
        for idx, (src, _conf) in enumerate(table):
            label = plan.source_label[idx]
            if label is not None:
                label_set[label] += hits[idx]
            if src.startswith("rule:"):
                rule_hits[src[5:]] = hits[idx]
                rule_errors[src[5:]] = errors[idx]
                rule_absent[src[5:]] = absent[idx]
            elif errors[idx]:
                rule_errors[src] = errors[idx]
                rule_absent[src] = absent[idx]
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
            conflicts={lp.spec.name: compiled.conflicts[lp.index] for lp in plan.labels},
            overflow=overflow,
            distinct=distinct,
            models=models,
            rule_absent=rule_absent,
        )

    def run_tests(self) -> list[PolicyTestResult]:
        """Run the policy's own `tests:` on a fresh labeler (this one's counters stay untouched).

        The fresh labeler gets this one's ``now`` and ``clock``, so a test of a rule reading
        ``now`` sees the same time as the labeler it checks.
        """
        fresh = Labeler(self.policy, models=[m for lp in self._plan.labels for m in lp.models] or None,
                        clock=self._clock, now=self._now)
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
