"""File mode and the record loop: every record written or dead-lettered, valid JSON out, streaming stdin, parallel workers."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from activelabel import Labeler
from activelabel.engine.parallel import merge_sources, merge_stats
from activelabel.engine.record_loop import RecordLoop, Where
from activelabel.policy import load_policy_text
from conftest import DATA, EXAMPLES

CLI = [sys.executable, "-m", "activelabel"]
EDGE = EXAMPLES / "edge" / "policy.yaml"
APACHE = DATA / "http_access_log" / "apache_logs.parsed.jsonl"

POLICY = """
apiVersion: activelabel/v1
kind: Policy
metadata: {name: filemode}
labels:
  error: {type: bool, default: false}
  band: {type: bucket, from: event.ms, bounds: [10, 100]}
  kind: {type: enum, values: [api, page]}
rules:
  - {id: err, label: error, value: true, when: 'event.status >= 500'}
  - {id: api, label: kind, value: api, when: 'event.path.startsWith("/api")'}
  - {id: page, label: kind, value: page, when: 'event.path.endsWith(".html")'}
"""


def run(*args: str, stdin: bytes | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    return subprocess.run([*CLI, *args], input=stdin, capture_output=True, cwd=cwd, timeout=300, env=env)


class Collected:
    """A RecordOutput keeping what the loop writes, in memory (the loop's public output protocol)."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.dead: list[tuple[int, bytes | None, str, str]] = []

    def write_many(self, where: list[Where], lines: list[bytes]) -> list[tuple[int, str, str]]:
        self.lines.extend(lines)
        return []

    def dead_letter(self, where: Where, raw: bytes | None, kind: str, reason: str) -> None:
        self.dead.append((where[1], raw, kind, reason))


def deep_labels_line(depth: int) -> bytes:
    return b'{"labels":1,"x":' + b"[" * depth + b"]" * depth + b"}"


# ---- issue 13 item 1: a record that cannot be re-written is dead-lettered, the run goes on


def test_a_record_too_deep_to_rewrite_is_dead_lettered_and_the_next_line_is_labeled(tmp_path):
    """The issue's repro: a `labels` field beside 300 nested lists goes to the DLQ with a reason; the next line is labeled."""
    src = tmp_path / "p.jsonl"
    src.write_bytes(deep_labels_line(300) + b"\n" + b'{"status":200}\n')
    out = tmp_path / "out.jsonl"
    res = run("label", "-p", str(EDGE), str(src), "-o", str(out))
    assert res.returncode == 0, res.stderr.decode()
    assert [orjson.loads(x)["status"] for x in out.read_bytes().splitlines()] == [200]
    dead = [orjson.loads(x) for x in (tmp_path / "out.jsonl.dlq.jsonl").read_bytes().splitlines()]
    assert [(d["line"], d["kind"]) for d in dead] == [(1, "unwritable")]
    assert "254 levels" in dead[0]["reason"] and "--labels-field" in dead[0]["reason"]
    assert "2 records in = 1 labeled + 1 dead-lettered" in res.stderr.decode()
    assert "100.0%" in res.stderr.decode() and "200.0%" not in res.stderr.decode()  # coverage of the labeled record only


@pytest.mark.parametrize("depth", [255, 600, 1022])
@pytest.mark.parametrize("explain", [False, True])
def test_the_stream_workers_loop_dead_letters_unwritable_messages_and_labels_the_rest(depth, explain):
    """The loop as the Kafka worker runs it (message values, jsonl=False) dead-letters a too-deep record and goes on."""
    labeler = Labeler.from_file(EDGE)
    loop = RecordLoop(labeler, jsonl=False, explain=explain)
    out = Collected()
    values = [b'{"status":500}', deep_labels_line(depth), None, b'{"status":404}']
    counts = loop.run([("batch", values)], out)
    assert counts.records_in == 4 and counts.labeled == 2 and counts.dead_lettered == 2
    assert [orjson.loads(x)["status"] for x in out.lines] == [500, 404]
    assert sorted((pos, kind) for pos, _raw, kind, _reason in out.dead) == [(1, "unwritable"), (2, "empty")]
    assert [raw for pos, raw, _k, _r in out.dead if pos == 1] == [values[1]]  # the original bytes, for the DLQ topic


# ---- issue 13 item 2: every output line valid JSON, in = out + DLQ for every byte sequence


def test_whitespace_and_control_character_lines_come_out_valid_or_dead_lettered(tmp_path):
    """`{\\r}` and friends are labeled as valid JSON; `\\x0b`/`\\x0c` lines are dead-lettered, not dropped."""
    lines = [b"{\r}", b"{ \r}", b'{"a":1\r}', b'{"a":1\t\r }', b"\x0b", b"\x0c", b"{\x0c}", b" \t\r", b""]
    res = run("label", "-p", str(EDGE), "-", "--dlq", str(tmp_path / "d.jsonl"), stdin=b"\n".join(lines) + b"\n")
    assert res.returncode == 0, res.stderr.decode()
    outs = [orjson.loads(x) for x in res.stdout.splitlines()]
    assert [{k: v for k, v in o.items() if k != "labels"} for o in outs] == [{}, {}, {"a": 1}, {"a": 1}]
    dead = [orjson.loads(x) for x in (tmp_path / "d.jsonl").read_bytes().splitlines()]
    assert [(d["line"], d["kind"]) for d in dead] == [(5, "invalid_json"), (6, "invalid_json"), (7, "invalid_json")]
    assert "7 records in = 4 labeled + 3 dead-lettered" in res.stderr.decode()


#: One labeler for every generated example (compiling per example would dominate); its
#: policy has no cardinality guard, so its labels are the exact evaluator's whatever it saw before.
PROPERTY_LABELER = Labeler(load_policy_text(textwrap.dedent(POLICY)))


def check_loop(lines: list[bytes], *, jsonl: bool, chunk: int = 4096) -> None:
    """Run ``lines`` through the loop and check each one is labeled as valid JSON or rightly dead-lettered."""
    labeler = PROPERTY_LABELER
    out = Collected()
    counts = RecordLoop(labeler, jsonl=jsonl, chunk_records=chunk).run([("in", lines)], out)

    def is_blank(raw: bytes) -> bool:
        return jsonl and not raw.rstrip(b"\r").strip(b" \t\r\n")

    records = [raw for raw in lines if not is_blank(raw)]
    assert counts.records_in == len(records) == len(out.lines) + len(out.dead)
    assert counts.labeled == len(out.lines) and counts.dead_lettered == len(out.dead)
    dead_at = {pos for pos, *_ in out.dead}
    kept = [raw for pos, raw in enumerate(lines) if not is_blank(raw) and pos not in dead_at]
    assert len(kept) == len(out.lines)
    for raw, line in zip(kept, out.lines):
        event = orjson.loads(raw[:-1] if jsonl and raw.endswith(b"\r") else raw)
        got = orjson.loads(line)  # every output line is valid JSON
        assert b"\n" not in line or not jsonl  # a message value keeps its own whitespace; a line has none to keep
        labels = got.pop("labels")
        event.pop("labels", None)
        assert got == event  # the record, unchanged, plus its labels
        assert labels == labeler.label_exact(orjson.loads(raw.rstrip(b"\r") if jsonl else raw))
    for pos, raw, kind, _reason in out.dead:
        assert raw == (lines[pos][:-1] if jsonl and lines[pos].endswith(b"\r") else lines[pos])  # the line, less its line ending
        try:
            value = orjson.loads(raw.rstrip(b"\r") if jsonl else raw)
        except orjson.JSONDecodeError:
            continue  # undecodable: rightly dead
        assert not isinstance(value, dict) or kind == "unwritable", (raw, kind)


JSON_BYTES = st.sampled_from([b"{", b"}", b"[", b"]", b'"', b":", b",", b" ", b"\t", b"\r", b"\n", b"\x0b", b"\x0c",
                              b"\x00", b"\xef\xbb\xbf", b"\xff", b"1", b"-", b"e", b"null", b'"status"', b'"labels"',
                              b"\\", b"\xc3\xa9", b"true", b"2.5"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.binary(max_size=40), st.lists(JSON_BYTES, max_size=20).map(b"".join)), max_size=30))
def test_any_bytes_lines_give_valid_json_out_and_counts_that_add_up(lines):
    """For arbitrary byte lines, every output line is valid JSON equal to its input plus labels, and in = out + DLQ."""
    check_loop([raw.replace(b"\n", b"") for raw in lines], jsonl=True)


WS = st.text(alphabet=" \t\r", max_size=3)
WS_NL = st.text(alphabet=" \t\r\n", max_size=3)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.text(max_size=8),
                    st.floats(allow_nan=False, allow_infinity=False))
VALUES = st.recursive(SCALARS, lambda kids: st.one_of(st.lists(kids, max_size=3),
                                                        st.dictionaries(st.text(max_size=5), kids, max_size=3)), max_leaves=8)


@st.composite
def spaced_object(draw: Any, ws: Any) -> bytes:
    """A JSON object written with random JSON whitespace around every token."""

    def write(value: Any) -> bytes:
        pad = lambda: draw(ws).encode()
        if isinstance(value, dict):
            members = [pad() + orjson.dumps(k) + pad() + b":" + write(v) for k, v in value.items()]
            return pad() + b"{" + b",".join(members) + pad() + b"}" + pad()
        if isinstance(value, list):
            return pad() + b"[" + b",".join(write(v) for v in value) + pad() + b"]" + pad()
        return pad() + orjson.dumps(value) + pad()

    obj = draw(st.dictionaries(st.sampled_from(["status", "path", "labels", "ms", "x", ""]), VALUES, max_size=5))
    return write(obj)


@settings(max_examples=300, deadline=None)
@given(st.lists(spaced_object(WS), min_size=1, max_size=20))
def test_valid_objects_with_odd_whitespace_are_all_labeled_in_file_mode(lines):
    """Valid JSON objects with whitespace around any token are every one labeled, as valid JSON, in input order."""
    check_loop(lines, jsonl=True)


@settings(max_examples=200, deadline=None)
@given(st.lists(spaced_object(WS_NL), min_size=1, max_size=20), st.sampled_from([1, 3, 4096]))
def test_message_values_with_newlines_as_whitespace_are_labeled_as_valid_json(values, chunk):
    """Kafka message values (not lines: newlines are whitespace there) come out as valid single-line JSON."""
    check_loop(values, jsonl=False, chunk=chunk)


# ---- issue 13 item 12: stdin streams


def test_label_on_a_pipe_answers_each_line_before_the_next_is_written(write_policy):
    """Fed one line at a time through a pipe, `label` writes each labeled line before the next input line arrives."""
    policy = write_policy(POLICY)
    proc = subprocess.Popen([*CLI, "label", "-p", str(policy), "-q"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=policy.parent)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        for status in (200, 503, 404):
            proc.stdin.write(orjson.dumps({"status": status, "path": "/api/x"}) + b"\n")
            proc.stdin.flush()
            deadline = time.monotonic() + 60  # generous for a loaded machine; the old code never answers
            ready: list[Any] = []
            while not ready and time.monotonic() < deadline:
                ready, _, _ = select.select([proc.stdout], [], [], 0.5)
            assert ready, f"no output for status {status} while the input pipe stays open"
            line = proc.stdout.readline()
            assert orjson.loads(line)["labels"]["error"] is (status >= 500)
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)
    assert proc.returncode == 0


# ---- issue 13 item 14: a run that labels nothing fails; a BOM is not a bad record


def test_a_csv_given_to_label_exits_non_zero_with_a_json_lines_hint(tmp_path):
    """Every line dead-lettered (a CSV) exits 1 and says the input must be JSON Lines."""
    src = tmp_path / "data.csv"
    src.write_text("status,path\n503,/api\n200,/x\n")
    res = run("label", "-p", str(EDGE), str(src), "-o", str(tmp_path / "out.jsonl"))
    assert res.returncode == 1
    text = res.stderr.decode()
    assert "none of the 3 records could be labeled" in text and "JSON Lines" in text
    assert "out.jsonl.dlq.jsonl" in text


def test_max_dlq_ratio_fails_a_run_with_too_many_dead_letters(tmp_path):
    """--max-dlq-ratio 0.25 fails a run where half the lines are bad, and passes one where a quarter are."""
    src = tmp_path / "in.jsonl"
    src.write_bytes(b'{"status":200}\nnot json\n{"status":500}\n{"status":404}\n')
    res = run("label", "-p", str(EDGE), str(src), "-o", str(tmp_path / "o.jsonl"), "--max-dlq-ratio", "0.25", "-q")
    assert res.returncode == 0, res.stderr.decode()
    src.write_bytes(b'{"status":200}\nnot json\n[]\n{"status":404}\n')
    res = run("label", "-p", str(EDGE), str(src), "-o", str(tmp_path / "o.jsonl"), "--max-dlq-ratio", "0.25", "-q")
    assert res.returncode == 1
    assert "2 of 4 records (50.0%) were dead-lettered" in res.stderr.decode()


def test_a_utf8_byte_order_mark_on_line_one_is_not_dead_lettered(tmp_path):
    """A file saved with a BOM labels its first line like the others, in one process and with workers."""
    src = tmp_path / "bom.jsonl"
    src.write_bytes(b'\xef\xbb\xbf{"status":503}\n{"status":200}\n')
    res = run("label", "-p", str(EDGE), str(src), "-o", str(tmp_path / "o.jsonl"))
    assert res.returncode == 0, res.stderr.decode()
    assert [orjson.loads(x)["labels"]["error_class"] for x in (tmp_path / "o.jsonl").read_bytes().splitlines()] == [
        "server_error", "ok"]
    assert not (tmp_path / "o.jsonl.dlq.jsonl").exists()


# ---- issue 13 item 18: the DLQ file only when there is a dead letter, and never next to /dev/null


def test_label_to_stdout_without_dead_letters_creates_no_dlq_file(tmp_path):
    """A clean run to stdout leaves no empty ./activelabel.dlq.jsonl behind."""
    res = run("label", "-p", str(EDGE), "-q", stdin=b'{"status":200}\n', cwd=tmp_path)
    assert res.returncode == 0, res.stderr.decode()
    assert orjson.loads(res.stdout)["labels"]["error_class"] == "ok"
    assert list(tmp_path.iterdir()) == []


def test_output_to_dev_null_puts_dead_letters_in_the_working_directory(tmp_path):
    """-o /dev/null aims the DLQ at ./activelabel.dlq.jsonl (said in the summary), not /dev/null.dlq.jsonl."""
    res = run("label", "-p", str(EDGE), "-o", "/dev/null", "-", stdin=b'{"status":200}\nnope\n', cwd=tmp_path)
    assert res.returncode == 0, res.stderr.decode()
    dead = [orjson.loads(x) for x in (tmp_path / "activelabel.dlq.jsonl").read_bytes().splitlines()]
    assert [d["raw"] for d in dead] == ["nope"]
    assert "dead letters (invalid_json: 1): activelabel.dlq.jsonl" in res.stderr.decode()
    assert not Path("/dev/null.dlq.jsonl").exists()


# ---- issue 9: splicing is byte-exact; --workers gives the one-process output


def test_spliced_output_keeps_the_input_bytes_and_equals_reserialising_apart_from_key_order(tmp_path):
    """On the real Apache log each output line is its input line's bytes plus a labels member: what re-serialising gave."""
    # The edge policy without its privacy parts (they rewrite the event on purpose: tests/test_privacy_doors.py).
    text = EDGE.read_text().replace("sensitivity: pii", "sensitivity: internal").replace("protect: pseudonymize", "")
    text = text.replace("redact:\n  entities: [IP_ADDRESS]\n  with: pseudonymize\n", "")
    assert "redact:" not in text
    policy = tmp_path / "policy.yaml"
    policy.write_text(text)
    (tmp_path / "known_clients.csv").write_bytes((EDGE.parent / "known_clients.csv").read_bytes())
    out = tmp_path / "out.jsonl"
    res = run("label", "-p", str(policy), str(APACHE), "-o", str(out), "-q")
    assert res.returncode == 0, res.stderr.decode()
    labeler = Labeler.from_file(policy)
    ins = APACHE.read_bytes().splitlines()
    outs = out.read_bytes().splitlines()
    assert len(ins) == len(outs) == 10_000
    for raw, line in zip(ins, outs):
        assert line.startswith(raw[:-1] + b',"labels":{')  # the original bytes, untouched
        event = orjson.loads(raw)
        labels = labeler.label(event).labels
        assert orjson.loads(line) == {**event, "labels": labels}  # what orjson.dumps({**event, labels}) says


def big_input(path: Path, records: int) -> list[bytes]:
    """A file over the parallel threshold with blank lines, a BOM, CRLF endings and bad lines mixed in."""
    lines = [b"\xef\xbb\xbf" + b'{"status":503,"path":"/api/first","ms":3}']
    for i in range(records):
        if i % 997 == 0:
            lines.append(b"not json %d" % i)
        elif i % 1499 == 0:
            lines.append(b"")
        elif i % 1201 == 0:
            lines.append(deep_labels_line(300))
        else:
            lines.append(b'{"status":%d,"path":"/%s/%d.html","ms":%d,"pad":"%s"}\r'
                         % (200 + i % 7 * 50, b"api" if i % 3 else b"www", i, i % 150, b"x" * (i % 90)))
    path.write_bytes(b"\n".join(lines) + b"\n")
    return lines


def test_workers_give_the_one_process_output_dead_letters_and_summary(write_policy, tmp_path):
    """--workers 2 on a 6 MB file writes the same bytes, the same dead letters and the same summary as --workers 1."""
    policy = write_policy(POLICY)
    src = tmp_path / "big.jsonl"
    lines = big_input(src, 60_000)
    assert src.stat().st_size > 4 << 20
    runs = {}
    for n in ("1", "2"):
        out, dlq = tmp_path / f"out{n}.jsonl", tmp_path / f"dlq{n}.jsonl"
        res = run("label", "-p", str(policy), str(src), "-o", str(out), "--dlq", str(dlq), "--workers", n)
        assert res.returncode == 0, res.stderr.decode()
        summary = res.stderr.decode()
        first = summary.splitlines()[0]
        rest = summary.split("labeled output")[1].replace(f"out{n}.", "outN.").replace(f"dlq{n}.", "dlqN.")
        runs[n] = (out.read_bytes(), dlq.read_bytes(), first.split("   ")[0], rest)
    assert runs["1"] == runs["2"]
    out, dlq, counts, _rest = runs["2"]
    records = sum(1 for raw in lines if raw.strip())
    assert counts == f"{records} records in = {len(out.splitlines())} labeled + {len(dlq.splitlines())} dead-lettered"
    assert orjson.loads(out.splitlines()[0])["labels"]["error"] is True  # the BOM line
    assert [orjson.loads(d)["line"] for d in dlq.splitlines()][:2] == [2, 999]


def test_merged_worker_counters_equal_one_labelers_counters():
    """Counters of labelers that each saw part of the input, merged, are the counters of one labeler that saw it all."""
    events = [orjson.loads(x) for x in APACHE.read_bytes().splitlines()[:3000]]
    policy = EXAMPLES / "edge" / "policy.yaml"
    whole, a, b = Labeler.from_file(policy), Labeler.from_file(policy), Labeler.from_file(policy)
    for e in events:
        whole.labels_only(e)
    for e in events[:1234]:
        a.labels_only(e)
    for e in events[1234:]:
        b.labels_only(e)
    merged = merge_stats([a.stats(), b.stats()])
    assert merged is not None
    want = whole.stats()
    assert (merged.events, merged.rule_hits, merged.rule_errors, merged.label_set) == (
        want.events, want.rule_hits, want.rule_errors, want.label_set)
    assert merge_sources([a.hits_by_source(), b.hits_by_source()]) == whole.hits_by_source()


GUARDED = """
apiVersion: activelabel/v1
kind: Policy
metadata: {name: guarded}
labels:
  kind: {type: enum, values: [api, page]}
  route: {type: string, max_cardinality: 25, overflow: __other__}
  slow_route: {type: string, max_cardinality: 3, window: 3600, overflow: many}
rules:
  - {id: api, label: kind, value: api, when: 'event.path.startsWith("/api")'}
  - {id: page, label: kind, value: page, when: 'event.path.endsWith(".html")'}
  - {id: route, label: route, value_expr: 'event.path', when: 'has(event.path)'}
  - {id: slow, label: slow_route, value_expr: 'event.path', when: 'event.ms > 140'}
"""


def test_guarded_labels_label_on_workers_with_the_one_process_output(write_policy, tmp_path):
    """Cardinality guards no rule reads: --workers 2 writes the bytes, dead letters and overflow counts of one process."""
    policy = write_policy(GUARDED)
    src = tmp_path / "big.jsonl"
    big_input(src, 60_000)
    # Records that already carry a labels object are serialised whole: their overflow is put in there too.
    extra = [b'{"labels":{"old":1},"path":"/api/again/%d","ms":150}' % i for i in range(0, 3000, 7)]
    # ...even when their last field holds an object equal to the labels before the guard (found in review).
    extra += [b'{"labels":{},"path":"/api/tail/%d","ms":150,"tail":{"kind":"api","route":"/api/tail/%d",'
              b'"slow_route":"/api/tail/%d"}}' % (i, i, i) for i in range(300)]
    with src.open("ab") as fh:
        fh.write(b"\n".join(extra) + b"\n")
    runs = {}
    for n in ("1", "2"):
        out, dlq = tmp_path / f"out{n}.jsonl", tmp_path / f"dlq{n}.jsonl"
        res = run("label", "-p", str(policy), str(src), "-o", str(out), "--dlq", str(dlq), "--workers", n)
        assert res.returncode == 0, res.stderr.decode()
        summary = res.stderr.decode().replace(f"out{n}.", "outN.").replace(f"dlq{n}.", "dlqN.")
        runs[n] = (out.read_bytes(), dlq.read_bytes(), summary)
    assert "2 workers" in runs["2"][2] and "one process" not in runs["2"][2]
    assert runs["1"][:2] == runs["2"][:2]
    strip = [line.split("   ")[0] for line in runs["1"][2].splitlines()]  # rates differ, not the figures
    assert strip == [line.split("   ")[0].replace(", 2 workers", "") for line in runs["2"][2].splitlines()]
    out = [orjson.loads(line) for line in runs["2"][0].splitlines()]
    routes = [r["labels"]["route"] for r in out]
    assert len(set(routes) - {"__other__"}) == 25 and routes.count("__other__") > 50_000
    assert routes[:25] == [r["path"] for r in out[:25]]  # the first 25 distinct, in input order
    slow = [r["path"] for r in out if r.get("ms", 0) > 140]
    assert {r["labels"]["slow_route"] for r in out if "slow_route" in r["labels"]} == {*slow[:3], "many"}
    tails = [r for r in out if r["path"].startswith("/api/tail/")]
    assert len(tails) == 300 and all(r["tail"]["route"] == r["path"] and r["labels"]["route"] == "__other__"
                                     for r in tails)
    again = [r for r in out if r["path"].startswith("/api/again/")]
    assert len(again) == len(extra) - 300 and all(r["labels"] == {"kind": "api", "route": "__other__", "slow_route": "many"}
                                            for r in again)


def test_a_guarded_label_that_a_rule_reads_labels_in_one_process_and_says_why(write_policy, tmp_path):
    """A rule that reads a guarded label must see the guarded value: that run stays in one process."""
    text = GUARDED.replace("rules:\n", "  hot: {type: bool, default: false}\nrules:\n")
    policy = write_policy(text + "  - {id: hot, label: hot, value: true, when: 'labels.route == \"/api/x\"'}\n")
    src = tmp_path / "big.jsonl"
    big_input(src, 60_000)
    res = run("label", "-p", str(policy), str(src), "-o", str(tmp_path / "out.jsonl"), "--workers", "2")
    assert res.returncode == 0, res.stderr.decode()
    assert "one process: label route has a cardinality guard" in res.stderr.decode()
    assert "a rule reads it" in res.stderr.decode()
