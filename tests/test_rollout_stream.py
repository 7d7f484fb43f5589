"""Rollouts in a real `activelabel stream` worker against the real Kafka-protocol broker (Tansu) on loopback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import yaml

from activelabel.stream import ARM_HEADER, POLICY_VERSION_HEADER
from conftest import edge_variant as _policy
from test_stream_kafka import WAIT_S, headers_of, kafka, produce, read_topic, topics  # noqa: F401 - fixtures

REPO = Path(__file__).resolve().parents[1]
EDGE = REPO / "examples" / "edge"
CLI = [sys.executable, "-m", "activelabel"]
THIRTY_PERCENT_HIGH = """  - id: every-third-tenant-high
    label: priority
    value: high
    when: event.n % 10 < 3
"""
SPEC = {"key": "event.tenant_id", "interval": "1s", "min_events": 100, "consecutive_success_limit": 1,
        "analysis": [{"metric": "label_change_rate", "label": "priority", "max": 0.02},
                     {"metric": "rule_error_rate_increase", "max": 0.001}]}




def _version(path: Path) -> str:
    from activelabel import Labeler

    return Labeler.from_file(path).version


class Worker:
    """`activelabel stream --rollout` as a process, restartable on the same files."""

    def __init__(self, tmp_path: Path, bootstrap: str, names: tuple[str, str, str], candidate: Path,
                 spec: dict[str, Any]) -> None:
        self.spec_file = tmp_path / "spec.yaml"
        self.spec_file.write_text(yaml.safe_dump(spec))
        self.state_file = tmp_path / "spec.yaml.state.json"
        self.log = tmp_path / "worker.log"
        inp, out, dlq = names
        self.args = [*CLI, "stream", "--input-topic", inp, "--output-topic", out, "--dlq-topic", dlq,
                     "--bootstrap", bootstrap, "--group", f"g-{inp}", "--policy", str(_policy(tmp_path, "v1.yaml", "1")),
                     "--rollout", str(self.spec_file), "--candidate", str(candidate), "--batch-size", "100",
                     "--poll-timeout", "0.2", "--session-timeout-ms", "3000", "--json",
                     "--audit", str(tmp_path / "audit")]
        self.proc = self.start()

    def start(self) -> subprocess.Popen[str]:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=self.log.open("a"), text=True, env=env)
        return self.proc

    def state(self) -> dict[str, Any]:
        try:
            return dict(orjson.loads(self.state_file.read_bytes()))
        except (OSError, orjson.JSONDecodeError):
            return {}

    def stop(self) -> dict[str, Any]:
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=60)
        assert self.proc.returncode == 0, self.log.read_text()
        return dict(orjson.loads(out.splitlines()[-1]))


def _events(start: int, n: int) -> list[dict[str, Any]]:
    return [{"value": orjson.dumps({"status": 200, "path": f"/page/{i}", "user_agent": "Mozilla/5.0", "bytes": 900,
                                    "n": i, "tenant_id": f"t{i % 97}", "client_ip": f"10.0.{i % 200}.{i % 7}"})}
            for i in range(start, start + n)]


def _feed_until(bootstrap: str, topic: str, worker: Worker, done: Callable[[dict[str, Any]], bool],
                sent: list[int], timeout_s: float = 120.0) -> dict[str, Any]:
    """Produce waves of events and read the persisted state until ``done`` holds (or a deadline)."""
    deadline = time.monotonic() + timeout_s
    state = worker.state()
    while not done(state):
        assert time.monotonic() < deadline, f"the rollout never got there; state {state}\n{worker.log.read_text()}"
        assert worker.proc.poll() is None, worker.log.read_text()
        produce(bootstrap, topic, _events(sent[0], 200))
        sent[0] += 200
        state = worker.state()
    return state


def test_stream_rolls_back_a_candidate_changing_priority_on_30_percent(kafka, topics, tmp_path: Path) -> None:  # noqa: F811
    """The worker measures 0.3 on priority at step 0, rolls back with the reason, and keeps producing v1."""
    names = topics()
    candidate = _policy(tmp_path, "v2.yaml", "2", THIRTY_PERCENT_HIGH)
    worker = Worker(tmp_path, kafka, names, candidate, {**SPEC, "steps": [0, 50, 100]})
    sent = [0]
    state = _feed_until(kafka, names[0], worker, lambda st: st.get("state") not in (None, "progressing"), sent)
    stats = worker.stop()
    assert state["state"] == "rolled_back"
    assert "check label_change_rate[priority] failed at step 0%: measured 0.3" in state["reason"]
    assert stats["rollout"]["state"] == "rolled_back"
    assert stats["messages_in"] == stats["labeled"] + stats["dead_lettered"]
    v1 = _version(tmp_path / "v1.yaml")
    out = read_topic(kafka, names[1])
    assert len(out) == stats["labeled"]
    assert {(headers_of(m)[POLICY_VERSION_HEADER], headers_of(m)[ARM_HEADER]) for m in out} == {(v1.encode(), b"serving")}
    verify = subprocess.run([*CLI, "audit", "verify", str(tmp_path / "audit")], capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_stream_resumes_after_kill_9_at_the_same_step_and_promotes_through_every_step(
        kafka, topics, tmp_path: Path) -> None:  # noqa: F811
    """kill -9 at step 50%: the restarted worker resumes at 50%, promotes, and each message names its version and arm."""
    names = topics()
    candidate = _policy(tmp_path, "v2.yaml", "2")
    worker = Worker(tmp_path, kafka, names, candidate, {**SPEC, "steps": [0, 50, 100]})
    sent = [0]
    at_50 = _feed_until(kafka, names[0], worker, lambda st: st.get("step_index") == 1 or st.get("state") not in
                        (None, "progressing"), sent)
    assert (at_50["state"], at_50["step_index"]) == ("progressing", 1)
    worker.proc.send_signal(signal.SIGKILL)
    worker.proc.wait(timeout=30)
    before = at_50["saved_at"]
    worker.start()
    deadline = time.monotonic() + WAIT_S
    while worker.state().get("saved_at") == before:  # the restarted worker saves the resumed state first
        assert time.monotonic() < deadline and worker.proc.poll() is None, worker.log.read_text()
        time.sleep(0.05)
    resumed = worker.state()
    assert (resumed["id"], resumed["step_index"]) == (at_50["id"], 1)
    done = _feed_until(kafka, names[0], worker, lambda st: st.get("state") != "progressing", sent)
    stats = worker.stop()
    assert done["state"] == "promoted", done
    assert [h["step"] for h in done["history"]] == [0, 50]
    v1, v2 = _version(tmp_path / "v1.yaml").encode(), _version(candidate).encode()
    pairs = {(headers_of(m)[ARM_HEADER], headers_of(m)[POLICY_VERSION_HEADER]) for m in read_topic(kafka, names[1])}
    assert pairs == {(b"serving", v1), (b"candidate", v2)}
    assert stats["rollout"]["state"] == "promoted"


def test_stream_with_a_bad_rollout_spec_prints_error_lines_and_exits_1_before_anything_starts(tmp_path: Path) -> None:
    """Finding 5 in the worker: each problem is an `error: SPEC.yaml: field: ...` line; no broker is contacted,
    no state file or audit log is written."""
    spec = tmp_path / "spec.yaml"
    candidate = _policy(tmp_path, "v2.yaml", "2")
    base = [*CLI, "stream", "--input-topic", "in", "--output-topic", "out", "--bootstrap", "127.0.0.1:1",
            "--policy", str(_policy(tmp_path, "v1.yaml", "1")), "--rollout", str(spec), "--candidate", str(candidate),
            "--audit", str(tmp_path / "audit")]
    cases = [("- just\n", ["a rollout spec is a mapping (key, steps, interval, analysis, ...), not a list"]),
             (yaml.safe_dump({**SPEC, "failure_limit": "x", "analysis": [
                 {"metric": "latency_p99_ratio", "max": "abc"},
                 {"metric": "label_change_rate", "label": "nolabel", "max": 0.1}]}),
              ["failure_limit: 'x' is not a whole number (give 0 or more)", "analysis[0].max: 'abc' is not a number",
               "analysis[1].label: 'nolabel' is not a label of the serving or the candidate policy (labels: "])]
    for text, problems in cases:
        spec.write_text(text)
        r = subprocess.run(base, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                           timeout=120)
        assert r.returncode == 1, r.stderr
        assert "Traceback" not in r.stderr
        lines = r.stderr.splitlines()
        assert len(lines) == len(problems), lines
        for line, problem in zip(lines, problems, strict=True):
            assert line.startswith(f"error: {spec}: {problem}"), line
    assert not (tmp_path / "spec.yaml.state.json").exists()
    assert not (tmp_path / "audit").exists()
