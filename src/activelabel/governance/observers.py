"""What a record loop's observer hook runs: a live shadow of a candidate policy, the audit log.

Both see a labeled chunk once, after the served decisions are made and before the
chunk is written (``RecordLoop(observer=...)``), so neither can change what is served:

    shadow = ShadowRun(serving, candidate, record_id_of=cli_record_id)
    audit = AuditObserver(log, door="cli", policy=serving.policy, record_id_of=cli_record_id)
    loop = RecordLoop(serving, observer=chain(shadow, audit))
    shadow.report()        # the same shape as `GET /v1/rollout/report`: `rollout report --from` reads it
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from activelabel.engine.record_loop import index_codes
from activelabel.errors import AuditError
from activelabel.governance.audit import AuditLevel, AuditLog, NumberedIds, Outcome
from activelabel.governance.rollout import ShadowComparison, compared_labels, rule_counts

#: A record loop chunk observer: (wheres, events, served decisions), aligned.
Observer = Callable[[list[Any], list[dict[str, Any]], list[Any]], None]
RecordIdOf = Callable[[Any, Mapping[str, Any] | None], str | None]
RecordIdsOf = Callable[[list[Any], list[dict[str, Any]] | None], Sequence[str | None]]

_OUTCOMES_LIMIT = 100_000  # distinct source-code combinations remembered before starting over

_SENSITIVE = ("pii", "secret")
_TIMED_ALL = 2000  # `label --shadow` times every event up to this many, then one in _TIMED_EVERY
_TIMED_EVERY = 32  # p99 from 2,000 + n/32 samples; the twin and the candidate cost ~0.06 evaluations per event


def cli_record_id(where: Any, event: Mapping[str, Any] | None) -> str:
    """``FILE:LINE`` of a record read by ``activelabel label`` (``-`` is stdin)."""
    (name, first_line), pos = where
    return f"{name}:{first_line + pos}"


def cli_record_ids(wheres: list[Any], events: list[dict[str, Any]] | None) -> Sequence[str]:
    """``cli_record_id`` of each record of a chunk: ``FILE:`` and line numbers when the chunk is one block."""
    if not wheres:
        return []
    origin = wheres[0][0]
    if all(where[0] is origin for where in wheres):
        name, first = origin
        low, high = first + wheres[0][1], first + wheres[-1][1]
        if high - low == len(wheres) - 1:  # positions only grow: no gap (nothing dead-lettered)
            return NumberedIds(f"{name}:", range(low, high + 1))  # a range travels to the writer in a few bytes
        return NumberedIds(f"{name}:", [first + pos for _, pos in wheres])
    return [cli_record_id(where, None) for where in wheres]


def chain(*observers: Observer | None) -> Observer | None:
    """One observer calling each of ``observers`` in turn (None when none is given)."""
    present = [o for o in observers if o is not None]
    if not present:
        return None
    if len(present) == 1:
        return present[0]

    def both(wheres: list[Any], events: list[dict[str, Any]], decisions: list[Any]) -> None:
        for observer in present:
            observer(wheres, events, decisions)

    return both


class ShadowRun:
    """A candidate policy evaluated on every served event, compared label by label (``label --shadow``).

    The labels compared are the served decisions'; the latencies are not theirs. The served
    decisions were made before the candidate ran (whoever runs second finds warm caches), maybe
    one at a time (``--explain``, a privacy guard) where the candidate labels a batch, and a
    batch's decisions share one average. So latency is timed apart, event by event, on a sample
    (every event up to ``_TIMED_ALL``, then one in ``_TIMED_EVERY``): a twin of the serving
    policy (compiled apart, its counters never reported) and the candidate each label the event,
    each going first on about half of them (a coin toss per event). Identical logic measures a
    p99 ratio near 1.
    """

    def __init__(self, serving: Any, candidate: Any, *, record_id_of: RecordIdOf | None = None,
                 run_id: str = "shadow") -> None:
        self.serving = serving
        self.candidate = candidate
        self.record_id_of = record_id_of
        self.run_id = run_id
        # The candidate's new labels too: they are compared from (unset).
        self.comparison = ShadowComparison(*compared_labels(serving.policy, candidate.policy))
        self._rules_at_start = (rule_counts(serving), rule_counts(candidate))
        self._candidate_failures = 0  # events the candidate could not label at all
        self._timing_rules = (0, 0)  # the candidate's rule counts from timing runs: not counted twice
        self._twin = _twin_of(serving)
        self._seen = 0  # events observed
        # Who goes first, per timed event: a coin toss (a strict alternation would hand the coldest
        # event of every chunk to the same version); seeded, so a rerun times the same way round.
        self._turns = random.Random(run_id)

    def __call__(self, wheres: list[Any], events: list[dict[str, Any]], decisions: list[Any]) -> None:
        timed = self._twin is not None
        if timed:
            before = rule_counts(self.candidate)
            self._time(events)  # before the candidate's batch: neither timed version has seen these events
            after, (errors, absent) = rule_counts(self.candidate), self._timing_rules
            self._timing_rules = (errors + after[0] - before[0], absent + after[1] - before[1])
        shadow = _label_each(self.candidate, events)
        comparison = self.comparison
        add = comparison.add
        record_id_of = self.record_id_of
        for where, event, served, candidate in zip(wheres, events, decisions, shadow, strict=True):
            if candidate is None:
                self._candidate_failures += 1
                continue
            add(served, candidate, record_id=record_id_of(where, event) if record_id_of else None, timed=not timed)

    def _time(self, events: list[dict[str, Any]]) -> None:
        """Time the serving twin and the candidate on the chunk's sampled events, taking turns at going first."""
        twin, candidate = self._twin, self.candidate
        latency, first = self.comparison.latency_ns, self.comparison.ran_first
        seen = self._seen
        self._seen += len(events)
        for i, event in enumerate(events):
            n = seen + i
            if n >= _TIMED_ALL and n % _TIMED_EVERY:
                continue
            candidate_first = self._turns.getrandbits(1) == 1
            try:
                if candidate_first:
                    c = candidate.label(event).elapsed_ns
                    s = twin.label(event).elapsed_ns
                else:
                    s = twin.label(event).elapsed_ns
                    c = candidate.label(event).elapsed_ns
            except Exception:  # noqa: BLE001 - an event a version raises on has no latency (counted elsewhere)
                continue
            latency["serving"].append(int(s))
            latency["candidate"].append(int(c))
            first["candidate" if candidate_first else "serving"] += 1

    def report(self) -> dict[str, Any]:
        """Per-label report plus a status block, as a service's ``/v1/rollout/report`` gives it."""
        serving0, (errors0, absent0) = self._rules_at_start
        timing_errors, timing_absent = self._timing_rules
        self.comparison.count_rules((rule_counts(self.serving), rule_counts(self.candidate)),
                                    (serving0, (errors0 + timing_errors, absent0 + timing_absent)),
                                    self._candidate_failures)
        report = self.comparison.report()
        report["status"] = {
            "id": self.run_id, "state": "shadow", "step": 0.0, "step_index": 0, "steps": [0.0],
            "serving_version": str(self.serving.version), "candidate_version": str(self.candidate.version),
            "events": {"serving": self.comparison.events, "candidate": 0}, "checks": [],
            "reason": "shadow only: the serving policy labeled every event", "history": [],
        }
        return report


class AuditObserver:
    """Writes each served decision of a chunk to an ``AuditLog`` at the level its policy picks.

    The record loop hands it either whole Decisions (``__call__``, when it builds them
    anyway: ``--explain``, a shadow beside it) or, on the bulk path, each record's labels
    and source codes (``observe_codes``): decisions with the same codes share one
    ``Outcome``, so a source is looked up once per distinct outcome, not once per record.
    ``record_ids_of(wheres, events)`` gives a chunk's ids at once (``cli_record_ids``).
    """

    def __init__(self, log: AuditLog, *, door: str, policy: Any, record_id_of: RecordIdOf | None = None,
                 arm_of: Callable[[Any], str] | None = None, record_ids_of: RecordIdsOf | None = None) -> None:
        self.log = log
        self.door = door
        self.policy_name = str(policy.metadata.name or "")
        self.record_id_of = record_id_of
        self.record_ids_of = record_ids_of
        self.arm_of = arm_of
        self._labeler: Any = None
        self._sources: list[str] = []
        self._confidences: list[float] = []
        self._outcomes: dict[tuple[Any, ...], Outcome] = {}

    @property
    def needs_values(self) -> bool:
        """Whether records need events and label values (a level above Metadata), not only source codes."""
        return self.log.highest_level > AuditLevel.METADATA

    def __call__(self, wheres: list[Any], events: list[dict[str, Any]], decisions: list[Any]) -> None:
        record_id_of = self.record_id_of
        arm_of = self.arm_of
        self.log.log_decisions(
            [(decision, record_id_of(where, event) if record_id_of else None, event,
              arm_of(where) if arm_of else "stable")
             for where, event, decision in zip(wheres, events, decisions, strict=True)],
            door=self.door, policy_name=self.policy_name)

    def observe_codes(self, labeler: Any, wheres: list[Any], events: list[dict[str, Any]] | None,
                      labels: list[dict[str, Any]] | None, codes: list[dict[str, Any]]) -> None:
        """Write a chunk labeled in bulk: ``codes[j]`` indexes ``labeler.source_table()`` per label set.

        The chunk is written as its distinct outcomes (``index_codes``).
        """
        index, distinct = index_codes(codes)
        self.observe_indexed_codes(labeler, wheres, index, distinct, events, labels)

    def observe_indexed_codes(self, labeler: Any, wheres: list[Any], index: list[int], distinct: list[dict[str, Any]],
                              events: list[dict[str, Any]] | None = None,
                              labels: list[dict[str, Any]] | None = None) -> None:
        """Write a chunk whose record ``j`` has the source codes ``distinct[index[j]]``.

        The form labeling workers send (engine/parallel.py): each distinct codes dict once.
        ``events`` and ``labels`` may be None when ``needs_values`` is False.
        """
        if labeler is not self._labeler:
            if getattr(labeler, "policy", None) is not None:
                self.log.register_policy(labeler.policy)  # its decisions are written with its own privacy
            table = labeler.source_table()
            self._labeler = labeler
            self._sources = [source for source, _label, _conf in table]
            self._confidences = [conf for _source, _label, conf in table]
            self._outcomes = {}
        ids: Sequence[str | None]
        if self.record_ids_of is not None:
            ids = self.record_ids_of(wheres, events)
        elif self.record_id_of is not None:
            record_id_of = self.record_id_of
            ids = [record_id_of(w, e) for w, e in zip(wheres, events or [{}] * len(wheres), strict=True)]
        else:
            ids = [None] * len(wheres)
        values = None
        if events is not None and labels is not None:
            chunk_events, chunk_labels, confidence = events, labels, self._confidence

            def values(j: int) -> tuple[dict[str, Any], dict[str, Any], dict[str, float]]:
                return chunk_events[j], chunk_labels[j], confidence(distinct[index[j]])

        arm_of = self.arm_of
        self.log.log_outcomes(ids, index, [self._outcome(c) for c in distinct], door=self.door,
                              policy_name=self.policy_name, version=str(labeler.version), values=values,
                              arm=[arm_of(w) for w in wheres] if arm_of is not None else "stable")

    def _outcome(self, codes: dict[str, Any]) -> Outcome:
        """The one Outcome of these source codes (made once per distinct codes for the run)."""
        key = tuple(codes.values())  # a source code names its label (index_codes)
        outcome = self._outcomes.get(key)
        if outcome is None:
            if len(self._outcomes) > _OUTCOMES_LIMIT:
                self._outcomes.clear()
            sources = self._sources
            outcome = self._outcomes[key] = Outcome(
                tuple(codes), {name: sources[code if code.__class__ is int else code[0]] for name, code in codes.items()})
        return outcome

    def _confidence(self, codes: dict[str, Any]) -> dict[str, float]:
        table = self._confidences
        return {name: code[1] if code.__class__ is tuple else table[code] for name, code in codes.items()}


def open_audit_log(directory: str, *, policy: Any, key_file: str | None = None, level: str | None = None,
                   level_policy_file: str | None = None, registry: Any = None, protector: Any = None) -> AuditLog:
    """An ``AuditLog`` for ``--audit DIR [--audit-key FILE] [--audit-level L | --audit-policy FILE]``.

    ``pii`` / ``secret`` labels are known from the policy: their values, and the event fields
    they are computed from, are never written in clear. They go through the privacy
    mechanism (`governance.output.audit_privacy`): a keyed pseudonym or a mask for pii,
    erased for secret. ``protector`` defaults to the configured one (``$ACTIVELABEL_PSEUDONYM_KEY``).
    """
    import yaml

    from activelabel.governance.audit import LevelPolicy, LevelRule

    if level is not None and level_policy_file is not None:
        raise AuditError("give --audit-level or --audit-policy, not both")
    level_policy = None
    if level is not None:
        level_policy = LevelPolicy((LevelRule(AuditLevel.parse(level)),))
    elif level_policy_file is not None:
        try:
            raw = yaml.safe_load(Path(level_policy_file).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise AuditError(f"cannot read the audit policy {level_policy_file}: {exc}") from exc
        if not isinstance(raw, Mapping):
            raise AuditError(f"{level_policy_file}: an audit policy is a mapping with `rules:`")
        level_policy = LevelPolicy.from_mapping(raw)
    from activelabel.governance.output import audit_privacy
    from activelabel.governance.protect import Protector

    base = protector if protector is not None else Protector.configured()
    log = AuditLog(directory, key_file=key_file, level_policy=level_policy, registry=registry,
                   privacy_for=lambda other: audit_privacy(other, base), **audit_privacy(policy, base))
    log.register_policy(policy)
    return log


def _label_each(labeler: Any, events: list[dict[str, Any]]) -> list[Any]:
    """Decisions for a chunk (None for an event the labeler raised on): one batch call when it has one."""
    batch = getattr(labeler, "label_batch", None)
    try:
        return list(batch(events)) if batch is not None else [labeler.label(e) for e in events]
    except Exception:  # noqa: BLE001 - a version that fails on an event fails alone, never the served output
        out = []
        for event in events:
            try:
                out.append(labeler.label(event))
            except Exception:  # noqa: BLE001 - counted as a rule error by the caller
                out.append(None)
        return out


def _twin_of(labeler: Any) -> Any:
    """A second compiled copy of a serving ``Labeler`` to time beside the candidate (None for another kind)."""
    from activelabel.engine import Labeler

    if type(labeler) is not Labeler:
        return None
    return Labeler(labeler.policy, track_conflicts=labeler.track_conflicts)
