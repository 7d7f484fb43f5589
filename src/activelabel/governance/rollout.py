"""Safe change of labeling logic: a live shadow and a sticky canary with automatic verdicts.

A rollout holds two compiled policies, the *serving* one and the *candidate*. Every
event (or a deterministic sample by record id) is labeled by both; the served output
comes from the arm the event's key falls in, and the pair is compared label by label,
so the analysis sees exactly what changed on the *same* event — something Flagger and
Argo Rollouts, which compare two populations through Prometheus, cannot do.

Semantics follow Argo Rollouts' analysis: ``failure_limit`` (default 0) failed
measurements roll back, ``consecutive_success_limit`` passing measurements advance a
step, and too little data is **Inconclusive → pause**, never pass or fail
(flagger#32). ``dry_run`` checks are measured and reported, not gating.

    spec = RolloutSpec.from_mapping(yaml.safe_load(open("spec.yaml")))
    rollout = Rollout("r-1", spec, serving=v1_labeler, candidate=v2_labeler)
    decision, arm = rollout.label(event, record_id="r42")   # served decision and its arm
    rollout.tick()                                          # evaluate when an interval has passed
    rollout.status()                                        # JSON-ready state, checks, reason
"""

from __future__ import annotations

import hashlib
import itertools
import math
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from activelabel.errors import RolloutConflictError, RolloutError

STATES = ("progressing", "paused", "promoted", "rolled_back", "aborted")
METRICS = ("label_change_rate", "rule_error_rate_increase", "dlq_rate_increase", "latency_p99_ratio", "accuracy_delta")
_EXAMPLES_PER_TRANSITION = 3
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_SENSITIVE = frozenset({"pii", "secret"})


def parse_duration(text: Any) -> float:
    """``30s``, ``10m``, ``1h``, ``250ms`` or a number of seconds."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    match = _DURATION.match(str(text))
    if not match:
        raise RolloutError(f"interval {_r(text)}: write a duration such as 30s, 10m or 1h")
    return float(match.group(1)) * _UNIT[match.group(2)]


@dataclass(frozen=True)
class Check:
    """One analysis check: a metric, optionally per label, with a ``max`` or ``min`` threshold."""

    metric: str
    label: str | None = None
    max: float | None = None
    min: float | None = None
    min_discordant: int = 0

    @property
    def name(self) -> str:
        return f"{self.metric}[{self.label}]" if self.label else self.metric


@dataclass(frozen=True)
class RolloutSpec:
    """The rollout spec (YAML). ``steps`` are percentages served by the candidate; 0 = shadow only."""

    key: str = "record_id"
    steps: tuple[float, ...] = (0, 5, 25, 50, 100)
    interval_s: float = 30.0
    min_events: int = 1000
    analysis: tuple[Check, ...] = ()
    failure_limit: int = 0
    consecutive_success_limit: int = 3
    dry_run: frozenset[str] = frozenset()
    shadow_fraction: float = 1.0

    @classmethod
    def from_mapping(cls, data: Any, *, labels: Collection[str] | None = None) -> RolloutSpec:
        """Validate a spec completely, reporting every problem at once (each led by its field path).

        ``labels`` (the serving and the candidate policy's) also checks each check's ``label``;
        without them that one check is left to ``label_problems``.
        """
        if not isinstance(data, Mapping):
            what = "a list" if isinstance(data, list) else type(data).__name__
            problem = f"a rollout spec is a mapping (key, steps, interval, analysis, ...), not {what}"
            raise RolloutError(f"rollout spec refused:\n  {problem}", problems=[problem])
        p = _Problems()
        for extra in sorted(set(map(str, data)) - _SPEC_KEYS):
            p.add(extra, f"unknown key (known: {', '.join(sorted(_SPEC_KEYS))})")
        key = _spec_key(data.get("key", cls.key), p)
        steps = _spec_steps(data.get("steps", list(cls.steps)), p)
        interval = cls.interval_s
        try:
            interval = parse_duration(data.get("interval", cls.interval_s))
        except RolloutError as exc:
            p.add("interval", str(exc).removeprefix("interval "))
        else:
            if not (math.isfinite(interval) and interval > 0):
                p.add("interval", f"{_r(data.get('interval'))}: a duration above 0, such as 30s, 10m or 1h")
        min_events = _spec_int(data, "min_events", cls.min_events, 1, p)
        failure_limit = _spec_int(data, "failure_limit", cls.failure_limit, 0, p)
        successes = _spec_int(data, "consecutive_success_limit", cls.consecutive_success_limit, 1, p)
        fraction = _spec_number(data.get("shadow_fraction", cls.shadow_fraction), "shadow_fraction", p)
        if fraction is not None and not 0 < fraction <= 1:
            p.add("shadow_fraction", f"{fraction:g}: between 0 (exclusive) and 1")
        checks = _spec_checks(data.get("analysis"), p)
        dry_run = _spec_dry_run(data.get("dry_run"), checks, p)
        spec = cls(key=key, steps=steps, interval_s=interval, min_events=min_events, analysis=tuple(checks),
                   failure_limit=failure_limit, consecutive_success_limit=successes, dry_run=dry_run,
                   shadow_fraction=fraction or cls.shadow_fraction)
        if labels is not None:
            p.items.extend(spec.label_problems(labels))
        p.raise_if_any()
        return spec

    def label_problems(self, labels: Collection[str]) -> list[str]:
        """A check on a label neither policy has would pause Inconclusive forever: name it before the start."""
        known = sorted(labels)
        return [f"analysis[{i}].label: {_r(c.label)} is not a label of the serving or the candidate policy "
                f"(labels: {', '.join(known) or 'none'})"
                for i, c in enumerate(self.analysis) if c.label is not None and c.label not in labels]

    def refuse_unknown_labels(self, labels: Collection[str]) -> None:
        """``RolloutError`` listing every check on a label the two policies do not have."""
        p = _Problems()
        p.items.extend(self.label_problems(labels))
        p.raise_if_any()

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key, "steps": list(self.steps), "interval": self.interval_s, "min_events": self.min_events,
            # A threshold of 0 is a threshold: only an absent one (None) and a min_discordant of 0 are left out.
            "analysis": [{k: v for k, v in c.__dict__.items()
                          if v is not None and (k != "min_discordant" or v != 0)} for c in self.analysis],
            "failure_limit": self.failure_limit, "consecutive_success_limit": self.consecutive_success_limit,
            "dry_run": sorted(self.dry_run), "shadow_fraction": self.shadow_fraction,
        }


_SPEC_KEYS = frozenset({"key", "steps", "interval", "min_events", "analysis", "failure_limit",
                        "consecutive_success_limit", "dry_run", "shadow_fraction"})
_CHECK_KEYS = frozenset({"metric", "label", "max", "min", "min_discordant"})


class _Problems:
    """A spec's problems, collected so that all are reported at once, each as ``path: what is wrong``."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.items.append(f"{path}: {message}")

    def raise_if_any(self) -> None:
        if self.items:
            raise RolloutError("rollout spec refused:\n  " + "\n  ".join(self.items), problems=self.items)


def _r(value: Any) -> str:
    """A value as the spec wrote it, cut short: a problem line stays one readable line."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _spec_number(value: Any, path: str, p: _Problems) -> float | None:
    if not _is_number(value):
        p.add(path, f"{_r(value)} is not a number")
        return None
    return float(value)


def _spec_int(data: Mapping[str, Any], name: str, default: int, minimum: int, p: _Problems) -> int:
    value = data.get(name, default)
    if not _is_number(value) or value != int(value):
        p.add(name, f"{_r(value)} is not a whole number (give {minimum} or more)")
        return default
    if value < minimum:
        p.add(name, f"{_r(value)}: give {minimum} or more")
        return default
    return int(value)


def _spec_key(value: Any, p: _Problems) -> str:
    """``record_id`` or CEL that compiles and reads the event (a constant would put every entity on one arm)."""
    if not isinstance(value, str) or not value.strip():
        p.add("key", f"{_r(value)}: write record_id or a CEL expression over the event, e.g. event.tenant_id")
        return RolloutSpec.key
    if value in ("record_id", "id"):
        return value
    from activelabel import cel
    from activelabel.errors import CELError

    try:
        roots = {ref.path[0] for ref in cel.references(cel.parse(value))}
        cel.compile(value)
    except CELError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        p.add("key", f"{_r(value)} is not valid CEL: {first}")
        return RolloutSpec.key
    if "event" not in roots:
        p.add("key", f"{_r(value)} does not read the event: every entity would land on the same arm; "
                     "write e.g. event.tenant_id")
    elif roots - {"event"}:
        p.add("key", f"{_r(value)} reads {', '.join(sorted(roots - {'event'}))}: a key can read only `event`")
    return value


def _spec_steps(value: Any, p: _Problems) -> tuple[float, ...]:
    hint = "a strictly rising list of percentages from 0 to 100 that ends at 100, e.g. [0, 5, 25, 50, 100]"
    if not isinstance(value, (list, tuple)) or not value or not all(_is_number(s) for s in value):
        p.add("steps", f"{_r(value)}: {hint}")
        return RolloutSpec.steps
    steps = tuple(float(s) for s in value)
    if any(not 0 <= s <= 100 for s in steps) or any(b <= a for a, b in itertools.pairwise(steps)) or steps[-1] != 100:
        p.add("steps", f"{_r(list(value))}: {hint}")
    return steps


def _spec_checks(value: Any, p: _Problems) -> list[Check]:
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        p.add("analysis", f"{_r(value)}: a list of checks, e.g. [{{metric: label_change_rate, label: priority, "
                          "max: 0.02}]")
        return []
    checks: list[Check] = []
    for i, raw in enumerate(value):
        path = f"analysis[{i}]"
        if not isinstance(raw, Mapping):
            p.add(path, f"{_r(raw)}: a check is a mapping such as {{metric: latency_p99_ratio, max: 1.5}}")
            continue
        for extra in sorted(set(map(str, raw)) - _CHECK_KEYS):
            p.add(f"{path}.{extra}", f"unknown key (known: {', '.join(sorted(_CHECK_KEYS))})")
        metric = raw.get("metric")
        if metric not in METRICS:
            p.add(f"{path}.metric", f"{_r(metric)}: one of {', '.join(METRICS)}")
            continue
        bounds: dict[str, float | None] = {}
        for bound in ("max", "min"):
            bounds[bound] = None if raw.get(bound) is None else _spec_number(raw[bound], f"{path}.{bound}", p)
        if raw.get("max") is None and raw.get("min") is None:
            p.add(path, f"{metric}: give a `max` or a `min` threshold")
        label = raw.get("label")
        if metric == "label_change_rate" and (not isinstance(label, str) or not label):
            p.add(f"{path}.label", "label_change_rate needs the name of a label")
            label = None
        elif metric != "label_change_rate" and label is not None:
            p.add(f"{path}.label", f"{metric} is measured over all labels; only label_change_rate takes `label`")
            label = None
        discordant = _spec_int(raw, "min_discordant", 0, 0, _Prefixed(p, path))
        checks.append(Check(str(metric), label, bounds["max"], bounds["min"], discordant))
    return checks


class _Prefixed(_Problems):
    """The problems of one check: paths under ``analysis[i]``."""

    def __init__(self, parent: _Problems, prefix: str) -> None:
        super().__init__()
        self.parent, self.prefix = parent, prefix

    def add(self, path: str, message: str) -> None:
        self.parent.add(f"{self.prefix}.{path}", message)


def _spec_dry_run(value: Any, checks: Sequence[Check], p: _Problems) -> frozenset[str]:
    if value is None:
        return frozenset()
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        p.add("dry_run", f"{_r(value)}: a list of metric names from analysis, e.g. [accuracy_delta]")
        return frozenset()
    names = frozenset(value)
    unknown = names - {c.metric for c in checks} - {c.name for c in checks}
    if unknown:
        p.add("dry_run", f"{sorted(unknown)} are not metrics in analysis "
                         f"({', '.join(sorted({c.metric for c in checks})) or 'none'})")
    return names


def bucket_of(rollout_id: str, key: Any) -> float:
    """A stable position in [0, 100) for a key: the same entity always lands on the same arm."""
    digest = hashlib.sha256(f"{rollout_id}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100.0


# --- paired comparison -----------------------------------------------------------------------


@dataclass
class LabelDiff:
    """Per label: events compared and changed, old → new transitions, which rule now wins."""

    compared: int = 0
    changed: int = 0
    transitions: Counter[tuple[str, str]] = field(default_factory=Counter)
    because: Counter[str] = field(default_factory=Counter)
    examples: dict[tuple[str, str], list[str]] = field(default_factory=dict)


_UNSET = "(unset)"


def _shown(value: Any) -> str:
    if value is None:
        return _UNSET
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def compared_labels(serving: Any, candidate: Any) -> tuple[tuple[str, ...], dict[str, str]]:
    """The labels a comparison of two policies counts, and the sensitivity each is shown with.

    The serving policy's labels, then those only the candidate has (they change from
    ``(unset)``): a label the candidate adds is what a reviewer most needs to see. A label
    either policy calls pii or secret is sensitive (counts only).
    """
    names = (*serving.labels, *(n for n in candidate.labels if n not in serving.labels))
    sensitivity = {}
    for name in names:
        kinds = [str(p.labels[name].sensitivity) for p in (serving, candidate) if name in p.labels]
        sensitivity[name] = next((k for k in kinds if k in _SENSITIVE), kinds[0])
    return names, sensitivity


def rule_counts(labeler: Any) -> tuple[int, int]:
    """``(rule errors, absent reads)`` since ``labeler`` was built.

    A rule that read a field or label with no value (an optional field, a lookup miss) did
    not match, as meant: an absent read. A rule error is the rest (a wrong type, a value
    that does not fit its label). The `label` summary tells the two apart; so do reports.
    """
    stats = labeler.stats()
    absent = sum(stats.rule_absent.values())
    return sum(stats.rule_errors.values()) - absent, absent


class ShadowComparison:
    """Counts of what the candidate changes, event by event, with latencies and rule errors per version."""

    def __init__(self, label_names: Sequence[str], sensitivity: Mapping[str, str]) -> None:
        self.labels = {name: LabelDiff() for name in label_names}
        self.sensitive = frozenset(n for n in label_names if sensitivity.get(n, "internal") in _SENSITIVE)
        self.events = 0
        self.events_changed = 0
        self.latency_ns: dict[str, list[int]] = {"serving": [], "candidate": []}
        # Which version labeled first, per event or batch: the second one finds warm caches, so a
        # fair latency comparison runs each first about half the time (counted to show it did).
        self.ran_first: dict[str, int] = {"serving": 0, "candidate": 0}
        self.rule_errors: dict[str, int] = {"serving": 0, "candidate": 0}  # wrong types and the like
        self.rule_absent: dict[str, int] = {"serving": 0, "candidate": 0}  # reads of a field with no value
        self.truth_pairs = {"both_right": 0, "both_wrong": 0, "serving_only": 0, "candidate_only": 0}

    def add(self, serving: Any, candidate: Any, *, record_id: str | None = None,
            timed: bool = True) -> dict[str, tuple[Any, Any]]:
        """Compare one event's two decisions; returns the changed labels as ``{label: (old, new)}``.

        ``timed=False``: the decisions' latencies are not comparable (the caller times the versions apart).
        """
        self.events += 1
        if timed:
            self.latency_ns["serving"].append(int(serving.elapsed_ns))
            self.latency_ns["candidate"].append(int(candidate.elapsed_ns))
        old_labels, new_labels = serving.labels, candidate.labels
        changed: dict[str, tuple[Any, Any]] = {}
        new_sources: dict[str, str] | None = None
        for name, diff in self.labels.items():
            diff.compared += 1
            old, new = old_labels.get(name), new_labels.get(name)
            if old == new and type(old) is type(new):
                continue
            diff.changed += 1
            changed[name] = (old, new)
            if new_sources is None:
                new_sources = candidate.sources
            diff.because[new_sources.get(name, "unset")] += 1
            pair = ("*", "*") if name in self.sensitive else (_shown(old), _shown(new))
            diff.transitions[pair] += 1
            if record_id is not None:
                examples = diff.examples.setdefault(pair, [])
                if len(examples) < _EXAMPLES_PER_TRANSITION:
                    examples.append(record_id)
        if changed:
            self.events_changed += 1
        return changed

    def count_rules(self, now: tuple[tuple[int, int], tuple[int, int]], start: tuple[tuple[int, int], tuple[int, int]],
                    candidate_failures: int = 0) -> None:
        """Set the rule errors and absent reads per version: ``rule_counts`` of (serving, candidate) now minus at the start.

        ``candidate_failures``: events the candidate could not label at all, counted as its rule errors.
        """
        for arm, (errors, absent), (errors0, absent0) in zip(("serving", "candidate"), now, start, strict=True):
            self.rule_errors[arm] = errors - errors0
            self.rule_absent[arm] = absent - absent0
        self.rule_errors["candidate"] += candidate_failures

    def add_truth(self, serving_right: bool, candidate_right: bool) -> None:
        """One event with ground truth: which versions got it right (for McNemar's test)."""
        key = ("both_right" if candidate_right else "serving_only") if serving_right else (
            "candidate_only" if candidate_right else "both_wrong")
        self.truth_pairs[key] += 1

    def change_rate(self, label: str) -> float | None:
        diff = self.labels.get(label)
        if diff is None or diff.compared == 0:
            return None
        return diff.changed / diff.compared

    def p99_ms(self, arm: str) -> float | None:
        values = self.latency_ns[arm]
        if not values:
            return None
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)] / 1e6

    def report(self) -> dict[str, Any]:
        """JSON-ready per-label report; sensitive labels carry counts only, never values."""
        labels: dict[str, Any] = {}
        for name, diff in self.labels.items():
            labels[name] = {
                "compared": diff.compared,
                "changed": diff.changed,
                "change_rate": diff.changed / diff.compared if diff.compared else 0.0,
                "sensitive": name in self.sensitive,
                "transitions": [
                    {"from": old, "to": new, "count": n, "examples": diff.examples.get((old, new), [])}
                    for (old, new), n in diff.transitions.most_common()
                ],
                "changed_because": dict(diff.because.most_common()),
            }
        return {
            "events": self.events,
            "events_changed": self.events_changed,
            "labels": labels,
            "latency_p99_ms": {arm: self.p99_ms(arm) for arm in self.latency_ns},
            "latency_ran_first": dict(self.ran_first),
            "rule_errors": dict(self.rule_errors),
            "rule_absent": dict(self.rule_absent),
            "truth_pairs": dict(self.truth_pairs),
        }


def mcnemar_p(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value on the discordant pairs (binomial, p = 1/2)."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return float(min(1.0, 2 * tail))


# --- the rollout state machine ---------------------------------------------------------------


@dataclass
class CheckResult:
    metric: str
    value: float | None
    threshold: str
    verdict: str  # Successful | Failed | Inconclusive
    dry_run: bool = False

    def as_json(self) -> dict[str, Any]:
        return {"metric": self.metric, "value": self.value, "threshold": self.threshold, "verdict": self.verdict,
                "dry_run": self.dry_run}


@dataclass
class _ArmCounters:
    events: int = 0
    dlq: int = 0


class Rollout:
    """One rollout of ``candidate`` against ``serving``; thread-safe; ``tick()`` advances it."""

    def __init__(
        self,
        rollout_id: str,
        spec: RolloutSpec,
        *,
        serving: Any,
        candidate: Any,
        key_fn: Callable[[Mapping[str, Any], str | None], Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        state_file: str | Path | None = None,
        on_change: Callable[[Rollout, str], None] | None = None,
        step_index: int = 0,
        state: str = "progressing",
    ) -> None:
        self.id = rollout_id
        self.spec = spec
        self.serving = serving
        self.candidate = candidate
        self._key_fn = key_fn or _key_function(spec.key)
        self._clock = clock
        self._wall = wall_clock
        self.state_file = Path(state_file) if state_file else None
        self._on_change = on_change
        self._lock = threading.Lock()
        self.state = state
        self.step_index = step_index
        self.reason = ""
        self.checks: list[CheckResult] = []
        self.history: list[dict[str, Any]] = []
        self._label_names, self._sensitivity = compared_labels(serving.policy, candidate.policy)
        self.total = ShadowComparison(self._label_names, self._sensitivity)
        self._turns = random.Random(rollout_id)  # who labels first, per event (seeded: a rerun repeats it)
        self._rules_at_start = (rule_counts(serving), rule_counts(candidate))
        self._new_step()
        self._save()

    # -- per event ------------------------------------------------------------------------

    @property
    def step(self) -> float:
        return self.spec.steps[self.step_index]

    def arm_for(self, event: Mapping[str, Any], record_id: str | None) -> str:
        if self.state in ("promoted",):
            return "candidate"
        if self.state in ("rolled_back", "aborted"):
            return "serving"
        return "candidate" if bucket_of(self.id, self._key_fn(event, record_id)) < self.step else "serving"

    def label(self, event: Mapping[str, Any], *, record_id: str | None = None) -> tuple[Any, str]:
        """The served decision and its arm; the other version runs beside it when the event is sampled."""
        arm = self.arm_for(event, record_id)
        if self.state not in ("progressing", "paused"):
            return (self.candidate if arm == "candidate" else self.serving).label(event), arm
        sampled = self.spec.shadow_fraction >= 1.0 or (
            bucket_of(self.id + "/shadow", record_id) < self.spec.shadow_fraction * 100)
        both = sampled or arm == "candidate"
        # Whichever labels second finds the event (and the engine's caches) warm: who goes first is a
        # coin toss per event, so latency_p99_ratio compares like with like. Not a strict alternation:
        # the first event of each request is the coldest, and with even batch sizes it would always
        # fall to the same version (its p99 is then those events). getrandbits is atomic under the GIL.
        candidate_first = both and self._turns.getrandbits(1) == 1
        if candidate_first:
            candidate = self.candidate.label(event)
            serving = self.serving.label(event)
        else:
            serving = self.serving.label(event)
            candidate = self.candidate.label(event) if both else None
        with self._lock:
            self._arms[arm].events += 1
            if sampled and candidate is not None:
                first = "candidate" if candidate_first else "serving"
                self.total.ran_first[first] += 1
                self.window.ran_first[first] += 1
                self.total.add(serving, candidate, record_id=record_id)
                self.window.add(serving, candidate, record_id=record_id)
        return (candidate if arm == "candidate" else serving), arm

    def record_dlq(self, arm: str = "serving") -> None:
        """A record of this arm went to the dead-letter output."""
        with self._lock:
            self._arms[arm].dlq += 1

    def record_truth(self, serving_right: bool, candidate_right: bool) -> None:
        with self._lock:
            self.window.add_truth(serving_right, candidate_right)
            self.total.add_truth(serving_right, candidate_right)

    # -- decisions ---------------------------------------------------------------------------

    def _new_step(self) -> None:
        self._restart_window()
        self._successes = 0
        self._failures = 0

    def tick(self) -> str:
        """Evaluate the current step once its interval has passed; returns the state."""
        with self._lock:
            if self.state != "progressing" or self._clock() - self._step_started < self.spec.interval_s:
                return self.state
            self.window.count_rules((rule_counts(self.serving), rule_counts(self.candidate)), self._errors_at_start)
            self.checks = self._measure()
            gating = [c for c in self.checks if not c.dry_run]
            events = self.window.events
            if events < self.spec.min_events or any(c.verdict == "Inconclusive" for c in gating):
                why = (f"{events} events compared in this step, fewer than min_events {self.spec.min_events}"
                       if events < self.spec.min_events else
                       "; ".join(f"{c.metric}: no data" for c in gating if c.verdict == "Inconclusive"))
                return self._transition("paused", f"Inconclusive at step {self.step:g}%: {why}")
            failed = [c for c in gating if c.verdict == "Failed"]
            if failed:
                self._failures += 1
                if self._failures > self.spec.failure_limit:
                    first = failed[0]
                    return self._transition("rolled_back", f"check {first.metric} failed at step {self.step:g}%: "
                                                           f"measured {first.value:.6g}, threshold {first.threshold}")
                self._restart_window()
                return self.state
            self._successes += 1
            if self._successes < self.spec.consecutive_success_limit:
                self._restart_window()
                return self.state
            if self.step_index + 1 >= len(self.spec.steps):
                return self._transition("promoted", f"every check passed at every step up to {self.step:g}%")
            self.history.append({"step": self.step, "events": self.window.events, "checks":
                                 [c.as_json() for c in self.checks]})
            self.step_index += 1
            self._new_step()
            self._save()
            if self._on_change:
                self._on_change(self, "step")
            return self.state

    def _restart_window(self) -> None:
        self.window = ShadowComparison(self._label_names, self._sensitivity)
        self._arms = {"serving": _ArmCounters(), "candidate": _ArmCounters()}
        self._errors_at_start = (rule_counts(self.serving), rule_counts(self.candidate))
        self._step_started = self._clock()

    def _transition(self, state: str, reason: str) -> str:
        self.state = state
        self.reason = reason
        self._save()
        if self._on_change:
            self._on_change(self, state)
        return state

    def promote(self, reason: str = "promoted by an operator") -> None:
        """Serve the candidate now; ``RolloutConflictError`` once the rollout has finished."""
        with self._lock:
            self._refuse_if_finished("promote")
            self._transition("promoted", reason)

    def abort(self, reason: str = "aborted by an operator") -> None:
        """Stop; the serving policy stays. ``RolloutConflictError`` once the rollout has finished."""
        with self._lock:
            self._refuse_if_finished("abort")
            self._transition("aborted", reason)

    def resume(self) -> None:
        """Leave a pause and measure the step again (a no-op while progressing; refused once finished)."""
        with self._lock:
            self._refuse_if_finished("resume")
            if self.state == "paused":
                self.state = "progressing"
                self.reason = ""
                self._restart_window()
                self._save()

    def _refuse_if_finished(self, action: str) -> None:
        # A finished rollout never changes again: saying "done" while doing nothing would mislead the operator.
        if self.state not in ("progressing", "paused"):
            why = f" ({self.reason})" if self.reason else ""
            raise RolloutConflictError(f"rollout {self.id} is already {self.state.replace('_', ' ')}{why}; "
                                       f"there is nothing to {action}: start a new rollout with "
                                       "`activelabel rollout start CANDIDATE --url URL --spec SPEC.yaml`")

    def _measure(self) -> list[CheckResult]:
        out = []
        w = self.window
        for check in self.spec.analysis:
            value: float | None
            if check.metric == "label_change_rate":
                value = w.change_rate(check.label or "")
            elif check.metric == "rule_error_rate_increase":
                value = None if w.events == 0 else (w.rule_errors["candidate"] - w.rule_errors["serving"]) / w.events
            elif check.metric == "dlq_rate_increase":
                base, canary = self._arms["serving"], self._arms["candidate"]
                if base.events == 0 or canary.events == 0:
                    value = None if canary.events == 0 and self.step > 0 else 0.0
                else:
                    value = canary.dlq / canary.events - base.dlq / base.events
            elif check.metric == "latency_p99_ratio":
                s99, c99 = w.p99_ms("serving"), w.p99_ms("candidate")
                value = None if not s99 or c99 is None else c99 / s99
            else:  # accuracy_delta, paired: McNemar on the discordant pairs
                lost, won = w.truth_pairs["serving_only"], w.truth_pairs["candidate_only"]
                n = sum(w.truth_pairs.values())
                value = None if n == 0 or lost + won < check.min_discordant else (won - lost) / n
            out.append(self._verdict(check, value))
        return out

    def _verdict(self, check: Check, value: float | None) -> CheckResult:
        parts = []
        if check.max is not None:
            parts.append(f"<= {check.max:g}")
        if check.min is not None:
            parts.append(f">= {check.min:g}")
        threshold = " and ".join(parts)
        dry = check.metric in self.spec.dry_run or check.name in self.spec.dry_run
        if value is None:
            return CheckResult(check.name, None, threshold, "Inconclusive", dry)
        ok = (check.max is None or value <= check.max) and (check.min is None or value >= check.min)
        return CheckResult(check.name, value, threshold, "Successful" if ok else "Failed", dry)

    # -- reporting and persistence -----------------------------------------------------------

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {
                "id": self.id,
                "state": self.state,
                "step": self.step,
                "step_index": self.step_index,
                "steps": list(self.spec.steps),
                "serving_version": str(self.serving.version),
                "candidate_version": str(self.candidate.version),
                "events": {arm: c.events for arm, c in self._arms.items()},
                "checks": [c.as_json() for c in self.checks],
                "reason": self.reason,
                "history": list(self.history),
            }

    def report(self) -> dict[str, Any]:
        """The whole shadow comparison since the rollout began, plus its status."""
        with self._lock:
            self.total.count_rules((rule_counts(self.serving), rule_counts(self.candidate)), self._rules_at_start)
            report = self.total.report()
        report["status"] = self.status()
        return report

    def _save(self) -> None:
        if self.state_file is None:
            return
        data = {"id": self.id, "spec": self.spec.to_json(), "state": self.state, "step_index": self.step_index,
                "reason": self.reason, "serving_version": str(self.serving.version),
                "candidate_version": str(self.candidate.version), "saved_at": self._wall(),
                "candidate_source": str(getattr(self.candidate.policy, "source", "")),
                "history": self.history}
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
        tmp.replace(self.state_file)


def read_state(path: str | Path) -> dict[str, Any] | None:
    """A persisted rollout (to resume after a restart), or None."""
    p = Path(path)
    if not p.exists():
        return None
    data = orjson.loads(p.read_bytes())
    return data if isinstance(data, dict) else None


def resume_rollout(path: str | Path, *, serving: Any, candidate: Any, **kwargs: Any) -> Rollout | None:
    """Rebuild a persisted rollout that was still progressing or paused, at the same step."""
    data = read_state(path)
    if data is None or data.get("state") not in ("progressing", "paused"):
        return None
    if str(candidate.version) != data.get("candidate_version"):
        raise RolloutError(f"the persisted rollout {data.get('id')} is for candidate {data.get('candidate_version')}, "
                           f"not {candidate.version}; abort it or start a new one")
    rollout = Rollout(str(data["id"]), RolloutSpec.from_mapping(data["spec"]), serving=serving, candidate=candidate,
                      state_file=path, step_index=int(data["step_index"]), state=str(data["state"]), **kwargs)
    rollout.reason = str(data.get("reason", ""))
    rollout.history = list(data.get("history") or [])
    return rollout


def restart_refusal(data: Mapping[str, Any], *, serving_version: str, candidate_version: str | None,
                    candidate_error: str = "") -> str | None:
    """Why a persisted progressing or paused rollout must not resume after a restart; None: resume it.

    ``candidate_version`` is what the candidate file loads as now (None: it no longer loads, see
    ``candidate_error``). The rollout measured its candidate against the policy serving when it
    started: another candidate, or another serving policy, is not the rollout that was persisted.
    """
    rollout_id, source = data.get("id"), data.get("candidate_source")
    recorded, baseline = data.get("candidate_version"), data.get("serving_version")
    if candidate_version is None:
        return (f"aborted at restart: the candidate {source} no longer loads ({candidate_error}); "
                f"rollout {rollout_id} was not resumed")
    if candidate_version != recorded:
        return (f"aborted at restart: the candidate file {source} is now {candidate_version}, not the rollout's "
                f"candidate {recorded}; rollout {rollout_id} was not resumed")
    if serving_version != baseline:
        return (f"aborted at restart: the service restarted serving {serving_version}, not the rollout's baseline "
                f"{baseline}; rollout {rollout_id} compared against {baseline} and was not resumed")
    return None


class _Recorded:
    """A labeler standing for the version a persisted rollout recorded (the rollout has ended: status only)."""

    def __init__(self, labeler: Any, version: Any) -> None:
        self._labeler = labeler
        self.version = str(version)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._labeler, name)


def ended_rollout(data: Mapping[str, Any], *, serving: Any, candidate: Any | None = None,
                  on_change: Callable[[Rollout, str], None] | None = None) -> Rollout:
    """A persisted rollout that has ended, for its status after a restart: it names the versions it recorded.

    ``serving`` labels what is served now (an ended rollout labels with its serving arm);
    ``candidate`` stands in for a candidate that may no longer load (default: ``serving``).
    Nothing is written: an ended rollout never changes again.
    """
    rollout = Rollout(str(data["id"]), RolloutSpec.from_mapping(data["spec"]),
                      serving=_Recorded(serving, data.get("serving_version")),
                      candidate=_Recorded(candidate if candidate is not None else serving,
                                          data.get("candidate_version")),
                      state_file=None, on_change=on_change, step_index=int(data.get("step_index", 0)),
                      state=str(data.get("state")))
    rollout.reason = str(data.get("reason", ""))
    rollout.history = list(data.get("history") or [])
    return rollout


def abort_persisted(path: str | Path, reason: str, *, serving: Any, candidate: Any,
                    on_change: Callable[[Rollout, str], None] | None = None) -> Rollout:
    """End a persisted rollout as aborted at a restart: its file says so, and the rollout keeps its own versions.

    ``on_change(rollout, "aborted")`` is called once, as for an abort while running.
    """
    p = Path(path)
    data = read_state(p)
    if data is None:
        raise RolloutError(f"{p}: no persisted rollout to abort")
    # The file keeps its versions and candidate source; only the state and why change (a later restart keeps it ended).
    ended = {**data, "state": "aborted", "reason": reason, "saved_at": time.time()}
    tmp = p.with_suffix(".tmp")
    tmp.write_bytes(orjson.dumps(ended, option=orjson.OPT_INDENT_2))
    tmp.replace(p)
    rollout = ended_rollout(ended, serving=serving, candidate=candidate, on_change=on_change)
    if on_change is not None:
        on_change(rollout, "aborted")
    return rollout


def _key_function(key: str) -> Callable[[Mapping[str, Any], str | None], Any]:
    """``record_id`` or a CEL expression over ``event`` (an error or absent key falls back to the record id)."""
    if key in ("record_id", "id"):
        return lambda event, record_id: record_id
    from activelabel import cel

    program = cel.compile(key)

    def evaluate(event: Mapping[str, Any], record_id: str | None) -> Any:
        try:
            return program.evaluate({"event": event})
        except Exception:  # noqa: BLE001 - a CEL error on one event: keep it sticky by record id instead
            return record_id

    return evaluate
