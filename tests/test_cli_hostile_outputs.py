"""What a user sees when output paths are bad, reports are hostile or versions are typed short.

Each test runs the real CLI in a subprocess and looks at its exit code, its stderr line
and its piped stdout: one `error:` line and no traceback for a path that cannot be
written (checked before any record is labeled), labels a candidate adds in the shadow
report, control characters from the data escaped in every text table, rule errors told
apart from reads of an absent field, and version prefixes resolved as `policy rollback` does.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

CLI = [sys.executable, "-m", "activelabel"]

SERVING = """apiVersion: activelabel/v1
kind: Policy
metadata: {name: hostile, version: "VERSION"}
labels:
  area: {type: string}
  slow: {type: bool, default: false}
rules:
  - {id: area, label: area, value_expr: event.path, when: has(event.path)}
  - {id: slow, label: slow, value: true, when: 'event.ms > 100'}
"""
# The candidate changes `area` and adds `is_post`, a label the serving policy does not have.
CANDIDATE = """apiVersion: activelabel/v1
kind: Policy
metadata: {name: hostile, version: "2"}
labels:
  area: {type: string}
  slow: {type: bool, default: false}
  is_post: {type: bool}
rules:
  - {id: area, label: area, value_expr: '"v2:" + event.path', when: has(event.path)}
  - {id: slow, label: slow, value: true, when: 'event.ms > 100'}
  - {id: post, label: is_post, value: true, when: 'event.method == "POST"'}
"""
HOSTILE_PATH = "/x\x1b[2J\x1b]0;pwned\x07\nsecond line"


def run(*args: str, cwd: Path | None = None, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300, cwd=cwd, **kwargs)


def _assert_one_error_line(r: subprocess.CompletedProcess[str], *needles: str) -> None:
    """Exit 1 with a single `error:` line naming what is wrong, and no traceback."""
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, r.stderr
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])


@pytest.fixture
def shared_dir(tmp_path: Path) -> Iterator[Path]:
    """tmp_path, made writable again after the test (so pytest can remove what a test made read-only)."""
    try:
        yield tmp_path
    finally:
        for p in [tmp_path, *tmp_path.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)


def _read_only(paths: list[Path]) -> list[str]:
    """Make ``paths`` (and what is in them) read-only; the command prefix under which that holds.

    Root ignores permission bits through two capabilities: as root, the command runs with
    them dropped from its bounding set (setpriv), so it meets the bits as any user does.
    """
    for path in paths:
        for p in [*path.rglob("*"), path]:
            p.chmod(0o555 if p.is_dir() else 0o444)
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: read-only folders cannot be made to apply")
    return [setpriv, "--bounding-set", "-dac_override,-dac_read_search"]


def _events(folder: Path, n: int = 30) -> Path:
    """Events with every kind of `ms`: a number, absent (an absent read) and a string (a wrong type)."""
    path = folder / "events.jsonl"
    with path.open("wb") as fh:
        for i in range(n):
            event: dict[str, Any] = {"path": f"/p{i % 3}", "method": "POST" if i % 2 else "GET"}
            if i % 3 == 0:
                event["ms"] = 150
            elif i % 3 == 1:
                event["ms"] = "slow"
            fh.write(orjson.dumps(event) + b"\n")
    return path


def _policies(folder: Path) -> tuple[Path, Path]:
    serving, candidate = folder / "v1.yaml", folder / "v2.yaml"
    serving.write_text(SERVING.replace("VERSION", "1"))
    candidate.write_text(CANDIDATE)
    return serving, candidate


# --- finding 5: output paths that cannot be written -------------------------------------------


def test_label_audit_into_a_regular_file_is_one_error_line_before_anything_is_labeled(tmp_path: Path) -> None:
    serving, _ = _policies(tmp_path)
    afile = tmp_path / "afile"
    afile.write_text("not a folder\n")
    out = tmp_path / "out.jsonl"
    r = run("label", str(_events(tmp_path)), "-p", str(serving), "-o", str(out), "--audit", str(afile))
    _assert_one_error_line(r, f"--audit {afile}", "is a file, not a directory", "give --audit a directory")
    assert not out.exists()  # refused before the output was opened
    r = run("label", str(_events(tmp_path)), "-p", str(serving), "-o", str(out), "--audit", str(afile / "sub"))
    _assert_one_error_line(r, str(afile), "is a file")


def test_label_audit_in_a_read_only_folder_or_log_is_one_error_line(shared_dir: Path) -> None:
    """A read-only folder, a folder under one, and an existing log of another user: refused, exit 1, no traceback."""
    serving, _ = _policies(shared_dir)
    events = _events(shared_dir)
    rolog = shared_dir / "rolog"
    made = run("label", str(events), "-p", str(serving), "-o", "/dev/null", "-q", "--audit", str(rolog))
    assert made.returncode == 0, made.stderr
    rodir = shared_dir / "rodir"
    rodir.mkdir()
    prefix = _read_only([rodir, rolog])
    for audit in (rodir, rodir / "sub", rolog):
        r = subprocess.run([*prefix, *CLI, "label", str(events), "-p", str(serving), "-o", "/dev/null", "--audit",
                            str(audit)], capture_output=True, text=True, timeout=300)
        _assert_one_error_line(r, f"--audit {audit}", "permission denied", "a directory you can write")
        assert "records in" not in r.stderr  # nothing was labeled


def test_serve_and_stream_refuse_to_start_with_an_audit_path_that_is_a_file(tmp_path: Path) -> None:
    serving, _ = _policies(tmp_path)
    afile = tmp_path / "afile"
    afile.write_text("x\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = run("serve", "-p", str(serving), "--no-auth", "--port", str(port), "--audit", str(afile))
    _assert_one_error_line(r, f"--audit {afile}", "is a file")
    r = run("stream", "-p", str(serving), "--bootstrap", f"127.0.0.1:{port}", "--input-topic", "in",
            "--output-topic", "out", "--audit", str(afile))
    _assert_one_error_line(r, f"--audit {afile}", "is a file")


def test_rollout_report_from_json_that_is_not_a_report_is_refused(tmp_path: Path) -> None:
    for i, junk in enumerate(({"hello": 1}, [1, 2], {"events": 3, "events_changed": 0, "labels": {"a": 7}})):
        path = tmp_path / f"junk{i}.json"
        path.write_bytes(orjson.dumps(junk))
        r = run("rollout", "report", "--from", str(path))
        _assert_one_error_line(r, f"{path} is not a shadow/rollout report (")
        assert r.stdout == ""


def test_output_paths_are_checked_before_labeling_and_their_folders_created_as_for_o(tmp_path: Path) -> None:
    """--shadow-report and --html: a folder that cannot exist is refused up front; a missing one is created, as -o does."""
    serving, candidate = _policies(tmp_path)
    events = _events(tmp_path)
    afile = tmp_path / "afile"
    afile.write_text("x\n")
    out = tmp_path / "out.jsonl"
    r = run("label", str(events), "-p", str(serving), "-o", str(out), "--shadow", str(candidate),
            "--shadow-report", str(afile / "x.json"))
    _assert_one_error_line(r, f"--shadow-report {afile / 'x.json'}", f"{afile} is a file, not a folder")
    assert not out.exists()  # refused before any record was labeled
    report = tmp_path / "new" / "dir" / "shadow.json"
    r = run("label", str(events), "-p", str(serving), "-o", str(tmp_path / "o2" / "out.jsonl"), "-q",
            "--shadow", str(candidate), "--shadow-report", str(report))
    assert r.returncode == 0, r.stderr
    assert orjson.loads(report.read_bytes())["events"] == 30
    r = run("rollout", "report", "--from", str(report), "--html", str(afile / "x.html"))
    _assert_one_error_line(r, f"--html {afile / 'x.html'}", f"{afile} is a file, not a folder")
    page = tmp_path / "pages" / "x.html"
    r = run("rollout", "report", "--from", str(report), "--html", str(page))
    assert r.returncode == 0, r.stderr
    assert page.read_text().startswith("<!doctype html>")


# --- findings 10, 11, 14: what the shadow report shows ------------------------------------------


@pytest.fixture
def hostile_report(tmp_path: Path) -> Path:
    """A shadow report of the candidate over events whose path holds ESC sequences and a newline."""
    serving, candidate = _policies(tmp_path)
    events = _events(tmp_path)
    with events.open("ab") as fh:
        fh.write(orjson.dumps({"path": HOSTILE_PATH, "method": "GET", "ms": 5}) + b"\n")
    report = tmp_path / "shadow.json"
    r = run("label", str(events), "-p", str(serving), "-o", "/dev/null", "-q", "--shadow", str(candidate),
            "--shadow-report", str(report))
    assert r.returncode == 0, r.stderr
    return report


def test_labels_the_candidate_adds_are_in_the_report_text_json_and_html(hostile_report: Path, tmp_path: Path) -> None:
    data = orjson.loads(hostile_report.read_bytes())
    is_post = data["labels"]["is_post"]
    assert is_post["changed"] == 15  # every POST: (unset) -> true
    assert [(t["from"], t["to"], t["count"]) for t in is_post["transitions"]] == [("(unset)", "true", 15)]
    text = run("rollout", "report", "--from", str(hostile_report))
    assert text.returncode == 0, text.stderr
    assert "is_post: transitions old -> new" in text.stdout
    assert any(line.split()[:3] == ["(unset)", "true", "15"] for line in text.stdout.splitlines())
    as_json = run("rollout", "report", "--from", str(hostile_report), "--json")
    assert orjson.loads(as_json.stdout)["labels"]["is_post"]["changed"] == 15
    page = tmp_path / "r.html"
    assert run("rollout", "report", "--from", str(hostile_report), "--html", str(page)).returncode == 0
    assert "<h3>is_post: old → new" in page.read_text()


def test_report_text_escapes_control_characters_and_keeps_one_line_per_transition(hostile_report: Path) -> None:
    r = run("rollout", "report", "--from", str(hostile_report))
    assert r.returncode == 0, r.stderr
    for raw in ("\x1b", "\x07", "second line\n"):
        assert raw not in r.stdout
    assert not any(ord(c) < 0x20 and c != "\n" for c in r.stdout)
    shown = "/x\\x1b[2J\\x1b]0;pwned\\x07\\nsecond line"
    lines = r.stdout.splitlines()
    row = [line for line in lines if line.startswith(shown)]
    assert len(row) == 1, lines
    assert f"  v2:{shown}  " in row[0]
    assert row[0].split()[-2:] == ["1", f"{hostile_report.parent / 'events.jsonl'}:31"], row
    assert not any(line.startswith("second line") for line in lines)  # the newline did not start a row


def test_report_counts_rule_errors_apart_from_reads_of_an_absent_field(hostile_report: Path, tmp_path: Path) -> None:
    """10 events have no `ms` (absent reads, normal), 10 a string `ms` (rule errors): reported apart, per version."""
    data = orjson.loads(hostile_report.read_bytes())
    assert data["rule_errors"] == {"serving": 10, "candidate": 10}
    assert data["rule_absent"]["serving"] == 10 and data["rule_absent"]["candidate"] >= 10
    text = run("rollout", "report", "--from", str(hostile_report)).stdout
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("version "))
    assert "rule errors (wrong type or value)" in lines[at] and "reads of a field with no value" in lines[at]
    assert lines[at + 2].split()[0] == "serving" and lines[at + 2].split()[-2:] == ["10", "10"]
    page = tmp_path / "r.html"
    assert run("rollout", "report", "--from", str(hostile_report), "--html", str(page)).returncode == 0
    html = page.read_text()
    assert "<th>reads of a field with no value</th>" in html and "<td>serving</td>" in html


def test_policy_history_escapes_control_characters_in_messages_and_names(tmp_path: Path) -> None:
    from activelabel.governance.history import PolicyHistory
    from activelabel.policy import load_policy

    serving, _ = _policies(tmp_path)
    store = tmp_path / "history.db"
    history = PolicyHistory(store)
    history.record(load_policy(serving), who="eve\x1b[31m", message="undo\x1b]0;pwned\x07\nforged row")
    history.close()
    r = run("policy", "history", "--store", str(store))
    assert r.returncode == 0, r.stderr
    assert "\x1b" not in r.stdout and "\x07" not in r.stdout
    assert r.stdout.count("\n") == 1  # one row, one line
    assert 'by eve\\x1b[31m  "undo\\x1b]0;pwned\\x07\\nforged row"' in r.stdout


# --- finding 15: version prefixes --------------------------------------------------------------


def _two_versions_sharing_a_first_digit(folder: Path) -> tuple[Path, Path, str, str]:
    from activelabel.policy import load_policy

    seen: dict[str, tuple[Path, str]] = {}
    for n in range(1, 200):
        path = folder / f"p{n}.yaml"
        path.write_text(SERVING.replace("VERSION", str(n)))
        version = load_policy(path).version
        first = version[len("sha256:")]
        if first in seen:
            return seen[first][0], path, seen[first][1], version
        seen[first] = (path, version)
    raise AssertionError("no two versions share a first digit")


def test_policy_show_takes_a_bare_prefix_and_refuses_an_ambiguous_one_naming_both(tmp_path: Path) -> None:
    from activelabel.governance.history import PolicyHistory
    from activelabel.policy import load_policy

    p1, p2, v1, v2 = _two_versions_sharing_a_first_digit(tmp_path)
    store = tmp_path / "history.db"
    history = PolicyHistory(store)
    for path in (p1, p2):
        history.record(load_policy(path))
    history.close()
    bare, whole = run("policy", "show", v1[7:13], "--store", str(store)), run("policy", "show", v1[:13], "--store", str(store))
    assert bare.returncode == whole.returncode == 0, bare.stderr
    assert bare.stdout == whole.stdout and bare.stdout.strip()
    assert bare.stderr.startswith(v1)
    r = run("policy", "show", v1[7], "--store", str(store))
    _assert_one_error_line(r, "ambiguous", v1, v2)


def test_audit_search_version_takes_a_unique_prefix_and_refuses_an_ambiguous_one(tmp_path: Path) -> None:
    p1, p2, v1, v2 = _two_versions_sharing_a_first_digit(tmp_path)
    events, audit = _events(tmp_path, 5), tmp_path / "audit"
    for path in (p1, p2):
        assert run("label", str(events), "-p", str(path), "-o", "/dev/null", "-q", "--audit", str(audit)).returncode == 0
    for given in (v1[:13], v1[7:13], v1):
        r = run("audit", "search", str(audit), "--version", given, "--kind", "decision")
        assert r.returncode == 0, r.stderr
        records = [orjson.loads(line) for line in r.stdout.splitlines()]
        assert len(records) == 5 and all(rec["bundles"]["hostile"]["revision"] == v1 for rec in records), given
    r = run("audit", "search", str(audit), "--version", v1[:8])
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "ambiguous" in r.stderr and v1 in r.stderr and v2 in r.stderr
    assert r.stdout == ""


def test_a_service_rollout_report_has_the_new_labels_and_rule_errors_apart_from_absent_reads(tmp_path: Path) -> None:
    """What `rollout report --url` shows for a rollout on `serve`: the same as `label --shadow` (shadow step 0)."""
    from activelabel import Labeler
    from activelabel.governance.rollout import Rollout, RolloutSpec
    from activelabel.governance.rollout_render import rollout_text

    serving_file, candidate_file = _policies(tmp_path)
    serving, candidate = Labeler.from_file(serving_file), Labeler.from_file(candidate_file)
    spec = RolloutSpec.from_mapping({"key": "record_id", "steps": [0, 100], "interval": "10s", "min_events": 1,
                                     "analysis": [{"metric": "rule_error_rate_increase", "max": 0.001}]})
    rollout = Rollout("r-new", spec, serving=serving, candidate=candidate)
    for i, line in enumerate(_events(tmp_path).read_bytes().splitlines()):
        rollout.label(orjson.loads(line), record_id=str(i))
    report = rollout.report()
    assert [(t["from"], t["to"], t["count"]) for t in report["labels"]["is_post"]["transitions"]] == [
        ("(unset)", "true", 15)]
    assert report["rule_errors"] == {"serving": 10, "candidate": 10}
    assert report["rule_absent"]["serving"] == 10
    assert "is_post: transitions old -> new" in rollout_text(report)
