"""What a restarted `serve` serves and says: the policy serving before it, and a rollout resumed or ended truthfully.

Every test runs a real `serve` on a free port (tests/test_rollout_service.py's ``Served``), restarts it
(kill -9 or a plain stop) and reads what a user reads: /readyz, `policy history`, `rollout status`,
`activelabel audit search`.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson

import test_rollout_service
from activelabel.engine import Labeler
from activelabel.governance.rollout import Rollout, RolloutSpec
from activelabel.policy import load_policy
from activelabel.stream.rollout import open_stream_rollout
from conftest import edge_variant as _policy
from test_rollout_service import (
    ADMIN,
    BASE_SPEC,
    CLI,
    Served,
    Traffic,
    _env,
    _events,
    _history,
    _start,
    _status,
)

served = test_rollout_service.served  # the fixture: one `serve` process per call, stopped after the test


def _readyz(s: Served) -> str:
    return str(httpx.get(s.url + "/readyz", timeout=10).json()["policy_version"])


def _admin_records(audit: Path) -> list[dict[str, Any]]:
    r = subprocess.run([*CLI, "audit", "search", str(audit), "--kind", "admin", "--limit", "0"], capture_output=True,
                       text=True, env=_env(), timeout=60)
    assert r.returncode == 0, r.stderr
    return [orjson.loads(line) for line in r.stdout.splitlines()]


def _serve_with(s: Served, policy: Path) -> None:
    """The next restart is on another --policy file (an operator changed the deployment)."""
    s.args[s.args.index("--policy") + 1] = str(policy)


def _promote_v2(s: Served, tmp_path: Path) -> tuple[str, str]:
    v1 = _readyz(s)
    assert _start(s.url, _policy(tmp_path, "v2.yaml", "2"), {**BASE_SPEC, "steps": [0, 100]}).status_code == 201
    promoted = httpx.post(s.url + "/v1/rollout/promote", headers=ADMIN, timeout=10).json()
    assert promoted["state"] == "promoted"
    return v1, str(promoted["candidate_version"])


def test_a_rollback_after_a_promote_still_holds_after_restarts(served: Callable[..., Served], tmp_path: Path) -> None:
    """promote v2, `policy rollback` v1, kill -9, restart: v1 serves (twice), and the history never re-promotes v2."""
    s = served()
    v1, v2 = _promote_v2(s, tmp_path)
    r = subprocess.run([*CLI, "policy", "rollback", v1[:20], "--url", s.url, "--token", "admin-token", "-m",
                        "undo promote"], capture_output=True, text=True, env=_env(), timeout=60)
    assert r.returncode == 0, r.stderr
    assert _readyz(s) == v1
    s.kill9()
    s.restart()
    assert _readyz(s) == v1
    s.stop()
    s.restart()
    assert _readyz(s) == v1
    rows = _history(s.store)
    assert not [e for e in rows if e["who"] == "restart"], rows[:4]
    assert rows[0]["outcome"] == "loaded" and rows[0]["version"] == v1
    served_now = httpx.post(s.url + "/v1/label", json=_events(0, 1)[0], headers={"authorization": "Bearer label-token"},
                            timeout=10)
    assert served_now.headers["activelabel-policy-version"] == v1 != v2


def test_a_promoted_candidate_serves_again_after_restarts_and_the_audit_log_says_so(
        served: Callable[..., Served], tmp_path: Path) -> None:
    """After a promote, each restart serves v2 again: the audit start record names v2, a restore record says why."""
    audit = tmp_path / "audit"
    s = served("--audit", str(audit))
    v1, v2 = _promote_v2(s, tmp_path)
    for _ in range(2):
        s.kill9()
        s.restart()
        assert _readyz(s) == v2
    s.stop()
    records = _admin_records(audit)
    starts = [r for r in records if r["action"] == "start"]
    assert [r["details"]["version"] for r in starts] == [v1, v2, v2]
    assert starts[-1]["details"]["loaded"] == v1  # the --policy file, not what serves
    restores = [r for r in records if r["action"] == "restore"]
    assert len(restores) == 2 and all(r["actor"] == "restart" and r["details"]["version"] == v2 for r in restores)
    assert restores[0]["details"]["replaced"] == v1 and "promoted by ops before the restart" in \
        restores[0]["details"]["reason"]
    again = [e for e in _history(s.store) if e["who"] == "restart"]
    assert [e["outcome"] for e in again] == ["promoted", "promoted"]
    assert all(e["version"] == v2 and e["message"].startswith("serving again: promoted by") for e in again)


def test_the_service_started_on_another_policy_serves_it_not_the_old_promote(
        served: Callable[..., Served], tmp_path: Path) -> None:
    """A restart on another --policy file is the operator's choice: it serves, the earlier promote is not re-applied."""
    s = served()
    _v1, v2 = _promote_v2(s, tmp_path)
    _serve_with(s, _policy(tmp_path, "v5.yaml", "5"))
    s.stop()
    s.restart()
    now = _readyz(s)
    assert now != v2
    assert _history(s.store)[0]["outcome"] == "loaded" and _history(s.store)[0]["version"] == now


def test_a_restart_on_another_serving_policy_aborts_the_rollout_naming_both_versions(
        served: Callable[..., Served], tmp_path: Path) -> None:
    """Rollout against v1, kill -9, restart with --policy v7: aborted at restart, not resumed against v7."""
    audit = tmp_path / "audit"
    s = served("--audit", str(audit))
    v1 = _readyz(s)
    started = _start(s.url, _policy(tmp_path, "v2.yaml", "2"), {**BASE_SPEC, "steps": [0, 100], "interval": "1h"})
    assert started.status_code == 201
    rollout_id, v2 = started.json()["id"], started.json()["candidate_version"]
    Traffic(s.url).send(50)
    s.kill9()
    _serve_with(s, _policy(tmp_path, "v7.yaml", "7"))
    s.restart()
    v7 = _readyz(s)
    status = _status(s.url)
    assert (status["id"], status["state"]) == (rollout_id, "aborted")
    assert (status["serving_version"], status["candidate_version"]) == (v1, v2)
    assert status["reason"].startswith(f"aborted at restart: the service restarted serving {v7}, not the rollout's "
                                       f"baseline {v1}")
    r = httpx.post(s.url + "/v1/label", json=_events(0, 1)[0], headers={"authorization": "Bearer label-token"},
                   timeout=10)
    assert (r.headers["activelabel-policy-version"], r.headers["activelabel-arm"]) == (v7, "stable")
    rows = _history(s.store)
    assert (rows[0]["outcome"], rows[0]["version"], rows[0]["who"]) == ("rolled_back", v2, "restart")
    assert status["reason"] in rows[0]["message"]
    assert not [e for e in rows if "resume rollout" in e["message"]]
    s.stop()
    aborts = [r for r in _admin_records(audit) if r["action"] == "rollout abort"]
    assert len(aborts) == 1 and aborts[0]["actor"] == "restart"
    assert aborts[0]["details"]["reason"] == status["reason"] and aborts[0]["details"]["now_serving"] == v7
    s.restart()  # ended: a later restart does not try again
    assert _status(s.url)["state"] == "aborted"
    assert len([e for e in _history(s.store) if e["outcome"] == "rolled_back"]) == 1


def test_a_changed_candidate_file_is_not_resumed_and_status_says_why(
        served: Callable[..., Served], tmp_path: Path) -> None:
    """The candidate file is another version at restart: status says aborted at restart, the history refused."""
    audit = tmp_path / "audit"
    s = served("--audit", str(audit))
    candidate = _policy(tmp_path, "v2.yaml", "2")
    started = _start(s.url, candidate, {**BASE_SPEC, "steps": [0, 100], "interval": "1h"})
    assert started.status_code == 201
    rollout_id, v2 = started.json()["id"], started.json()["candidate_version"]
    s.kill9()
    changed = _policy(tmp_path, "v2.yaml", "3")
    s.restart()
    status = _status(s.url)  # not 404 "no rollout has been started"
    assert (status["id"], status["state"], status["candidate_version"]) == (rollout_id, "aborted", v2)
    assert status["reason"].startswith(f"aborted at restart: the candidate file {changed} is now sha256:")
    assert f"not the rollout's candidate {v2}; rollout {rollout_id} was not resumed" in status["reason"]
    rows = _history(s.store)
    assert (rows[0]["outcome"], rows[0]["who"], rows[0]["message"]) == ("refused", "restart",
                                                                        f"resume rollout {rollout_id}")
    assert rows[0]["errors"] == [status["reason"]]
    assert not [e for e in rows if e["outcome"] == "accepted" and "resume rollout" in e["message"]]
    s.stop()
    aborts = [r for r in _admin_records(audit) if r["action"] == "rollout abort"]
    assert len(aborts) == 1 and aborts[0]["actor"] == "restart" and aborts[0]["details"]["rollout"] == rollout_id


def test_a_resumed_rollout_has_its_history_row_only_once_it_resumed(
        served: Callable[..., Served], tmp_path: Path) -> None:
    """The same candidate and baseline after kill -9: resumed, with an accepted `resume rollout` row."""
    s = served()
    started = _start(s.url, _policy(tmp_path, "v2.yaml", "2"), {**BASE_SPEC, "steps": [0, 100], "interval": "1h"})
    rollout_id = started.json()["id"]
    s.kill9()
    s.restart()
    assert _status(s.url)["state"] == "progressing"
    top = _history(s.store)[0]
    assert (top["outcome"], top["who"], top["message"]) == ("accepted", "restart", f"resume rollout {rollout_id}")


# --- the stream worker: the same rule --------------------------------------------------------------


def test_the_stream_worker_aborts_a_rollout_whose_serving_policy_changed(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("steps: [0, 100]\ninterval: 1h\nmin_events: 10\n")
    v1 = Labeler(load_policy(_policy(tmp_path, "v1.yaml", "1")))
    v2 = Labeler(load_policy(_policy(tmp_path, "v2.yaml", "2")))
    v7 = Labeler(load_policy(_policy(tmp_path, "v7.yaml", "7")))
    seen: list[str] = []
    first = open_stream_rollout(spec, v1, v2)
    assert first.state == "progressing"
    again = open_stream_rollout(spec, v7, v2, on_change=lambda rollout, what: seen.append(what))
    assert (again.id, again.state, seen) == (first.id, "aborted", ["aborted"])
    status = again.status()
    assert (status["serving_version"], status["candidate_version"]) == (v1.version, v2.version)
    assert f"restarted serving {v7.version}, not the rollout's baseline {v1.version}" in status["reason"]
    decision, arm = again.label(_events(0, 1)[0], record_id="x")
    assert (decision.policy_version, arm) == (v7.version, "serving")
    assert open_stream_rollout(spec, v7, v2).state == "aborted"  # it stays ended


# --- the paired latency comparison takes turns ---------------------------------------------------


class _Logged:
    """A real labeler that notes each call's name, in order."""

    def __init__(self, labeler: Labeler, name: str, calls: list[str]) -> None:
        self.labeler, self.name, self.calls = labeler, name, calls
        self.policy, self.version = labeler.policy, labeler.version

    def label(self, event: Any) -> Any:
        self.calls.append(self.name)
        return self.labeler.label(event)

    def stats(self) -> Any:
        return self.labeler.stats()


def test_a_rollout_labels_serving_or_candidate_first_by_turns(tmp_path: Path) -> None:
    """Each version labels first on about half the events: the one going second finds warm caches."""
    calls: list[str] = []
    serving = _Logged(Labeler(load_policy(_policy(tmp_path, "v1.yaml", "1"))), "serving", calls)
    candidate = _Logged(Labeler(load_policy(_policy(tmp_path, "v2.yaml", "2"))), "candidate", calls)
    rollout = Rollout("r-1", RolloutSpec.from_mapping({"steps": [0, 100]}), serving=serving, candidate=candidate)
    for i, event in enumerate(_events(0, 400)):
        rollout.label(event, record_id=str(i))
    firsts = [calls[i] for i in range(0, len(calls), 2)]
    assert {calls[i] for i in range(1, len(calls), 2)} | set(firsts) == {"serving", "candidate"}
    first = rollout.report()["latency_ran_first"]
    assert first == {"serving": firsts.count("serving"), "candidate": firsts.count("candidate")}
    assert 120 < first["serving"] < 280 and first["serving"] + first["candidate"] == 400
    # Not a strict alternation: then with even request sizes the coldest first event would always be one version's.
    assert firsts[:20] != ["serving", "candidate"] * 10


def test_label_shadow_times_each_version_first_about_half_the_time(tmp_path: Path) -> None:
    """`label --shadow` with an equivalent candidate: the report counts the events timed each way round."""
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in _events(0, 3000)))
    report = tmp_path / "shadow.json"
    r = subprocess.run([*CLI, "label", str(events), "-p", str(_policy(tmp_path, "v1.yaml", "1")), "-o",
                        str(tmp_path / "out.jsonl"), "-q", "--shadow", str(_policy(tmp_path, "v2.yaml", "2")),
                        "--shadow-report", str(report)], capture_output=True, text=True, env=_env(), timeout=120)
    assert r.returncode == 0, r.stderr
    got = orjson.loads(report.read_bytes())
    first = got["latency_ran_first"]
    # Every event up to 2000 is timed, then one in 32 (events 2016, 2048, ..., 2976): 2031, each first on about half.
    assert first["serving"] + first["candidate"] == 2031 and 810 < first["serving"] < 1220
    assert got["events"] == 3000 and all(v is not None for v in got["latency_p99_ms"].values())
