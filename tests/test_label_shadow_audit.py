"""`activelabel label --shadow` and `--audit`: what is served never changes; the report and the log are right."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

from conftest import edge_variant as _edge

REPO = Path(__file__).resolve().parents[1]
EDGE = REPO / "examples" / "edge"
CLI = [sys.executable, "-m", "activelabel"]
THIRTY_PERCENT_HIGH = """  - id: every-third-tenant-high
    label: priority
    value: high
    when: event.n % 10 < 3
"""
# No enrichers: large chunks go through the column-wise engine.
COLUMNAR = """
apiVersion: activelabel/v1
kind: Policy
metadata: {name: cli, version: "VERSION"}
labels:
  error: {type: bool, default: false}
  band: {type: bucket, from: event.ms, bounds: [10]}
rules:
  - {id: err, label: error, value: true, when: 'event.status >= THRESHOLD'}
"""


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300)




def _events(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "events.jsonl"
    with path.open("wb") as fh:
        for i in range(n):
            fh.write(orjson.dumps({"status": 200 + (i % 400), "path": f"/page/{i}", "user_agent": "Mozilla/5.0",
                                   "bytes": 900, "n": i, "ms": i % 20, "client_ip": f"10.0.{i % 200}.{i % 7}"}) + b"\n")
        fh.write(b"not json\n")
    return path


def test_the_served_output_is_byte_identical_with_and_without_a_shadow(tmp_path: Path) -> None:
    """Labeled output and dead letters are the same bytes with --shadow (and --audit) as without, on both engine paths."""
    events = _events(tmp_path, 5000)
    cases = [
        (_edge(tmp_path, "v1.yaml", "1"), _edge(tmp_path, "v2.yaml", "2", THIRTY_PERCENT_HIGH)),
        (tmp_path / "c1.yaml", tmp_path / "c2.yaml"),
    ]
    (tmp_path / "c1.yaml").write_text(COLUMNAR.replace("VERSION", "1").replace("THRESHOLD", "500"))
    (tmp_path / "c2.yaml").write_text(COLUMNAR.replace("VERSION", "2").replace("THRESHOLD", "400"))
    for n, (serving, candidate) in enumerate(cases):
        plain, shadowed = tmp_path / f"plain{n}.jsonl", tmp_path / f"shadow{n}.jsonl"
        assert run("label", str(events), "-p", str(serving), "-o", str(plain), "-q").returncode == 0
        r = run("label", str(events), "-p", str(serving), "-o", str(shadowed), "-q", "--shadow", str(candidate),
                "--shadow-report", str(tmp_path / f"r{n}.json"), "--audit", str(tmp_path / f"audit{n}"))
        assert r.returncode == 0, r.stderr
        assert plain.read_bytes() == shadowed.read_bytes()
        assert Path(f"{plain}.dlq.jsonl").read_bytes() == Path(f"{shadowed}.dlq.jsonl").read_bytes()
        report = orjson.loads((tmp_path / f"r{n}.json").read_bytes())
        assert report["events"] == 5000 and report["events_changed"] > 0


def test_the_shadow_report_counts_each_transition_and_reads_back_with_rollout_report(tmp_path: Path) -> None:
    """30% of events go normal -> high under the candidate; `rollout report --from` prints it with example lines."""
    serving, candidate = _edge(tmp_path, "v1.yaml", "1"), _edge(tmp_path, "v2.yaml", "2", THIRTY_PERCENT_HIGH)
    events = _events(tmp_path, 1000)
    report_file = tmp_path / "shadow.json"
    r = run("label", str(events), "-p", str(serving), "-o", str(tmp_path / "out.jsonl"), "--shadow", str(candidate),
            "--shadow-report", str(report_file))
    assert r.returncode == 0, r.stderr
    assert "1000 records compared" in r.stderr
    report = orjson.loads(report_file.read_bytes())
    priority = report["labels"]["priority"]
    moved = {(t["from"], t["to"]): t for t in priority["transitions"]}
    assert sum(t["count"] for t in priority["transitions"]) == priority["changed"]
    assert priority["changed_because"] == {"rule:every-third-tenant-high": priority["changed"]}
    # What the candidate alone would have labeled, line by line, is the ground truth of the diff.
    assert run("label", str(events), "-p", str(candidate), "-o", str(tmp_path / "cand.jsonl"), "-q").returncode == 0
    served = [orjson.loads(x)["labels"] for x in (tmp_path / "out.jsonl").read_bytes().splitlines()]
    alone = [orjson.loads(x)["labels"] for x in (tmp_path / "cand.jsonl").read_bytes().splitlines()]
    differ = [(a.get("priority"), b.get("priority")) for a, b in zip(served, alone, strict=True)
              if a.get("priority") != b.get("priority")]
    assert priority["changed"] == len(differ) > 200
    assert {pair: n for pair, n in ((k, v["count"]) for k, v in moved.items())} == {
        pair: differ.count(pair) for pair in set(differ)}
    assert all(example.startswith(f"{events}:") for t in moved.values() for example in t["examples"])
    assert report["labels"]["client"]["sensitive"] is True
    text = run("rollout", "report", "--from", str(report_file))
    assert text.returncode == 0, text.stderr
    assert "priority: transitions old -> new" in text.stdout
    assert "rule:every-third-tenant-high" in text.stdout
    as_json = run("rollout", "report", "--from", str(report_file), "--json")
    assert orjson.loads(as_json.stdout)["labels"]["priority"]["changed"] == priority["changed"]


def test_a_failing_shadow_candidate_is_refused_before_anything_is_labeled(tmp_path: Path) -> None:
    """A candidate whose own tests fail is refused with exit 1 and no output is written."""
    serving = _edge(tmp_path, "v1.yaml", "1")
    failing = REPO / "tests" / "fixtures" / "service" / "failing_tests_policy.yaml"
    out = tmp_path / "out.jsonl"
    r = run("label", str(_events(tmp_path, 10)), "-p", str(serving), "-o", str(out), "--shadow", str(failing))
    assert r.returncode == 1
    assert "policy test" in r.stderr
    assert not out.exists()


def test_label_audit_writes_one_verifiable_record_per_decision_without_sensitive_values(tmp_path: Path) -> None:
    """At level Full each decision is logged with its labels, the pii label protected (masked: no key here); the log verifies."""
    serving = _edge(tmp_path, "v1.yaml", "1")
    audit = tmp_path / "audit"
    r = run("label", str(_events(tmp_path, 300)), "-p", str(serving), "-o", str(tmp_path / "out.jsonl"), "-q",
            "--audit", str(audit), "--audit-level", "Full")
    assert r.returncode == 0, r.stderr
    verify = run("audit", "verify", str(audit))
    assert verify.returncode == 0 and verify.stdout.startswith("intact: 300 records")
    records = [orjson.loads(line) for line in run("audit", "show", str(audit), "-n", "0").stdout.splitlines()]
    assert len(records) == 300
    first = records[0]
    assert first["door"] == "cli" and first["level"] == "Full" and first["decision_id"].endswith("events.jsonl:1")
    assert first["result"]["client"] == "[masked]" and "/result/client" in first["masked"]
    assert "priority" in first["result"]
    events = [orjson.loads(line) for line in _events(tmp_path, 300).read_bytes().splitlines() if line.startswith(b"{")]
    addresses = {e["client_ip"] for e in events if e.get("client_ip")}
    segments = "".join(p.read_text() for p in (audit / "segments").glob("*.jsonl"))
    assert addresses and not any(a in segments for a in addresses)  # no address in clear anywhere in the log


def _records(audit: Path) -> list[dict[str, object]]:
    shown = run("audit", "show", str(audit), "-n", "0")
    assert shown.returncode == 0, shown.stderr
    return [{k: v for k, v in orjson.loads(line).items() if k not in ("timestamp", "prev")}
            for line in shown.stdout.splitlines()]


def test_label_audit_on_two_workers_writes_the_records_one_process_writes(tmp_path: Path) -> None:
    """At Metadata a large file is labeled on two workers, and its audit log holds the one-process records, in order."""
    from activelabel.engine.parallel import MIN_PARALLEL_BYTES

    policy = tmp_path / "c1.yaml"
    policy.write_text(COLUMNAR.replace("VERSION", "1").replace("THRESHOLD", "500"))
    events = tmp_path / "big.jsonl"
    line = b'{"status":%d,"ms":%d,"path":"/page/%d","pad":"' + b"x" * 160 + b'"}\n'
    with events.open("wb") as fh:
        for i in range(MIN_PARALLEL_BYTES // 180 + 2000):
            fh.write(b"\n" if i % 997 == 5 else b"not json\n" if i % 1499 == 7 else line % (200 + i % 400, i % 20, i))
    runs = {}
    for workers in ("1", "2"):
        audit = tmp_path / f"audit{workers}"
        r = run("label", str(events), "-p", str(policy), "-o", str(tmp_path / f"out{workers}.jsonl"), "--workers", workers,
                "--audit", str(audit), "--audit-level", "Metadata")
        assert r.returncode == 0, r.stderr
        assert ("2 workers" in r.stderr) == (workers == "2") and "one process" not in r.stderr
        assert run("audit", "verify", str(audit)).returncode == 0
        runs[workers] = _records(audit)
    assert runs["1"] == runs["2"]
    assert len(runs["2"]) == len((tmp_path / "out2.jsonl").read_bytes().splitlines())
    assert runs["2"][6]["decision_id"] == f"{events}:9"  # line 6 is blank, line 8 not JSON: ids are line numbers
    assert (tmp_path / "out1.jsonl").read_bytes() == (tmp_path / "out2.jsonl").read_bytes()


def test_label_audit_above_metadata_labels_in_one_process_and_says_so(tmp_path: Path) -> None:
    """At level Full every record needs its event and labels, so --workers 2 labels in one process and says why."""
    from activelabel.engine.parallel import MIN_PARALLEL_BYTES

    policy = tmp_path / "c1.yaml"
    policy.write_text(COLUMNAR.replace("VERSION", "1").replace("THRESHOLD", "500"))
    events = tmp_path / "big.jsonl"
    events.write_bytes((b'{"status":503,"ms":3,"pad":"' + b"x" * 200 + b'"}\n') * (MIN_PARALLEL_BYTES // 200))
    r = run("label", str(events), "-p", str(policy), "-o", str(tmp_path / "out.jsonl"), "--workers", "2",
            "--audit", str(tmp_path / "audit"), "--audit-level", "Full")
    assert r.returncode == 0, r.stderr
    assert "one process: --shadow, and --audit above level Metadata" in r.stderr


def test_label_audit_killed_mid_run_verifies_and_the_next_run_goes_on(tmp_path: Path) -> None:
    """kill -9 while `label --audit` reads a pipe: what was written verifies, and a second run continues the log."""
    import signal
    import time

    policy = tmp_path / "c1.yaml"
    policy.write_text(COLUMNAR.replace("VERSION", "1").replace("THRESHOLD", "500"))
    audit = tmp_path / "audit"
    proc = subprocess.Popen([*CLI, "label", "-", "-p", str(policy), "-o", str(tmp_path / "out.jsonl"), "-q",
                             "--audit", str(audit)], stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None
    try:
        deadline = time.monotonic() + 120
        sent = 0
        segment = audit / "segments" / "000000000000.jsonl"
        while not (segment.exists() and segment.stat().st_size > 0):  # the pipe's first blocks are labeled as they come
            assert time.monotonic() < deadline, "nothing reached the audit log"
            proc.stdin.write(b"".join(b'{"status":%d,"ms":%d}\n' % (200 + i % 400, i % 20) for i in range(sent, sent + 500)))
            proc.stdin.flush()
            sent += 500
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    first = run("audit", "verify", str(audit))
    assert first.returncode == 0, first.stdout
    kept = int(first.stdout.split("intact: ")[1].split(" records")[0])
    assert kept > 0
    events = _events(tmp_path, 200)
    r = run("label", str(events), "-p", str(policy), "-o", str(tmp_path / "out2.jsonl"), "-q", "--audit", str(audit))
    assert r.returncode == 0, r.stderr
    again = run("audit", "verify", str(audit))
    assert again.returncode == 0 and again.stdout.startswith(f"intact: {kept + 200} records"), again.stdout


def test_label_exits_1_when_its_audit_writer_process_dies(tmp_path: Path) -> None:
    """If the writer process is killed, `label` stops with exit 1 naming it, and what it wrote still verifies."""
    import contextlib
    import os
    import signal
    import time

    policy = tmp_path / "c1.yaml"
    policy.write_text(COLUMNAR.replace("VERSION", "1").replace("THRESHOLD", "500"))
    audit = tmp_path / "audit"
    proc = subprocess.Popen([*CLI, "label", "-", "-p", str(policy), "-o", str(tmp_path / "out.jsonl"), "-q",
                             "--audit", str(audit)], stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None and proc.stderr is not None
    try:
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
        deadline = time.monotonic() + 120
        while not (children.exists() and children.read_text().split()):  # the writer is forked when the log opens
            assert time.monotonic() < deadline and proc.poll() is None, "no writer process appeared"
        writer = int(children.read_text().split()[0])
        os.kill(writer, signal.SIGKILL)
        with contextlib.suppress(BrokenPipeError):  # label stops reading once it finds out
            for i in range(0, 20_000, 500):
                proc.stdin.write(b"".join(b'{"status":%d,"ms":%d}\n' % (200 + j % 400, j % 20) for j in range(i, i + 500)))
                proc.stdin.flush()
            proc.stdin.close()
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = proc.stderr.read().decode()
    assert code == 1 and "audit writer process" in stderr, stderr
    assert run("audit", "verify", str(audit)).returncode == 0


REDACTING = """
apiVersion: activelabel/v1
kind: Policy
metadata: {name: redacting}
labels:
  from_bot: {type: bool, default: false}
  slow: {type: bool, default: false}
redact:
  entities: [IP_ADDRESS]
rules:
  - {id: bot, label: from_bot, value: true, when: 'event.raw.contains("bot")'}
  - {id: slow, label: slow, value: true, when: 'event.ms > 500'}
"""


def test_audit_above_metadata_writes_only_the_fields_rules_read_redacted_as_the_output_is(tmp_path: Path) -> None:
    """Request and Full records carry the event fields the policy reads (OPA's input), after the policy's redact:
    a client address inside a read field is masked in the log as in the output, and unread fields are not written."""
    policy = tmp_path / "p.yaml"
    policy.write_text(REDACTING)
    events = tmp_path / "e.jsonl"
    events.write_bytes(b"".join(orjson.dumps({"raw": f"203.0.113.{i} GET /x googlebot", "ms": 100 * i,
                                              "referrer": f"http://198.51.100.{i}/", "n": i}) + b"\n"
                                for i in range(1, 9)))
    for level in ("Request", "Full"):
        audit = tmp_path / f"audit-{level}"
        r = run("label", str(events), "-p", str(policy), "-o", str(tmp_path / f"out-{level}.jsonl"),
                "--audit", str(audit), "--audit-level", level)
        assert r.returncode == 0, r.stderr
        log = b"".join(p.read_bytes() for p in sorted((audit / "segments").glob("*.jsonl")))
        assert b"203.0.113." not in log and b"198.51.100." not in log  # nothing of an address, read or not
        records = [orjson.loads(line) for line in run("audit", "show", str(audit)).stdout.splitlines()]
        decisions = [rec for rec in records if rec["kind"] == "decision"]
        assert len(decisions) == 8
        assert all(set(rec["input"]) == {"raw", "ms"} for rec in decisions)  # referrer and n are never read
        assert all(rec["input"]["raw"].endswith(" GET /x googlebot") and "/input/raw" in rec["masked"]
                   for rec in decisions)
    out = (tmp_path / "out-Full.jsonl").read_bytes()
    assert b"203.0.113." not in out  # the labeled output was redacted the same way
