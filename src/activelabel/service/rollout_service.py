"""A running service's rollout: one candidate at a time, shadowed then stepped up, persisted.

``RolloutManager`` owns the ``Rollout`` (governance.rollout) of a ``serve`` process:

- ``start`` offers the candidate to the runtime (validation and its own tests; a refusal
  is kept in the history and never enters a rollout), then shadows it at step 0;
- the service's ticker calls ``tick``; a step, a promote, a rollback or an abort is
  written to the policy history and the audit log, and a promote makes the candidate
  the serving policy (a pointer swap to the snapshot already compiled);
- the state is persisted (``state_file``, next to the decision store) so a restarted
  service resumes the same rollout at the same step (``resume_persisted``);
- ``collect`` yields the ``activelabel_rollout_*`` metric families at scrape time.

Sensitive labels (``pii`` / ``secret``) appear by name and count only, never by value.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from activelabel.errors import ActiveLabelError, RolloutConflictError, RolloutError
from activelabel.governance.history import HistoryEntry
from activelabel.governance.rollout import (
    Rollout,
    RolloutSpec,
    abort_persisted,
    ended_rollout,
    read_state,
    restart_refusal,
    resume_rollout,
)
from activelabel.service.policy_runtime import PolicyRuntime, PolicySnapshot

log = logging.getLogger("activelabel.service.rollout")

ACTIVE = ("progressing", "paused")
STABLE_ARM = "stable"


class RolloutManager:
    """The rollout of one service (or none); thread-safe."""

    def __init__(self, runtime: PolicyRuntime, *, state_file: str | Path | None = None, audit: Any = None) -> None:
        self.runtime = runtime
        self.state_file = Path(state_file) if state_file else None
        self.audit = audit
        self.rollout: Rollout | None = None
        self.candidate: PolicySnapshot | None = None
        self.serving: PolicySnapshot | None = None
        self._lock = threading.Lock()
        self.events_by_arm: dict[str, int] = {"serving": 0, "candidate": 0}
        self.aborted: dict[str, int] = {}

    # -- per event ------------------------------------------------------------------------

    def active(self) -> Rollout | None:
        """The rollout while it is progressing or paused (events go through it), else None."""
        rollout = self.rollout
        return rollout if rollout is not None and rollout.state in ACTIVE else None

    def snapshot_of(self, arm: str) -> PolicySnapshot | None:
        return self.candidate if arm == "candidate" else self.serving

    def label(self, rollout: Rollout, event: Mapping[str, Any], record_id: str | None) -> tuple[Any, str]:
        decision, arm = rollout.label(event, record_id=record_id)
        self.events_by_arm[arm] = self.events_by_arm.get(arm, 0) + 1
        return decision, arm

    # -- control --------------------------------------------------------------------------

    def start(self, candidate_path: str, spec_data: Any, *, who: str, message: str = "") -> dict[str, Any]:
        """Offer and shadow a candidate; ``PolicyError`` (every issue) or ``RolloutError`` when refused.

        Everything is checked before anything is recorded: a bad spec never reaches the candidate,
        and a rollout refused after the candidate compiled (a check on a label neither policy has,
        the candidate already serving) leaves no ``accepted`` row for a rollout that never ran.
        """
        spec = RolloutSpec.from_mapping(spec_data)
        with self._lock:
            self._refuse_if_running()
            candidate = self.runtime.check_candidate(candidate_path, who=who, message=message)
            serving = self.runtime.current
            spec.refuse_unknown_labels(set(serving.labeler.policy.labels) | set(candidate.labeler.policy.labels))
            if candidate.version == serving.version:
                raise RolloutError(f"the candidate {candidate_path} is the policy already serving "
                                   f"({serving.version}); there is nothing to roll out")
            self.runtime.adopt(candidate, who=who, message=message or "rollout candidate")
            rollout_id = f"r-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:6]}"
            self.serving, self.candidate = serving, candidate
            self.events_by_arm = {"serving": 0, "candidate": 0}
            self.rollout = Rollout(rollout_id, spec, serving=serving.labeler, candidate=candidate.labeler,
                                   state_file=self.state_file, on_change=self._on_change)
        self._admin("rollout start", who, rollout=rollout_id, candidate=candidate.version, serving=serving.version,
                    spec=spec.to_json(), message=message)
        log.info("rollout %s started: candidate %s against %s", rollout_id, candidate.version, serving.version)
        return self.rollout.status()

    def _refuse_if_running(self) -> None:
        if self.active() is not None:
            assert self.rollout is not None
            raise RolloutConflictError(f"rollout {self.rollout.id} is still {self.rollout.state}; promote or abort "
                                       "it before starting another")

    def tick(self) -> str | None:
        rollout = self.active()
        return rollout.tick() if rollout is not None else None

    def promote(self, who: str) -> dict[str, Any]:
        rollout = self._need()
        rollout.promote(f"promoted by {who}")
        return rollout.status()

    def abort(self, who: str) -> dict[str, Any]:
        """Stop the rollout, the serving policy stays; ``who`` is a caller, or a sentence saying why."""
        rollout = self._need()
        rollout.abort(f"aborted by {who}" if " " not in who else f"aborted: {who}")
        return rollout.status()

    def resume(self, who: str) -> dict[str, Any]:
        rollout = self._need()
        rollout.resume()
        self._admin("rollout resume", who, rollout=rollout.id, step=rollout.step)
        return rollout.status()

    def status(self) -> dict[str, Any] | None:
        return self.rollout.status() if self.rollout is not None else None

    def report(self) -> dict[str, Any] | None:
        return self.rollout.report() if self.rollout is not None else None

    def _need(self) -> Rollout:
        if self.rollout is None:
            raise RolloutError("no rollout has been started on this service; start one with `activelabel rollout "
                               "start CANDIDATE --url URL --spec SPEC.yaml`")
        return self.rollout

    # -- outcomes ---------------------------------------------------------------------------

    def _on_change(self, rollout: Rollout, what: str) -> None:
        """Called by the rollout under its own lock: read its fields, never its status()."""
        candidate, reason = self.candidate, rollout.reason
        if candidate is None:
            return
        actor = reason.removeprefix("promoted by ").removeprefix("aborted by ") if " by " in reason[:14] else "rollout"
        if what == "step":
            self._admin("rollout step", "rollout", rollout=rollout.id, step=rollout.step, candidate=candidate.version)
        elif what == "promoted":
            old = self.runtime.serve_snapshot(candidate, "promoted", who=actor, message=f"rollout {rollout.id}: {reason}")
            self._admin("promote", actor, rollout=rollout.id, candidate=candidate.version, replaced=old, reason=reason)
            log.info("rollout %s promoted %s: %s", rollout.id, candidate.version, reason)
        elif what in ("rolled_back", "aborted"):
            self.runtime.record(candidate, "rolled_back", who=actor, message=f"rollout {rollout.id}: {reason}")
            kind = "operator" if what == "aborted" else _check_of(reason)
            self.aborted[kind] = self.aborted.get(kind, 0) + 1
            self._admin("rollback" if what == "rolled_back" else "rollout abort", actor, rollout=rollout.id,
                        candidate=candidate.version, serving=rollout.serving.version, reason=reason)
            log.warning("rollout %s %s: %s; still serving %s", rollout.id, what.replace("_", " "), reason,
                        rollout.serving.version)
        elif what == "paused":
            self._admin("rollout pause", "rollout", rollout=rollout.id, step=rollout.step, reason=reason)
            log.warning("rollout %s paused: %s", rollout.id, reason)

    def _admin(self, action: str, actor: str, **details: Any) -> None:
        if self.audit is not None:
            self.audit.log_admin(action, actor=actor, **details)

    # -- restart ------------------------------------------------------------------------------

    def resume_persisted(self, restored: Restored | None = None) -> str | None:
        """After a restart: audit what ``restore_serving`` served again, then resume or end the persisted rollout.

        A progressing or paused rollout resumes only with the same candidate against the same
        serving policy; otherwise it ends as aborted at the restart, saying why (history, audit
        log, status). A finished one stays finished.
        """
        if restored is not None:
            self._admin("restore", "restart", version=restored.version, replaced=restored.replaced,
                        outcome=restored.outcome, reason=restored.reason)
        if self.state_file is None:
            return None
        data = read_state(self.state_file)
        if data is None:
            return None
        try:
            return self._after_restart(data)
        except ActiveLabelError as exc:  # e.g. a persisted spec this version refuses: serve without it, say why
            log.error("the persisted rollout %s in %s is not taken up (%s); serving %s without it", data.get("id"),
                      self.state_file, exc, self.runtime.current.version)
            return None

    def _after_restart(self, data: Mapping[str, Any]) -> str | None:
        serving = self.runtime.current
        if data.get("state") not in ACTIVE:
            # Ended before the restart: `rollout status` still says how (it is not a rollout to resume).
            self.rollout = ended_rollout(data, serving=serving.labeler)
            return None
        source, rollout_id = str(data.get("candidate_source") or ""), data.get("id")
        candidate: PolicySnapshot | None = None
        error = ""
        try:
            candidate = self.runtime.check_candidate(source, who="restart", message=f"resume rollout {rollout_id}")
        except ActiveLabelError as exc:
            error = str(exc).splitlines()[0]
        reason = restart_refusal(data, serving_version=serving.version, candidate_error=error,
                                 candidate_version=candidate.version if candidate is not None else None)
        if reason is None and candidate is not None:
            return self._resume(data, serving, candidate)
        assert reason is not None
        self._end_at_restart(data, reason, serving, candidate)
        return "aborted"

    def _resume(self, data: Mapping[str, Any], serving: PolicySnapshot, candidate: PolicySnapshot) -> str | None:
        try:
            rollout = resume_rollout(self.state_file or "", serving=serving.labeler, candidate=candidate.labeler,
                                     on_change=self._on_change)
        except ActiveLabelError as exc:
            log.error("the persisted rollout %s cannot resume (%s); serving %s without it", data.get("id"), exc,
                      serving.version)
            return None
        if rollout is None:
            return None
        # Only now is the candidate back in a rollout: its history row says so.
        self.runtime.adopt(candidate, who="restart", message=f"resume rollout {rollout.id}")
        self.serving, self.candidate, self.rollout = serving, candidate, rollout
        self._admin("rollout resume", "restart", rollout=rollout.id, step=rollout.step, state=rollout.state)
        log.info("rollout %s resumed after a restart: %s at step %g%%", rollout.id, rollout.state, rollout.step)
        return rollout.state

    def _end_at_restart(self, data: Mapping[str, Any], reason: str, serving: PolicySnapshot,
                        candidate: PolicySnapshot | None) -> None:
        """A rollout the restart did not resume: aborted in its file, the history, the audit log and the status."""
        assert self.state_file is not None
        rollout_id = str(data.get("id"))
        same = candidate is not None and candidate.version == data.get("candidate_version")
        if same and candidate is not None:
            self.runtime.record(candidate, "rolled_back", who="restart", message=f"rollout {rollout_id}: {reason}")
        elif candidate is not None:
            # The file now holds another policy: refused as this rollout's candidate (one that no longer
            # loads was already recorded as refused, with its errors, by the check).
            self.runtime.refuse(str(data.get("candidate_source") or ""), [reason], who="restart",
                                message=f"resume rollout {rollout_id}")
        self.serving, self.candidate = serving, candidate if same else None
        self.rollout = abort_persisted(self.state_file, reason, serving=serving.labeler,
                                       candidate=(candidate or serving).labeler)
        self.aborted["restart"] = self.aborted.get("restart", 0) + 1
        self._admin("rollout abort", "restart", rollout=rollout_id, candidate=data.get("candidate_version"),
                    serving=data.get("serving_version"), now_serving=serving.version, reason=reason)
        log.warning("rollout %s %s; serving %s", rollout_id, reason, serving.version)

    # -- metrics --------------------------------------------------------------------------------

    def collect(self) -> Iterator[Any]:
        """The ``activelabel_rollout_*`` families (a prometheus_client custom collector)."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        from activelabel.observability.catalog import CATALOG

        def help_of(name: str) -> str:
            return CATALOG[name].help_text

        aborted = CounterMetricFamily("activelabel_rollout_aborted", help_of("activelabel_rollout_aborted"),
                                      labels=["reason"])
        for reason, n in sorted(self.aborted.items()):
            aborted.add_metric([reason], n)
        yield aborted
        rollout = self.rollout
        if rollout is None:
            return
        status = rollout.status()
        report = rollout.total.report()
        active = GaugeMetricFamily("activelabel_rollout_state", help_of("activelabel_rollout_state"),
                                   labels=["rollout", "state"])
        for state in ("progressing", "paused", "promoted", "rolled_back", "aborted"):
            active.add_metric([rollout.id, state], 1.0 if status["state"] == state else 0.0)
        yield active
        step = GaugeMetricFamily("activelabel_rollout_step", help_of("activelabel_rollout_step"), labels=["rollout"])
        step.add_metric([rollout.id], float(status["step"]))
        yield step
        events = CounterMetricFamily("activelabel_rollout_events", help_of("activelabel_rollout_events"),
                                     labels=["rollout", "arm"])
        for arm, n in sorted(self.events_by_arm.items()):
            events.add_metric([rollout.id, arm], n)
        yield events
        compared = CounterMetricFamily("activelabel_rollout_compared", help_of("activelabel_rollout_compared"),
                                       labels=["rollout"])
        compared.add_metric([rollout.id], report["events"])
        yield compared
        changes = CounterMetricFamily("activelabel_rollout_label_changes", help_of("activelabel_rollout_label_changes"),
                                      labels=["rollout", "label"])
        for name, lab in report["labels"].items():
            changes.add_metric([rollout.id, name], lab["changed"])
        yield changes
        value = GaugeMetricFamily("activelabel_rollout_check_value", help_of("activelabel_rollout_check_value"),
                                  labels=["rollout", "check", "verdict"])
        bound = GaugeMetricFamily("activelabel_rollout_check_threshold",
                                  help_of("activelabel_rollout_check_threshold"), labels=["rollout", "check", "bound"])
        measured = {c["metric"]: c for c in status["checks"]}
        for check in rollout.spec.analysis:
            got = measured.get(check.name)
            if got is not None and got["value"] is not None:
                value.add_metric([rollout.id, check.name, got["verdict"]], float(got["value"]))
            if check.max is not None:
                bound.add_metric([rollout.id, check.name, "max"], check.max)
            if check.min is not None:
                bound.add_metric([rollout.id, check.name, "min"], check.min)
        yield value
        yield bound


@dataclass(frozen=True)
class Restored:
    """A policy served again at a restart because it was serving before it (not the one ``--policy`` names)."""

    version: str
    replaced: str
    outcome: str
    reason: str


def restore_serving(runtime: PolicyRuntime, before: tuple[HistoryEntry | None, HistoryEntry | None]) -> Restored | None:
    """Serve again what was serving before a restart (a promote, a rollback, a reload): the history's newest word.

    ``before`` is ``PolicyHistory.last_serving()`` read before this start recorded its own row: the
    previous start's ``loaded`` row and the newest row that made a policy serve. When the service
    starts on another policy than the previous start did, the operator chose it: it keeps serving.
    """
    loaded, serving = before
    now = runtime.current
    if serving is None or serving.version is None or serving.version == now.version or not serving.source:
        return None
    if loaded is not None and loaded.version != now.version:
        log.info("started on %s (the last start served %s): it serves, not %s", now.version, loaded.version,
                 serving.version)
        return None
    why = f"{serving.outcome} by {serving.who} before the restart" + (f": {serving.message}" if serving.message else "")
    try:
        snapshot = runtime.check_candidate(serving.source, who="restart", message=f"serve again: {why}")
    except ActiveLabelError as exc:
        log.error("%s served before the restart but %s no longer loads; serving %s: %s", serving.version,
                  serving.source, now.version, str(exc).splitlines()[0])
        return None
    if snapshot.version != serving.version:
        log.error("%s served before the restart but %s is now %s; serving %s", serving.version, serving.source,
                  snapshot.version, now.version)
        return None
    outcome = serving.outcome if serving.outcome in ("promoted", "rollback") else "accepted"
    # A reload's row starts with "reload (": the next restart knows this one served too.
    message = ("reload (restart): " if outcome == "accepted" else "") + f"serving again: {why}"
    replaced = runtime.serve_snapshot(snapshot, outcome, who="restart", message=message)
    log.info("serving %s again (%s)", snapshot.version, why)
    return Restored(snapshot.version, replaced or now.version, serving.outcome, why)


def _check_of(reason: str) -> str:
    """The failed check a rollback reason names (a bounded metric label), e.g. ``label_change_rate[priority]``."""
    if reason.startswith("check "):
        return reason.split(" ", 2)[1]
    return "other"
