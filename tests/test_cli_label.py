"""`activelabel label`: JSONL in, labeled JSONL out, every bad line in the DLQ with its reason."""

from __future__ import annotations

import gzip
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson

from conftest import DATA, EXAMPLES

CLI = [sys.executable, "-m", "activelabel"]

POLICY = """
apiVersion: activelabel/v1
kind: Policy
metadata: {name: cli}
labels:
  error: {type: bool, default: false}
  band: {type: bucket, from: event.ms, bounds: [10]}
rules:
  - {id: err, label: error, value: true, when: 'event.status >= 500'}
"""


def run(*args: str, stdin: bytes | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], input=stdin, capture_output=True, cwd=cwd, timeout=120)


def read_jsonl(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def test_label_adds_a_labels_object_keeping_the_record_and_order(write_policy, tmp_path):
    """Each output line is the input object, unchanged, plus only the labels that are set, in input order."""
    policy = write_policy(POLICY)
    src = tmp_path / "in.jsonl"
    src.write_bytes(b'{"status": 503, "ms": 5, "note": "caf\\u00e9", "big": 12345678901234567890}\n{"status":200}\n')
    out = tmp_path / "out.jsonl"
    res = run("label", "--policy", str(policy), str(src), "-o", str(out))
    assert res.returncode == 0, res.stderr.decode()
    lines = out.read_bytes().splitlines()
    assert orjson.loads(lines[0])["labels"] == {"error": True, "band": "<10"}
    assert orjson.loads(lines[1]) == {"status": 200, "labels": {"error": False}}
    assert b"12345678901234567890" in lines[0] and b"caf\\u00e9" in lines[0]  # original bytes kept
    assert "2 records in = 2 labeled + 0 dead-lettered" in res.stderr.decode()


def test_every_kind_of_bad_line_goes_to_the_dlq_with_reason_line_and_bytes(write_policy, tmp_path):
    """Invalid JSON, non-objects, invalid UTF-8, oversized and too-deep lines are dead-lettered; counts add up."""
    policy = write_policy(POLICY)
    deep = b'{"a":' * 80 + b"1" + b"}" * 80
    lines = [
        b'{"status": 500}',
        b'{"status": 5',
        b"[1, 2, 3]",
        b'{"s": "\xff\xfe"}',
        b'{"pad": "' + b"x" * 3000 + b'"}',
        deep,
        b'{"status": 200}',
    ]
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\n".join(lines) + b"\n")
    out, dlq = tmp_path / "out.jsonl", tmp_path / "dlq.jsonl"
    res = run("label", "-p", str(policy), str(src), "-o", str(out), "--dlq", str(dlq), "--max-line-bytes", "2048", "--max-depth", "64")
    assert res.returncode == 0, res.stderr.decode()
    good = read_jsonl(out)
    dead = read_jsonl(dlq)
    assert [g["status"] for g in good] == [500, 200]
    assert [(d["line"], d["kind"]) for d in dead] == [
        (2, "invalid_json"), (3, "not_object"), (4, "invalid_utf8"), (5, "too_large"), (6, "too_deep")
    ]
    assert all(d["reason"] for d in dead)
    assert dead[0]["raw"] == '{"status": 5'
    assert "raw_base64" in dead[2]  # the original bytes survive even when they are not UTF-8
    assert "7 records in = 2 labeled + 5 dead-lettered" in res.stderr.decode()


def test_by_default_the_parser_limit_of_1024_levels_applies(write_policy, tmp_path):
    """Without --max-depth, 1,024 levels pass and deeper documents are dead-lettered as too deep."""
    policy = write_policy(POLICY)
    ok = b'{"a":' * 1023 + b"1" + b"}" * 1023
    deep = b'{"a":' * 1100 + b"1" + b"}" * 1100
    src = tmp_path / "in.jsonl"
    src.write_bytes(ok + b"\n" + deep + b"\n")
    out, dlq = tmp_path / "out.jsonl", tmp_path / "dlq.jsonl"
    res = run("label", "-p", str(policy), str(src), "-o", str(out), "--dlq", str(dlq))
    assert res.returncode == 0, res.stderr.decode()
    assert [d["kind"] for d in read_jsonl(dlq)] == ["too_deep"]
    assert len(out.read_bytes().splitlines()) == 1


def test_label_reads_stdin_and_gzip_and_writes_stdout(write_policy, tmp_path):
    """`-` reads stdin, .gz inputs are decompressed, and without -o the output is stdout."""
    policy = write_policy(POLICY)
    gz = tmp_path / "in.jsonl.gz"
    with gzip.open(gz, "wb") as fh:
        fh.write(b'{"status": 501}\n')
    res = run("label", "-p", str(policy), "-", str(gz), "--dlq", str(tmp_path / "d.jsonl"), stdin=b'{"status": 200}\n')
    assert res.returncode == 0, res.stderr.decode()
    out = [orjson.loads(x) for x in res.stdout.splitlines()]
    assert [o["labels"]["error"] for o in out] == [False, True]


def test_explain_flag_and_labels_field_name(write_policy, tmp_path):
    """--explain adds label_meta per record and --labels-field renames the labels object."""
    policy = write_policy(POLICY)
    src = tmp_path / "in.jsonl"
    src.write_bytes(b'{"status": 503, "ms": 50}\n')
    out = tmp_path / "o.jsonl"
    res = run("label", "-p", str(policy), str(src), "-o", str(out), "--explain", "--labels-field", "tags")
    assert res.returncode == 0, res.stderr.decode()
    rec = read_jsonl(out)[0]
    assert rec["tags"] == {"error": True, "band": ">=10"}
    assert rec["label_meta"]["labels"]["error"]["source"] == "rule:err"


def test_a_bad_policy_never_starts_a_run(write_policy, tmp_path):
    """With a policy that fails validation nothing is written and the errors are printed."""
    policy = write_policy(POLICY.replace("label: error", "label: eror"))
    src = tmp_path / "in.jsonl"
    src.write_bytes(b'{"status": 503}\n')
    out = tmp_path / "o.jsonl"
    res = run("label", "-p", str(policy), str(src), "-o", str(out))
    assert res.returncode == 1
    assert not out.exists()
    assert "eror" in res.stderr.decode() and "error" in res.stderr.decode()


def test_edge_example_labels_the_whole_apache_log_and_counts_add_up(tmp_path):
    """The shipped edge policy labels all 10,000 requests of the real Apache log; in = out + DLQ."""
    src = DATA / "http_access_log" / "apache_logs.parsed.jsonl"
    out = tmp_path / "edge.jsonl"
    res = run("label", "-p", str(EXAMPLES / "edge" / "policy.yaml"), str(src), "-o", str(out), cwd=tmp_path)
    assert res.returncode == 0, res.stderr.decode()
    recs = read_jsonl(out)
    assert len(recs) == 10_000
    assert "10000 records in = 10000 labeled + 0 dead-lettered" in res.stderr.decode()
    server_errors = [r for r in recs if r.get("status") == 500]
    assert server_errors and all(r["labels"]["priority"] == "critical" for r in server_errors)
    googlebot = [r for r in recs if "Googlebot" in (r.get("user_agent") or "")]
    assert googlebot and all(r["labels"]["bot"] for r in googlebot)
    # The pii label leaves masked (no pseudonym key here), and so does the event's own copy of it.
    assert all(r["labels"]["client"] == "[masked]" for r in recs if "client" in r["labels"])
    originals = read_jsonl(src)
    assert all(r.get("client_ip") != o.get("client_ip") for r, o in zip(recs, originals, strict=True) if o.get("client_ip"))


def test_bgl_example_labels_alert_categories_from_message_text(tmp_path):
    """The BGL policy tags kernel TLB errors from the message text without reading the label column."""
    src = DATA / "loghub" / "BGL" / "BGL_2k.labeled.jsonl"
    out = tmp_path / "bgl.jsonl"
    res = run("label", "-p", str(EXAMPLES / "bgl" / "policy.yaml"), str(src), "-o", str(out))
    assert res.returncode == 0, res.stderr.decode()
    recs = read_jsonl(out)
    assert len(recs) == 2000
    tlb = [r for r in recs if r["alert_category"] == "KERNDTLB"]
    assert tlb and all(r["labels"]["alert_category"] == "KERNDTLB" for r in tlb)
    agree = sum(r["labels"]["alert_category"] == r["alert_category"] for r in recs)
    assert agree / len(recs) > 0.95


def test_demo_labels_the_shipped_example_and_shows_a_summary(tmp_path):
    """`activelabel demo` labels the shipped requests, prints records and a summary with the DLQ count."""
    res = run("demo", "-o", str(tmp_path / "demo.jsonl"), cwd=tmp_path)
    assert res.returncode == 0, res.stderr.decode()
    text = res.stdout.decode() + res.stderr.decode()
    assert "602 records in = 600 labeled + 2 dead-lettered" in text
    assert "5/5 policy tests pass" in text


def test_file_mode_columnar_path_gives_the_per_event_labels_in_input_order(tmp_path):
    """For a policy with a columnar form, file mode labels in batches yet matches label() record by record."""
    from activelabel import Labeler

    policy = EXAMPLES / "bgl" / "policy.yaml"
    assert Labeler.from_file(policy).columnar_plan() is not None  # this policy takes the batch path
    lines = (DATA / "loghub" / "BGL" / "BGL_2k.labeled.jsonl").read_bytes().splitlines()
    src = tmp_path / "in.jsonl"
    # 5,000 records (more than one batch) with bad lines between them.
    body = []
    for i in range(5000):
        body.append(lines[i % len(lines)])
        if i in (10, 4500):
            body.append(b'{"broken": ')
    src.write_bytes(b"\n".join(body) + b"\n")
    out, dlq = tmp_path / "out.jsonl", tmp_path / "dlq.jsonl"
    res = run("label", "-p", str(policy), str(src), "-o", str(out), "--dlq", str(dlq))
    assert res.returncode == 0, res.stderr.decode()
    assert "5002 records in = 5000 labeled + 2 dead-lettered" in res.stderr.decode()
    got = read_jsonl(out)
    reference = Labeler.from_file(policy)
    expected = [reference.label(orjson.loads(lines[i % len(lines)])).labels for i in range(5000)]
    assert [r["labels"] for r in got] == expected
    assert [r["line_no"] for r in got] == [orjson.loads(lines[i % len(lines)])["line_no"] for i in range(5000)]


def test_the_summary_shows_conflicts_and_overflow(tmp_path):
    """`label --conflicts` prints, per label, how often matching rules disagreed and how many values overflowed."""
    policy = tmp_path / "p.yaml"
    policy.write_text(textwrap.dedent("""\
        apiVersion: activelabel/v1
        kind: Policy
        metadata: {name: c}
        labels:
          tier: {type: enum, values: [a, b]}
          user: {type: string, max_cardinality: 2, overflow: __other__}
        rules:
          - {id: first, label: tier, value: a, when: event.n > 0}
          - {id: second, label: tier, value: b, when: event.n > 1}
          - {id: who, label: user, value_expr: event.u}
        """))
    src = tmp_path / "in.jsonl"
    src.write_text("".join(f'{{"n": {i % 3}, "u": "u{i}"}}\n' for i in range(9)))
    res = run("label", "-p", str(policy), str(src), "-o", str(tmp_path / "out.jsonl"), "--conflicts")
    assert res.returncode == 0, res.stderr.decode()
    lines = res.stderr.decode().splitlines()
    header = next(line for line in lines if "conflicts" in line and "overflow" in line)
    assert header.index("conflicts") < header.index("overflow")
    tier = next(line for line in lines if line.strip("│┃ ").startswith("tier"))
    user = next(line for line in lines if line.strip("│┃ ").startswith("user"))
    cells = lambda line: [c.strip() for c in line.replace("┃", "│").split("│") if c.strip()]
    assert cells(tier)[-2:] == ["3", "0"]  # n == 2 matched both rules, with different values: 3 events
    assert cells(user)[-2:] == ["0", "7"]  # 9 distinct users, 2 admitted
