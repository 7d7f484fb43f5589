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
from pathlib import Path
from typing import Any

from activelabel.errors import ActiveLabelError, RolloutConflictError, RolloutError
from activelabel.governance.rollout import Rollout, RolloutSpec, read_state, resume_rollout
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

    def resume_persisted(self) -> str | None:
        """After a restart: resume a persisted rollout at its step, or serve a promoted candidate again."""
        if self.state_file is None:
            return None
        data = read_state(self.state_file)
        if data is None:
            return None
        state, source = data.get("state"), str(data.get("candidate_source") or "")
        serving = self.runtime.current
        if state not in (*ACTIVE, "promoted") or not source:
            return None
        if state == "promoted":
            if data.get("serving_version") != serving.version:
                return None  # the service was started on another policy since: that one wins
            try:
                candidate = self.runtime.offer(source, who="restart", message=f"rollout {data.get('id')} promoted")
            except ActiveLabelError as exc:
                log.error("the promoted policy %s no longer loads, serving %s: %s", source, serving.version, exc)
                return None
            self.runtime.serve_snapshot(candidate, "promoted", who="restart",
                                        message=f"rollout {data.get('id')} was promoted before the restart")
            return "promoted"
        try:
            candidate = self.runtime.offer(source, who="restart", message=f"resume rollout {data.get('id')}")
            rollout = resume_rollout(self.state_file, serving=serving.labeler, candidate=candidate.labeler,
                                     on_change=self._on_change)
        except ActiveLabelError as exc:
            log.error("the persisted rollout %s cannot resume (%s); serving %s without it", data.get("id"), exc,
                      serving.version)
            return None
        if rollout is None:
            return None
        self.serving, self.candidate, self.rollout = serving, candidate, rollout
        self._admin("rollout resume", "restart", rollout=rollout.id, step=rollout.step, state=rollout.state)
        log.info("rollout %s resumed after a restart: %s at step %g%%", rollout.id, rollout.state, rollout.step)
        return rollout.state

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


def _check_of(reason: str) -> str:
    """The failed check a rollback reason names (a bounded metric label), e.g. ``label_change_rate[priority]``."""
    if reason.startswith("check "):
        return reason.split(" ", 2)[1]
    return "other"
