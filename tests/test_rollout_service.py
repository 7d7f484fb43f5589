"""Rollouts on a real `activelabel serve` on a free port: rollback, promote, pause, restart, scopes, audit."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml

from conftest import edge_variant as _policy

REPO = Path(__file__).resolve().parents[1]
EDGE = REPO / "examples" / "edge"
FAILING = REPO / "tests" / "fixtures" / "service" / "failing_tests_policy.yaml"
CLI = [sys.executable, "-m", "activelabel"]
TOKENS = {
    "label-token": {"scopes": ["label"], "name": "app"},
    "admin-token": {"scopes": ["label", "admin", "feedback"], "name": "ops"},
}
ADMIN = {"authorization": "Bearer admin-token"}
LABEL = {"authorization": "Bearer label-token"}
THIRTY_PERCENT_HIGH = """  - id: every-third-tenant-high
    label: priority
    value: high
    when: event.n % 10 < 3
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("ACTIVELABEL_TOKENS", "ACTIVELABEL_TOKEN")}
    env["PYTHONUNBUFFERED"] = "1"
    return env




class Served:
    """One `serve` process; ``restart`` starts it again on the same files and port."""

    def __init__(self, tmp_path: Path, extra: list[str]) -> None:
        self.tmp = tmp_path
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        tokens = tmp_path / "tokens.yaml"
        tokens.write_text(yaml.safe_dump({"tokens": TOKENS}))
        self.store = tmp_path / "decisions.db"
        self.args = [*CLI, "serve", "--policy", str(_policy(tmp_path, "v1.yaml", "1")), "--tokens", str(tokens),
                     "--port", str(self.port), "--record", str(self.store), "--log-level", "warning", *extra]
        self.proc = self._start()

    def _start(self) -> subprocess.Popen[str]:
        log = (self.tmp / "serve.log").open("a")
        proc = subprocess.Popen(self.args, stdout=log, stderr=log, text=True, env=_env())
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"serve exited early:\n{(self.tmp / 'serve.log').read_text()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return proc
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise AssertionError("serve did not become ready")

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def restart(self) -> None:
        self.proc = self._start()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    started: list[Served] = []

    def start(*extra: str) -> Served:
        s = Served(tmp_path, list(extra))
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def _events(start: int, n: int) -> list[dict[str, Any]]:
    return [{"status": 200, "path": f"/page/{i}", "user_agent": "Mozilla/5.0", "bytes": 900, "n": i,
             "tenant_id": f"t{i % 97}", "client_ip": f"10.0.{i % 200}.{i % 7}"} for i in range(start, start + n)]


class Traffic:
    """Sends batches of distinct events (each gets its own record id)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sent = 0

    def send(self, n: int = 200) -> httpx.Response:
        r = httpx.post(self.url + "/v1/label", json={"events": _events(self.sent, n)}, headers=LABEL, timeout=30)
        assert r.status_code == 200, r.text
        self.sent += n
        return r


def _status(url: str) -> dict[str, Any]:
    r = httpx.get(url + "/v1/rollout", headers=ADMIN, timeout=10)
    assert r.status_code == 200, r.text
    return dict(r.json())


def _until(url: str, done: Callable[[dict[str, Any]], bool], traffic: Traffic | None,
           timeout_s: float = 90.0) -> dict[str, Any]:
    """Poll the status (sending traffic between polls when given) until ``done`` or a deadline.

    With traffic, a pause for too few events (a loaded machine sent less than min_events
    within an interval) is resumed, as an operator would: it is not the verdict under test.
    """
    deadline = time.monotonic() + timeout_s
    status = _status(url)
    while not done(status):
        if time.monotonic() > deadline:
            raise AssertionError(f"rollout never reached the wanted state; last status: {status}")
        if traffic is not None:
            if status["state"] == "paused" and "fewer than min_events" in status["reason"]:
                httpx.post(url + "/v1/rollout/resume", headers=ADMIN, timeout=10)
            traffic.send()
        else:
            time.sleep(0.05)  # a poll interval, not a wait for a result
        status = _status(url)
    return status


def _finished(status: dict[str, Any]) -> bool:
    return status["state"] in ("promoted", "rolled_back", "aborted")


def _start(url: str, candidate: Path, spec: dict[str, Any], token: dict[str, str] = ADMIN) -> httpx.Response:
    return httpx.post(url + "/v1/rollout", json={"candidate": str(candidate), "spec": spec, "message": "test"},
                      headers=token, timeout=60)


BASE_SPEC = {"key": "event.tenant_id", "interval": "0.4s", "min_events": 100, "consecutive_success_limit": 1,
             "analysis": [{"metric": "label_change_rate", "label": "priority", "max": 0.02},
                          {"metric": "rule_error_rate_increase", "max": 0.001}]}


def _history(store: Path) -> list[dict[str, Any]]:
    r = subprocess.run([*CLI, "policy", "history", "--store", str(store), "--json", "--limit", "0"],
                       capture_output=True, text=True, env=_env(), timeout=60)
    assert r.returncode == 0, r.stderr
    return [orjson.loads(line) for line in r.stdout.splitlines()]


def test_a_candidate_changing_priority_on_30_percent_is_rolled_back_with_the_reason(
        served: Callable[..., Served], tmp_path: Path) -> None:
    """The shadow step measures a 0.3 change rate on priority, rolls back naming it, and v1 keeps serving."""
    s = served()
    candidate = _policy(tmp_path, "v2.yaml", "2", THIRTY_PERCENT_HIGH)
    r = _start(s.url, candidate, {**BASE_SPEC, "steps": [0, 50, 100]})
    assert r.status_code == 201, r.text
    traffic = Traffic(s.url)
    one = httpx.post(s.url + "/v1/label?explain=1", json=_events(10_000, 1)[0], headers=LABEL, timeout=10)
    assert one.headers["activelabel-arm"] == "serving"
    assert one.json()["label_meta"]["arm"] == "serving"
    status = _until(s.url, _finished, traffic)
    assert status["state"] == "rolled_back" and status["step"] == 0
    assert "check label_change_rate[priority] failed at step 0%: measured 0.3" in status["reason"]
    assert "threshold <= 0.02" in status["reason"]
    failed = [c for c in status["checks"] if c["verdict"] == "Failed"]
    assert failed[0]["metric"] == "label_change_rate[priority]" and failed[0]["value"] == pytest.approx(0.3, abs=0.01)
    after = httpx.post(s.url + "/v1/label", json=_events(20_000, 1)[0], headers=LABEL, timeout=10)
    serving_version = httpx.get(s.url + "/readyz", timeout=10).json()["policy_version"]
    assert after.headers["activelabel-policy-version"] == serving_version == status["serving_version"]
    metrics = httpx.get(s.url + "/metrics", timeout=10).text
    assert 'activelabel_rollout_aborted_total{reason="label_change_rate[priority]"} 1.0' in metrics
    assert 'activelabel_rollout_check_threshold{bound="max",check="label_change_rate[priority]"' in metrics
    report = httpx.get(s.url + "/v1/rollout/report", headers=ADMIN, timeout=10).json()
    (transition,) = report["labels"]["priority"]["transitions"]
    assert (transition["from"], transition["to"]) == ("normal", "high")
    rolled = [e for e in _history(s.store) if e["outcome"] == "rolled_back"]
    assert rolled and rolled[0]["version"] == status["candidate_version"]
    assert "label_change_rate[priority]" in rolled[0]["message"]


def test_an_equivalent_candidate_is_promoted_through_every_step(served: Callable[..., Served], tmp_path: Path) -> None:
    """A candidate that only bumps metadata.version passes 0%, 25% and 100% and then serves every event."""
    s = served()
    candidate = _policy(tmp_path, "v2.yaml", "2")
    assert _start(s.url, candidate, {**BASE_SPEC, "steps": [0, 25, 100]}).status_code == 201
    traffic = Traffic(s.url)
    arms_seen: set[str] = set()

    def promoted(st: dict[str, Any]) -> bool:
        return st["state"] not in ("progressing", "paused")

    deadline = time.monotonic() + 90
    status = _status(s.url)
    while not promoted(status) and time.monotonic() < deadline:
        r = traffic.send()
        if status["state"] == "paused" and "fewer than min_events" in status["reason"]:
            httpx.post(s.url + "/v1/rollout/resume", headers=ADMIN, timeout=10)  # a slow machine, not a verdict
        arms_seen.update(x.strip() for x in r.headers["activelabel-arm"].split(","))
        status = _status(s.url)
    assert status["state"] == "promoted", status
    assert [h["step"] for h in status["history"]] == [0, 25]
    assert "candidate" in arms_seen and "serving" in arms_seen
    metrics = httpx.get(s.url + "/metrics", timeout=10).text  # M1 per arm while the rollout ran
    assert 'activelabel_service_label_latency_seconds_count{arm="candidate",door="label"}' in metrics
    after = httpx.post(s.url + "/v1/label", json=_events(50_000, 1)[0], headers=LABEL, timeout=10)
    assert after.headers["activelabel-policy-version"] == status["candidate_version"]
    assert httpx.get(s.url + "/readyz", timeout=10).json()["policy_version"] == status["candidate_version"]
    outcomes = [e["outcome"] for e in _history(s.store)]
    assert outcomes[0] == "promoted" and "accepted" in outcomes


def test_too_little_traffic_pauses_as_inconclusive(served: Callable[..., Served], tmp_path: Path) -> None:
    """With fewer events than min_events by the end of the interval the rollout pauses: no pass, no fail."""
    s = served()
    candidate = _policy(tmp_path, "v2.yaml", "2")
    assert _start(s.url, candidate, {**BASE_SPEC, "steps": [0, 50, 100], "min_events": 100_000}).status_code == 201
    Traffic(s.url).send(50)
    status = _until(s.url, lambda st: st["state"] != "progressing", None)
    assert status["state"] == "paused" and status["step"] == 0
    assert status["reason"].startswith("Inconclusive at step 0%")
    assert "fewer than min_events 100000" in status["reason"]
    assert httpx.get(s.url + "/readyz", timeout=10).json()["policy_version"] == status["serving_version"]


def test_a_killed_service_resumes_the_rollout_at_the_same_step(served: Callable[..., Served], tmp_path: Path) -> None:
    """kill -9 once past step 0: the restarted serve has the same rollout at the same step, and it goes on to promote."""
    s = served()
    candidate = _policy(tmp_path, "v2.yaml", "2")
    assert _start(s.url, candidate, {**BASE_SPEC, "steps": [0, 50, 100]}).status_code == 201
    traffic = Traffic(s.url)
    at_50 = _until(s.url, lambda st: st["step"] == 50 or _finished(st), traffic)
    assert at_50["step"] == 50 and at_50["state"] in ("progressing", "paused")  # a slow machine may pause it already
    # No more traffic: Inconclusive at 50% (or at 100% when the last wave already passed 50%).
    paused = _until(s.url, lambda st: st["state"] != "progressing", None)
    assert paused["state"] == "paused" and paused["step"] in (50, 100)
    s.kill9()
    s.restart()
    again = _status(s.url)
    assert (again["id"], again["step"], again["state"]) == (at_50["id"], paused["step"], "paused")
    assert again["history"] == paused["history"]
    resumed = httpx.post(s.url + "/v1/rollout/resume", headers=ADMIN, timeout=10).json()
    assert resumed["state"] == "progressing"
    done = _until(s.url, _finished, traffic)
    assert done["state"] == "promoted"


def test_rollout_calls_without_the_admin_scope_are_403_and_a_failing_candidate_is_422(
        served: Callable[..., Served], tmp_path: Path) -> None:
    """A label-scoped token cannot start or read a rollout; a candidate failing its tests never enters one."""
    s = served()
    candidate = _policy(tmp_path, "v2.yaml", "2")
    for method, path in (("POST", "/v1/rollout"), ("GET", "/v1/rollout"), ("POST", "/v1/rollout/abort"),
                         ("GET", "/v1/rollout/report"), ("POST", "/v1/policy/rollback")):
        r = httpx.request(method, s.url + path, headers=LABEL, timeout=10,
                          json={"candidate": str(candidate), "spec": BASE_SPEC} if method == "POST" else None)
        assert r.status_code == 403, (path, r.text)
        assert r.json()["error"]["required_scope"] == "admin"
    refused = _start(s.url, FAILING, BASE_SPEC)
    assert refused.status_code == 422
    body = refused.json()["error"]
    assert body["code"] == "candidate_refused" and body["errors"]
    assert all("policy test" in e["message"] for e in body["errors"])
    assert httpx.get(s.url + "/v1/rollout", headers=ADMIN, timeout=10).status_code == 404
    assert _history(s.store)[0]["outcome"] == "refused"


def test_policy_rollback_swaps_back_to_an_earlier_version(served: Callable[..., Served], tmp_path: Path) -> None:
    """After a promote, `policy rollback V1 --url` serves v1 again at once, recorded in the history."""
    s = served()
    v1 = httpx.get(s.url + "/readyz", timeout=10).json()["policy_version"]
    candidate = _policy(tmp_path, "v2.yaml", "2")
    assert _start(s.url, candidate, {**BASE_SPEC, "steps": [0, 100]}).status_code == 201
    assert httpx.post(s.url + "/v1/rollout/promote", headers=ADMIN, timeout=10).json()["state"] == "promoted"
    candidate_version = httpx.get(s.url + "/readyz", timeout=10).json()["policy_version"]
    assert candidate_version != v1
    r = subprocess.run([*CLI, "policy", "rollback", v1[:20], "--url", s.url, "--token", "admin-token", "-m", "undo"],
                       capture_output=True, text=True, env=_env(), timeout=60)
    assert r.returncode == 0, r.stderr
    assert f"serving {v1}" in r.stdout
    assert httpx.get(s.url + "/readyz", timeout=10).json()["policy_version"] == v1
    top = _history(s.store)[0]
    assert (top["outcome"], top["version"], top["who"], top["message"]) == ("rollback", v1, "ops", "undo")
    shown = subprocess.run([*CLI, "policy", "show", v1[:20], "--store", str(s.store)], capture_output=True,
                           text=True, env=_env(), timeout=60)
    assert shown.returncode == 0 and orjson.loads(shown.stdout)["metadata"]["version"] == "1"
    # The API reads a version as the CLI does: a bare hex prefix, without `sha256:`.
    bare = httpx.post(s.url + "/v1/policy/rollback", headers=ADMIN, timeout=10,
                      json={"version": candidate_version[len("sha256:"):][:12]})
    assert bare.status_code == 200, bare.text
    assert httpx.get(s.url + "/readyz", timeout=10).json()["policy_version"] == candidate_version


def test_after_kill_9_the_audit_log_verifies_up_to_the_last_complete_record(
        served: Callable[..., Served], tmp_path: Path) -> None:
    """Decisions and the rollout start are audited; after kill -9 `audit verify` passes on what was written."""
    audit = tmp_path / "audit"
    s = served("--audit", str(audit))
    candidate = _policy(tmp_path, "v2.yaml", "2")
    assert _start(s.url, candidate, {**BASE_SPEC, "steps": [0, 100], "interval": "1h"}).status_code == 201
    traffic = Traffic(s.url)
    for _ in range(5):
        traffic.send()
    s.kill9()
    r = subprocess.run([*CLI, "audit", "verify", str(audit)], capture_output=True, text=True, env=_env(), timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("intact:")
    s.restart()  # the writer resumes after the last complete record
    traffic.send(10)
    s.stop()
    r = subprocess.run([*CLI, "audit", "verify", str(audit)], capture_output=True, text=True, env=_env(), timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    admin = subprocess.run([*CLI, "audit", "search", str(audit), "--kind", "admin"], capture_output=True, text=True,
                           env=_env(), timeout=60)
    actions = [orjson.loads(line)["action"] for line in admin.stdout.splitlines()]
    assert "rollout start" in actions and "rollout resume" in actions
    decisions = subprocess.run([*CLI, "audit", "search", str(audit), "--kind", "decision", "--limit", "1"],
                               capture_output=True, text=True, env=_env(), timeout=60)
    first = orjson.loads(decisions.stdout.splitlines()[0])
    assert first["door"] == "http" and first["arm"] in ("serving", "candidate")


def test_a_reload_during_a_rollout_aborts_it_and_serves_the_reloaded_policy(
        served: Callable[..., Served], tmp_path: Path) -> None:
    """The rollout compared against the old serving policy: a reload ends it as aborted, saying why."""
    s = served()
    candidate = _policy(tmp_path, "v2.yaml", "2")
    assert _start(s.url, candidate, {**BASE_SPEC, "steps": [0, 100], "interval": "1h"}).status_code == 201
    policy = tmp_path / "v1.yaml"
    policy.write_text(policy.read_text().replace('version: "1"', 'version: "1.1"'))
    reload = httpx.post(s.url + "/v1/policy/reload", headers=ADMIN, timeout=60).json()
    assert reload["accepted"] is True
    status = _status(s.url)
    assert status["state"] == "aborted"
    assert status["reason"] == f"aborted: a reload (api) made {reload['new_version']} the serving policy"
    served_now = httpx.post(s.url + "/v1/label", json=_events(0, 1)[0], headers=LABEL, timeout=10)
    assert served_now.headers["activelabel-policy-version"] == reload["new_version"]
    assert served_now.headers["activelabel-arm"] == "stable"


# Finding 4 (bad spec values -> 500, and a history row for a rollout that never started): each is a 422
# naming the field, nothing starts and the history keeps only the policy loaded at start.
REFUSED_SPECS = [
    (["just"], "a rollout spec is a mapping"),
    ({**BASE_SPEC, "key": "event.client_ip +++"}, "key: 'event.client_ip +++' is not valid CEL"),
    ({**BASE_SPEC, "key": "event."}, "key: 'event.' is not valid CEL"),
    ({**BASE_SPEC, "key": 42}, "key: 42: write record_id or a CEL expression"),
    ({**BASE_SPEC, "steps": "abc"}, "steps: 'abc': a strictly rising list"),
    ({**BASE_SPEC, "failure_limit": "x"}, "failure_limit: 'x' is not a whole number"),
    ({**BASE_SPEC, "analysis": [{"metric": "latency_p99_ratio", "max": "abc"}]}, "analysis[0].max: 'abc' is not a number"),
    ({**BASE_SPEC, "analysis": "oops"}, "analysis: 'oops': a list of checks"),
    ({**BASE_SPEC, "analysis": [{"metric": "label_change_rate", "label": "nolabel", "max": 0.1}]},
     "analysis[0].label: 'nolabel' is not a label of the serving or the candidate policy"),
    ({**BASE_SPEC, "min_events": -5, "steps": [0, 5, 5]}, "steps: [0, 5, 5]"),
]


def test_a_bad_spec_is_422_with_every_problem_and_nothing_starts(served: Callable[..., Served],
                                                                  tmp_path: Path) -> None:
    s = served()
    candidate = _policy(tmp_path, "v2.yaml", "2")
    for spec, expected in REFUSED_SPECS:
        r = _start(s.url, candidate, spec)  # type: ignore[arg-type]
        assert r.status_code == 422, (spec, r.status_code, r.text)
        error = r.json()["error"]
        assert error["code"] == "bad_spec" and "no rollout started" in error["message"]
        assert error["problems"][0].startswith(expected), error["problems"]
    several = _start(s.url, candidate, {**BASE_SPEC, "min_events": -5, "steps": [0, 5, 5], "interval": "0s"})
    assert [p.split(":")[0] for p in several.json()["error"]["problems"]] == ["steps", "interval", "min_events"]
    broken = httpx.post(s.url + "/v1/rollout", content=b'{"candidate": "x", "spec": {', headers={
        **ADMIN, "content-type": "application/json"}, timeout=10)
    assert broken.status_code == 400 and broken.json()["error"]["code"] == "bad_json"
    assert httpx.get(s.url + "/v1/rollout", headers=ADMIN, timeout=10).status_code == 404
    assert [e["outcome"] for e in _history(s.store)] == ["loaded"]
    assert "internal error" not in (tmp_path / "serve.log").read_text()
    good = _start(s.url, candidate, {**BASE_SPEC, "steps": [0, 100], "interval": "1h"})
    assert good.status_code == 201, good.text  # the refusals left nothing in the way
    assert [e["outcome"] for e in _history(s.store)] == ["accepted", "loaded"]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=_env(), timeout=60)


def test_rollout_start_with_a_bad_spec_prints_error_lines_and_exits_1(served: Callable[..., Served],
                                                                      tmp_path: Path) -> None:
    """Finding 5: a list spec or bad values print `error: SPEC.yaml: field: ...`, never a traceback."""
    s = served()
    candidate = _policy(tmp_path, "v2.yaml", "2")
    spec = tmp_path / "spec.yaml"
    cases = [("- just\n", ["a rollout spec is a mapping (key, steps, interval, analysis, ...), not a list"]),
             (yaml.safe_dump({**BASE_SPEC, "failure_limit": "x",
                              "analysis": [{"metric": "latency_p99_ratio", "max": "abc"}]}),
              ["failure_limit: 'x' is not a whole number (give 0 or more)", "analysis[0].max: 'abc' is not a number"])]
    for text, problems in cases:
        spec.write_text(text)
        r = _cli("rollout", "start", str(candidate), "--url", s.url, "--spec", str(spec), "--token", "admin-token")
        assert r.returncode == 1, r.stderr
        assert "Traceback" not in r.stderr
        assert r.stderr.splitlines() == [f"error: {spec}: {p}" for p in problems]
    # Only the service knows the policies' labels: its refusal comes back as the same lines.
    spec.write_text(yaml.safe_dump({**BASE_SPEC, "analysis": [{"metric": "label_change_rate", "label": "nolabel",
                                                               "max": 0.1}]}))
    r = _cli("rollout", "start", str(candidate), "--url", s.url, "--spec", str(spec), "--token", "admin-token")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.startswith(f"error: {spec}: analysis[0].label: 'nolabel' is not a label of the serving or "
                               "the candidate policy (labels: ")
    assert httpx.get(s.url + "/v1/rollout", headers=ADMIN, timeout=10).status_code == 404
    assert [e["outcome"] for e in _history(s.store)] == ["loaded"]


def test_abort_promote_resume_on_a_finished_rollout_are_409_and_the_cli_exits_1(
        served: Callable[..., Served], tmp_path: Path) -> None:
    """Finding 8: once aborted (or promoted) every action says the rollout is finished, and changes nothing."""
    s = served()
    candidate = _policy(tmp_path, "v2.yaml", "2")
    started = _start(s.url, candidate, {**BASE_SPEC, "steps": [0, 100], "interval": "1h"}).json()
    assert httpx.post(s.url + "/v1/rollout/abort", headers=ADMIN, timeout=10).json()["state"] == "aborted"
    rows = len(_history(s.store))
    for action in ("abort", "promote", "resume"):
        r = httpx.post(s.url + f"/v1/rollout/{action}", headers=ADMIN, timeout=10)
        assert r.status_code == 409, r.text
        error = r.json()["error"]
        assert error["code"] == "rollout_finished"
        assert error["message"].startswith(f"rollout {started['id']} is already aborted (aborted by ops); "
                                           f"there is nothing to {action}")
        cli = _cli("rollout", action, "--url", s.url, "--token", "admin-token")
        assert cli.returncode == 1, cli.stdout
        assert f"409: rollout {started['id']} is already aborted" in cli.stderr and cli.stdout == ""
    assert _status(s.url)["state"] == "aborted"
    assert len(_history(s.store)) == rows
    assert httpx.get(s.url + "/readyz", timeout=10).json()["policy_version"] == started["serving_version"]
    # Promoted is finished too: a second promote is refused, the candidate keeps serving.
    again = _start(s.url, candidate, {**BASE_SPEC, "steps": [0, 100], "interval": "1h"}).json()
    assert httpx.post(s.url + "/v1/rollout/promote", headers=ADMIN, timeout=10).json()["state"] == "promoted"
    r = httpx.post(s.url + "/v1/rollout/abort", headers=ADMIN, timeout=10)
    assert r.status_code == 409 and f"rollout {again['id']} is already promoted" in r.json()["error"]["message"]
    assert httpx.get(s.url + "/readyz", timeout=10).json()["policy_version"] == again["candidate_version"]


def test_the_cli_prints_the_services_error_message_not_its_json(served: Callable[..., Served]) -> None:
    """`rollout status` on a service with no rollout: the service's message on one line, not a Python dict."""
    s = served()
    cli = _cli("rollout", "status", "--url", s.url, "--token", "admin-token")
    assert cli.returncode == 1 and cli.stdout == ""
    assert "404: " in cli.stderr and "no rollout" in cli.stderr
    assert "{'code'" not in cli.stderr and "'message'" not in cli.stderr


def test_the_cli_says_whether_a_token_was_missing_unknown_or_lacks_the_admin_scope(served: Callable[..., Served]) -> None:
    """401 without a token or with one the service does not know, 403 with a label-only token: each says which."""
    s = served()
    missing = _cli("rollout", "status", "--url", s.url)
    unknown = _cli("rollout", "status", "--url", s.url, "--token", "not-a-token")
    label_only = _cli("policy", "rollback", "sha256:00", "--url", s.url, "--token", "label-token")
    assert missing.returncode == unknown.returncode == label_only.returncode == 1
    assert "401: no token was given" in missing.stderr
    assert "401: the service does not know the token given" in unknown.stderr
    assert "403 forbidden: this needs a token with the admin scope" in label_only.stderr


def test_rollout_start_prints_why_the_candidate_was_refused(served: Callable[..., Served], tmp_path: Path) -> None:
    """A candidate failing its own tests: the CLI prints each error the service gave, not only their count."""
    s = served()
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(BASE_SPEC))
    cli = _cli("rollout", "start", str(FAILING), "--url", s.url, "--token", "admin-token", "--spec", str(spec))
    assert cli.returncode == 1
    assert "422: the candidate was refused" in cli.stderr and "policy test" in cli.stderr


def test_feedback_follows_the_labels_of_a_promoted_candidate_and_of_a_rollback(
        served: Callable[..., Served], tmp_path: Path) -> None:
    """A candidate adds a label; once promoted, /v1/feedback takes truth for it; rolled back, it refuses it again."""
    s = served()
    candidate = _policy(tmp_path, "v2.yaml", "2",
                        "  - {id: post, label: is_post, value: true, when: 'event.method == \"POST\"'}\n")
    candidate.write_text(candidate.read_text().replace("labels:\n", "labels:\n  is_post: {type: bool, default: false}\n", 1))
    started = _start(s.url, candidate, {**BASE_SPEC, "steps": [0, 100], "interval": "1h"})
    assert started.status_code == 201, started.text
    assert httpx.post(s.url + "/v1/rollout/promote", headers=ADMIN, timeout=10).json()["state"] == "promoted"

    def truth_for_is_post() -> dict[str, Any]:
        labeled = httpx.post(s.url + "/v1/label", headers=LABEL, timeout=10,
                             json={"method": "POST", "path": "/api/x", "status": 200, "tenant_id": "t1"}).json()
        return httpx.post(s.url + "/v1/feedback", headers=ADMIN, timeout=10,
                          json={"items": [{"id": labeled["id"], "label": "is_post", "value": True}]}).json()

    assert truth_for_is_post()["accepted"] == 1
    rolled = httpx.post(s.url + "/v1/policy/rollback", headers=ADMIN, timeout=10,
                        json={"version": started.json()["serving_version"]})
    assert rolled.status_code == 200, rolled.text
    assert truth_for_is_post()["accepted"] == 0
