"""The stream worker's rollout: the same spec as ``serve``'s, from a file, persisted beside it.

    rollout = open_stream_rollout("spec.yaml", serving, candidate)   # resumes a persisted one
    StreamWorker(serving, config, rollout=rollout).run()

The state file (default ``SPEC.state.json``) is the same JSON ``serve`` persists. A
restarted worker resumes a progressing or paused rollout at its step, keeps a finished
one finished (a promoted candidate keeps serving; a rolled-back one stays out), and
starts afresh only for a candidate of another version.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import yaml

from activelabel.errors import RolloutError
from activelabel.governance.rollout import (
    Rollout,
    RolloutSpec,
    abort_persisted,
    ended_rollout,
    read_state,
    restart_refusal,
    resume_rollout,
)

log = logging.getLogger("activelabel.stream.rollout")


def default_state_file(spec_file: str | Path) -> Path:
    return Path(f"{spec_file}.state.json")


def load_spec(spec_file: str | Path, *, labels: Collection[str] | None = None) -> RolloutSpec:
    """The rollout spec YAML; ``RolloutError`` naming every problem (``problems``: one per field)."""
    try:
        raw = yaml.safe_load(Path(spec_file).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise RolloutError(f"cannot read the rollout spec {spec_file}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise RolloutError(f"{spec_file} is not YAML: {exc}") from exc
    return RolloutSpec.from_mapping({} if raw is None else raw, labels=labels)


def open_stream_rollout(spec_file: str | Path, serving: Any, candidate: Any, *, state_file: str | Path | None = None,
                        on_change: Callable[[Rollout, str], None] | None = None) -> Rollout:
    """A new rollout of ``candidate``, or the persisted one for the same candidate, at its step and state."""
    spec = load_spec(spec_file, labels=set(serving.policy.labels) | set(candidate.policy.labels))
    path = Path(state_file) if state_file else default_state_file(spec_file)
    data = read_state(path)
    if data is not None and data.get("candidate_version") == str(candidate.version):
        if data.get("state") in ("progressing", "paused"):
            # As `serve` does: a rollout measured against another serving policy is not resumed against this one.
            reason = restart_refusal(data, serving_version=str(serving.version),
                                     candidate_version=str(candidate.version))
            if reason is not None:
                log.warning("rollout %s %s", data.get("id"), reason)
                return abort_persisted(path, reason, serving=serving, candidate=candidate, on_change=on_change)
            rollout = resume_rollout(path, serving=serving, candidate=candidate, on_change=on_change)
            if rollout is not None:
                log.warning("rollout %s resumed: %s at step %g%%", rollout.id, rollout.state, rollout.step)
                return rollout
        # Finished: it never changes again, so the file (with its reason) is left as it is.
        # Its status names the versions it recorded (a promoted candidate labels: it is this candidate).
        finished = ended_rollout(data, serving=serving, candidate=candidate, on_change=on_change)
        log.warning("rollout %s was already %s: %s", finished.id, finished.state, finished.reason)
        return finished
    rollout_id = f"stream-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}"
    return Rollout(rollout_id, spec, serving=serving, candidate=candidate, state_file=path, on_change=on_change)
