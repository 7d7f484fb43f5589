"""The running policy and its reload state machine.

States: *not ready* (no policy yet) → *serving(v1)* → reload → *serving(v2)*,
or reload refused → still *serving(v1)*. A reload builds and fully checks the
candidate (load + compile + the policy's own ``tests:``) off to the side; only a
candidate that passed everything replaces the snapshot, in one reference
assignment, so in-flight requests finish on the labeler they started with and
no request is ever dropped or sees a half-built policy.

Every policy the runtime loads or is offered (a reload, a rollout candidate) is
kept in a ``PolicyHistory`` (accepted or refused, who, why), and every compiled
snapshot is kept by version, so ``rollback(version)`` is a pointer swap to a
policy that already passed every check: it cannot fail validation.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from activelabel.errors import ActiveLabelError, PolicyError, PolicyIssue
from activelabel.errors import NotReadyError as NotReadyError
from activelabel.errors import PolicyNotKnownError as PolicyNotKnownError
from activelabel.governance.protect import Protector
from activelabel.governance.sensitivity import DEFAULT_CLEARANCE, Sensitivity, SensitivityRegistry
from activelabel.observability.labeler_stats import StatsTotals, totals_from_stats

if TYPE_CHECKING:
    from activelabel.engine import Labeler, PolicyTestResult
    from activelabel.governance.history import PolicyHistory

log = logging.getLogger("activelabel.service.reload")

LabelerLoader = Callable[[Path], "Labeler"]


_default_protector: Protector | None = None


def default_protector() -> Protector:
    """The protector of SDK hooks given no other: keys from ``$ACTIVELABEL_PSEUDONYM_KEY`` (read once)."""
    global _default_protector
    if _default_protector is None:
        _default_protector = Protector.configured()
    return _default_protector


def load_checked_labeler(path: Path, *, track_conflicts: bool = True) -> Labeler:
    """Load, compile and self-test a policy; ``PolicyError`` with every problem otherwise.

    ``track_conflicts`` makes the engine evaluate every rule so the conflict
    SLI (M5) is counted; it costs time proportional to the rules after a match.
    """
    from activelabel.engine import (
        Labeler,  # imported late: config checks need no engine
    )
    from activelabel.policy import load_policy

    labeler = Labeler(load_policy(path), track_conflicts=track_conflicts)
    failures = [r for r in labeler.run_tests() if not r.passed]
    if failures:
        protected = PolicySnapshot.of(labeler).protected_labels
        # The candidate did load, so its version is known: the reload log names it.
        raise PolicyError(issues=[_test_issue(r, path, protected) for r in failures],
                          candidate_version=str(labeler.version))
    return labeler


def _test_issue(result: PolicyTestResult, path: Path, protected: frozenset[str]) -> PolicyIssue:
    parts = []
    for label, (want, got) in result.mismatches.items():
        if label in protected:
            # Never echo a pii / secret value, even one written in the policy's tests.
            parts.append(f"{label}: value differs from the expected one (values hidden: sensitive label)")
        else:
            parts.append(f"{label}: expected {want!r}, got {got!r}")
    return PolicyIssue(
        message=f"policy test {result.name!r} failed: " + ("; ".join(parts) or "labels differ"),
        file=str(result.file or path),
        line=int(result.line or 0),
    )


@dataclass(frozen=True)
class PolicySnapshot:
    """Everything a request needs about the serving policy, computed once per load."""

    labeler: Labeler
    name: str
    version: str
    label_names: tuple[str, ...]
    sensitivity: dict[str, str]
    secret_labels: frozenset[str]
    protected_labels: frozenset[str]
    registry: SensitivityRegistry
    """What each label's sensitivity allows (`activelabel.governance.sensitivity`)."""
    protector: Protector
    """Pseudonymizes and masks labels for callers not cleared for them."""

    @classmethod
    def of(cls, labeler: Labeler, protector: Protector | None = None) -> PolicySnapshot:
        policy = labeler.policy
        labels = policy.labels
        registry = SensitivityRegistry.of_labels(labels)
        sensitivity = {name: str(registry.sensitivity(name)) for name in labels}
        name = policy.metadata.name
        return cls(
            labeler=labeler,
            name=str(name or ""),
            version=str(labeler.version),
            label_names=tuple(labels),
            sensitivity=sensitivity,
            secret_labels=registry.names(Sensitivity.SECRET),
            # Values a default reader may not see: never quoted in messages.
            protected_labels=registry.above(DEFAULT_CLEARANCE),
            registry=registry,
            protector=protector if protector is not None else default_protector(),
        )


@dataclass(frozen=True)
class ReloadOutcome:
    """What a reload did; ``errors`` are the refused policy's issues as JSON-ready dicts."""

    accepted: bool
    trigger: str
    old_version: str | None
    new_version: str | None
    errors: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "trigger": self.trigger,
            "old_version": self.old_version,
            "new_version": self.new_version,
            "errors": self.errors,
        }


def issue_as_json(issue: PolicyIssue) -> dict[str, Any]:
    return {
        "message": issue.message,
        "file": issue.file,
        "line": issue.line,
        "column": issue.column,
        "rule_id": issue.rule_id,
        "suggestion": issue.suggestion,
        "excerpt": issue.excerpt,
        "text": issue.format(),
    }


class PolicyRuntime:
    """Holds the serving ``PolicySnapshot`` and swaps it on a successful reload."""

    def __init__(
        self,
        policy_path: Path | str,
        *,
        loader: LabelerLoader = load_checked_labeler,
        on_reload: Callable[[ReloadOutcome], None] | None = None,
        protector: Protector | None = None,
        history: PolicyHistory | None = None,
    ) -> None:
        self.policy_path = Path(policy_path)
        self.history = history
        # Every compiled policy served or offered, by version: what rollback swaps to.
        self._by_version: dict[str, PolicySnapshot] = {}
        self.protector = protector
        self._loader = loader
        self._on_reload = on_reload
        self._snapshot: PolicySnapshot | None = None
        self._reload_lock = threading.Lock()
        # Counters of retired labelers: the one retired last is still read live
        # (requests may still be finishing on it); older ones are folded in.
        self._baseline = StatsTotals()
        self._recently_retired: Labeler | None = None
        # Called with the snapshot a promote or a rollback starts serving (a reload has ``on_reload``).
        self.on_serve: list[Callable[[PolicySnapshot], None]] = []

    @classmethod
    def load(cls, policy_path: Path | str, **kwargs: Any) -> PolicyRuntime:
        """A runtime already serving ``policy_path``; ``PolicyError`` with every issue if it is refused.

        For the SDK hooks in a long-running app: pass it instead of a ``Labeler``
        and call ``reload()`` (from a SIGHUP handler, an admin route...) to swap
        the policy under them.
        """
        runtime = cls(policy_path, **kwargs)
        outcome = runtime.reload("start")
        if not outcome.accepted:
            raise PolicyError(issues=[PolicyIssue(**issue_fields(e)) for e in outcome.errors])
        return runtime

    @property
    def ready(self) -> bool:
        return self._snapshot is not None

    @property
    def current(self) -> PolicySnapshot:
        snapshot = self._snapshot
        if snapshot is None:
            raise NotReadyError("no policy loaded yet")
        return snapshot

    def reload(self, trigger: str = "api", *, who: str | None = None, message: str = "") -> ReloadOutcome:
        """Load the policy file again; keep serving the old policy if the new one is refused."""
        with self._reload_lock:
            old = self._snapshot
            old_version = old.version if old else None
            try:
                # Every reload's row starts with "reload (": a restart tells it from an offer that never served.
                candidate = self._build(self.policy_path, who=who,
                                        message=f"reload ({trigger})" + (f": {message}" if message else ""),
                                        outcome="loaded" if trigger == "start" else "accepted")
            except PolicyError as exc:
                outcome = ReloadOutcome(
                    False, trigger, old_version, exc.candidate_version, [issue_as_json(i) for i in exc.issues]
                )
            else:
                self._swap(candidate)
                outcome = ReloadOutcome(True, trigger, old_version, candidate.version)
        self._log(outcome)
        if self._on_reload is not None:
            self._on_reload(outcome)
        return outcome

    def offer(self, path: Path | str, *, who: str | None = None, message: str = "") -> PolicySnapshot:
        """Build and fully check a candidate (a rollout's) without serving it; ``PolicyError`` with every issue.

        Accepted or refused, the offer is kept in the history.
        """
        with self._reload_lock:
            return self._build(Path(path), who=who, message=message or "rollout candidate", outcome="accepted")

    def check_candidate(self, path: Path | str, *, who: str | None = None, message: str = "") -> PolicySnapshot:
        """Build and check a candidate like ``offer``, but keep an accepted one out of the history for now.

        A rollout start still has checks to make once the candidate compiles (the spec's labels, not the
        serving version); ``adopt`` records it when the rollout does start. A refused candidate is kept
        in the history at once, as ``offer`` does.
        """
        with self._reload_lock:
            return self._build(Path(path), who=who, message=message or "rollout candidate", outcome=None)

    def adopt(self, snapshot: PolicySnapshot, *, who: str | None = None, message: str = "") -> None:
        """Record a checked candidate as ``accepted`` and make it a version rollback can swap to."""
        with self._reload_lock:
            self._by_version[snapshot.version] = snapshot
            self.record(snapshot, "accepted", who=who, message=message or "rollout candidate")

    def _build(self, path: Path, *, who: str | None, message: str, outcome: str | None) -> PolicySnapshot:
        try:
            snapshot = PolicySnapshot.of(self._loader(path), self.protector)
        except PolicyError as exc:
            self._record_refusal(path, [i.format() for i in exc.issues], who, message)
            raise
        except (OSError, ActiveLabelError) as exc:
            self._record_refusal(path, [str(exc)], who, message)
            raise PolicyError(issues=[PolicyIssue(message=str(exc), file=str(path))]) from exc
        if outcome is not None:
            self._by_version[snapshot.version] = snapshot
            self.record(snapshot, outcome, who=who, message=message)
        return snapshot

    def record(self, snapshot: PolicySnapshot, outcome: str, *, who: str | None = None, message: str = "") -> None:
        """Add one row to the policy history (no-op without one)."""
        if self.history is not None:
            try:
                self.history.record(snapshot.labeler.policy, outcome=outcome, who=who, message=message)
            except ActiveLabelError as exc:
                log.error("policy history not written (%s): %s", outcome, exc)

    def refuse(self, path: Path | str, errors: list[str], *, who: str | None = None, message: str = "") -> None:
        """Record a policy file as refused for a reason of the caller's (not a validation error)."""
        self._record_refusal(Path(path), errors, who, message)

    def _record_refusal(self, path: Path, errors: list[str], who: str | None, message: str) -> None:
        if self.history is None:
            return
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            text = None
        try:
            self.history.record_refusal(text, errors=errors, who=who, message=message, source=str(path))
        except ActiveLabelError as exc:
            log.error("policy history not written (refused): %s", exc)

    def serve_snapshot(self, snapshot: PolicySnapshot, outcome: str, *, who: str | None = None,
                       message: str = "") -> str | None:
        """Serve an already checked snapshot now (a promote); returns the version it replaced."""
        with self._reload_lock:
            old = self._snapshot
            self._by_version[snapshot.version] = snapshot
            self._swap(snapshot)
            source = getattr(snapshot.labeler.policy, "source", None)
            if source:
                # Reloads and the file watch follow the policy now serving.
                self.policy_path = Path(str(source))
            self.record(snapshot, outcome, who=who, message=message)
        for listener in self.on_serve:
            listener(snapshot)
        return old.version if old else None

    def rollback(self, version: str, *, who: str | None = None, message: str = "") -> tuple[str | None, str]:
        """Serve an earlier compiled version again (given whole or as a unique prefix): a pointer swap.

        Returns ``(old version, new version)``; ``PolicyNotKnownError`` names the versions there are.
        """
        from activelabel.governance import versions

        found = versions.matches(version, self._by_version)  # as `policy show` and `audit search` read one
        if len(found) > 1:
            raise PolicyNotKnownError(versions.ambiguous(version, found))
        if not found:
            known = ", ".join(sorted(self._by_version)) or "none"
            raise PolicyNotKnownError(f"version {version!r} was not compiled by this process; "
                                      f"versions that can be rolled back to: {known}")
        return self.serve_snapshot(self._by_version[found[0]], "rollback", who=who,
                                   message=message or "rollback"), found[0]

    def versions(self) -> list[str]:
        """The compiled versions this process can roll back to."""
        return list(self._by_version)

    def _swap(self, snapshot: PolicySnapshot) -> None:
        old = self._snapshot
        if old is snapshot:
            return
        self._retire(old)
        self._snapshot = snapshot

    def _retire(self, old: PolicySnapshot | None) -> None:
        if old is None:
            return
        if self._recently_retired is not None:
            self._baseline = self._baseline.add(totals_from_stats(self._recently_retired.stats()))
        self._recently_retired = old.labeler

    def totals(self) -> StatsTotals:
        """Engine counters summed over every policy this process has served."""
        totals = self._baseline
        if self._recently_retired is not None:
            totals = totals.add(totals_from_stats(self._recently_retired.stats()))
        snapshot = self._snapshot
        if snapshot is not None:
            totals = totals.add(totals_from_stats(snapshot.labeler.stats()))
        return totals

    def _log(self, outcome: ReloadOutcome) -> None:
        if outcome.accepted:
            log.info(
                "policy reload accepted (trigger=%s): old version %s -> new version %s",
                outcome.trigger, outcome.old_version or "none", outcome.new_version,
            )
            return
        log.warning(
            "policy reload refused (trigger=%s): keeps serving version %s; candidate %s (version %s, file sha256:%s) has %d error(s):\n%s",
            outcome.trigger,
            outcome.old_version or "none",
            self.policy_path,
            outcome.new_version or "unknown: it did not load",
            _file_digest(self.policy_path),
            len(outcome.errors),
            "\n".join(e.get("text") or e.get("message", "") for e in outcome.errors),
        )


def issue_fields(error: dict[str, Any]) -> dict[str, Any]:
    keys = ("message", "file", "line", "column", "rule_id", "suggestion", "excerpt")
    return {k: error[k] for k in keys if error.get(k) is not None}


def snapshot_source(labeler_or_runtime: Labeler | PolicyRuntime) -> Callable[[], PolicySnapshot]:
    """How an SDK hook gets the policy to use: fixed for a ``Labeler``, the current one for a ``PolicyRuntime``."""
    if isinstance(labeler_or_runtime, PolicyRuntime):
        return lambda: labeler_or_runtime.current
    fixed = PolicySnapshot.of(labeler_or_runtime)
    return lambda: fixed


def _file_digest(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    except OSError:
        return "unreadable"
