"""The decision audit log: canonical bytes, Merkle tree, signed checkpoints, and `audit verify` on tampering."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from activelabel import Labeler
from activelabel.governance._merkle import canonical_json, leaf_hash, merkle_root, node_hash
from activelabel.governance.audit import AuditLevel, AuditLog, LevelPolicy, read_records, search_records, verify_log

REPO = Path(__file__).resolve().parents[1]
EDGE = REPO / "examples" / "edge" / "policy.yaml"
CLI = [sys.executable, "-m", "activelabel"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_canonical_bytes_are_rfc8785(value: object) -> None:
    """Our canonical JSON is byte-identical to the reference RFC 8785 implementation."""
    assert canonical_json(value) == rfc8785.dumps(value)


def _mth(leaves: list[bytes]) -> bytes:
    """RFC 9162 §2.1.1 MTH, written from the RFC's recursive definition."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return node_hash(_mth(leaves[:k]), _mth(leaves[k:]))


def test_merkle_root_follows_rfc9162_for_every_size() -> None:
    """The incremental tree gives the RFC's root for every size from 0 to 70 leaves."""
    leaves = [leaf_hash(str(i).encode()) for i in range(70)]
    for n in range(71):
        assert merkle_root(leaves[:n]) == _mth(leaves[:n])
    assert leaf_hash(b"").hex() == "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"


def _write_log(directory: Path, n: int = 50, **kwargs: object) -> Labeler:
    labeler = Labeler.from_file(EDGE)
    events = [orjson.loads(line) for line in (REPO / "examples/edge/requests.jsonl").read_bytes().splitlines()[:n]
              if line.startswith(b"{")]
    with AuditLog(directory, checkpoint_every=10, **kwargs) as log:  # type: ignore[arg-type]
        for i, event in enumerate(events):
            log.log_decision(labeler.label(event), door="cli", policy_name="edge-requests", record_id=f"r{i}",
                             event=event)
        log.log_admin("reload", actor="ana", version=labeler.version)
    return labeler


def _verify(directory: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "audit", "verify", str(directory), *extra], capture_output=True, text=True, check=False)


def _lines(directory: Path) -> tuple[Path, list[bytes]]:
    segment = sorted((directory / "segments").glob("*.jsonl"))[0]
    return segment, segment.read_bytes().splitlines(keepends=True)


def test_an_intact_log_verifies_with_exit_0(tmp_path: Path) -> None:
    """`audit verify` exits 0 on an untouched log and says how many records and checkpoints it checked."""
    _write_log(tmp_path / "audit")
    done = _verify(tmp_path / "audit")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "intact: 51 records" in done.stdout
    note = sorted((tmp_path / "audit" / "checkpoints").glob("*.note"))[-1].read_text()
    origin, size, root = note.splitlines()[:3]
    assert origin.startswith("activelabel.audit/") and size == "51" and len(root) == 44
    assert "\n\n\u2014 activelabel-audit " in note  # C2SP signed-note signature line


@pytest.mark.parametrize("tamper, bad_index", [
    ("edit_value", 7), ("edit_byte_invalid_json", 7), ("delete", 7), ("swap", 7), ("insert", 7), ("edit_last", 50),
])
def test_tampering_fails_verification_at_the_right_record(tmp_path: Path, tamper: str, bad_index: int) -> None:
    """An edited byte, a deleted, swapped or inserted record each fail `audit verify` naming the first bad index."""
    directory = tmp_path / "audit"
    _write_log(directory)
    segment, lines = _lines(directory)
    if tamper == "edit_value":
        lines[7] = lines[7].replace(b'"door":"cli"', b'"door":"cLi"')
    elif tamper == "edit_byte_invalid_json":
        lines[7] = lines[7][:10] + b"\x00" + lines[7][11:]
    elif tamper == "delete":
        del lines[7]
    elif tamper == "swap":
        lines[7], lines[8] = lines[8], lines[7]
    elif tamper == "insert":
        lines.insert(7, lines[7])
    elif tamper == "edit_last":
        lines[50] = lines[50].replace(b'"actor":"ana"', b'"actor":"eve"')
    segment.write_bytes(b"".join(lines))
    done = _verify(directory)
    assert done.returncode == 1, done.stdout
    assert f"BROKEN at record {bad_index}:" in done.stdout


def test_truncation_is_caught_by_the_signed_checkpoint(tmp_path: Path) -> None:
    """Cutting the last records off fails verification: the newest checkpoint signed more records than remain."""
    directory = tmp_path / "audit"
    _write_log(directory)
    segment, lines = _lines(directory)
    segment.write_bytes(b"".join(lines[:45]))
    done = _verify(directory)
    assert done.returncode == 1
    assert "BROKEN at record 45: truncated" in done.stdout


def test_a_torn_tail_verifies_up_to_the_last_complete_record_and_the_log_resumes(tmp_path: Path) -> None:
    """A partial last line (kill -9 mid-write) is reported with its offset; reopening moves it aside and goes on."""
    directory = tmp_path / "audit"
    _write_log(directory)
    segment, _ = _lines(directory)
    with segment.open("ab") as fh:
        fh.write(b'{"index":51,"kind":"deci')
    done = _verify(directory)
    assert done.returncode == 0
    assert "torn tail of 24 bytes begins at byte" in done.stdout and "after record 50" in done.stdout
    with AuditLog(directory) as log:
        log.log_admin("restart", actor="ops")
    result = verify_log(directory)
    assert result.ok and result.records == 52 and not result.torn_tail


def test_a_replaced_public_key_is_caught_with_an_out_of_band_key(tmp_path: Path) -> None:
    """Checkpoints re-signed with another key fail against the operator's own copy of the public key."""
    directory = tmp_path / "audit"
    _write_log(directory)
    good_pub = tmp_path / "good.pub"
    good_pub.write_bytes((directory / "keys" / "audit.pub").read_bytes())
    other = tmp_path / "other"
    _write_log(other)
    for note in (directory / "checkpoints").glob("*.note"):
        note.unlink()
    (directory / "keys" / "audit.pub").write_bytes((other / "keys" / "audit.pub").read_bytes())
    for note in (other / "checkpoints").glob("*.note"):
        (directory / "checkpoints" / note.name).write_bytes(note.read_bytes())
    assert _verify(directory, "--key", str(good_pub)).returncode == 1


def test_retention_removes_old_segments_and_the_rest_still_verifies(tmp_path: Path) -> None:
    """Retention deletes whole old segments, logs what it removed, and verification of the remainder passes."""
    now = [1_000_000.0]
    directory = tmp_path / "audit"
    labeler = Labeler.from_file(EDGE)
    with AuditLog(directory, checkpoint_every=5, segment_max_bytes=2_000, clock=lambda: now[0]) as log:
        for i in range(60):
            log.log_decision(labeler.label({"status": 200, "path": f"/p{i}"}), door="cli", policy_name="edge",
                             record_id=f"r{i}")
            now[0] += 60
        segments_before = len(list((directory / "segments").glob("*.jsonl")))
        removed = log.apply_retention(max_age_s=30 * 60)
    assert segments_before > 3 and removed > 0
    assert len(list((directory / "segments").glob("*.jsonl"))) < segments_before
    result = verify_log(directory)
    assert result.ok, result.problem
    assert result.retained_from == removed
    admin = list(search_records(directory, kind="admin"))
    assert admin[-1]["action"] == "retention" and admin[-1]["details"]["removed_records"] == removed


def test_clock_jumps_do_not_reorder_the_log(tmp_path: Path) -> None:
    """A clock that goes backwards leaves records in write order and the log verifiable."""
    times = iter([100.0, 50.0, 10.0, 200.0, 5.0] * 10)
    directory = tmp_path / "audit"
    with AuditLog(directory, clock=lambda: next(times)) as log:
        for i in range(8):
            log.log_admin("tick", actor="clock", n=i)
    records = [r for r in search_records(directory, kind="admin")]
    assert [r["details"]["n"] for r in records] == list(range(8))
    assert [r["index"] for r in records] == list(range(8))
    assert verify_log(directory).ok


def test_level_policy_first_match_wins_and_sensitive_values_are_not_written(tmp_path: Path) -> None:
    """The first matching level rule decides; at Full, pii label values and the inputs they come from are erased."""
    labeler = Labeler.from_file(EDGE)
    event = {"status": 503, "path": "/pay/1", "user_agent": "curl/8", "client_ip": "203.0.113.9"}
    decision = labeler.label(event)
    sensitivity = {name: spec.sensitivity for name, spec in labeler.policy.labels.items()}
    policy = LevelPolicy.from_mapping({"rules": [
        {"level": "None", "doors": ["ext_authz"]},
        {"level": "Full", "doors": ["cli"]},
    ]})
    directory = tmp_path / "audit"
    with AuditLog(directory, level_policy=policy, sensitivity_of=sensitivity, sensitive_inputs=["client_ip"]) as log:
        assert log.log_decision(decision, door="ext_authz", policy_name="edge") is AuditLevel.NONE
        assert log.log_decision(decision, door="http", policy_name="edge") is AuditLevel.NONE
        assert log.log_decision(decision, door="cli", policy_name="edge", record_id="x", event=event) is AuditLevel.FULL
    (record,) = list(search_records(directory, decision_id="x"))
    assert record["result"]["priority"] == decision.labels["priority"]
    pii = [name for name, s in sensitivity.items() if s == "pii" and name in decision.labels]
    assert pii, "the edge policy sets a pii label on this event"
    for name in pii:
        assert name not in record["result"] and f"/result/{name}" in record["erased"]
    assert "/input/client_ip" in record["erased"] and record["input"]["path"] == "/pay/1"
    assert "203.0.113.9" not in (directory / "segments" / "000000000000.jsonl").read_text()


def test_writes_after_close_are_counted_as_dropped(tmp_path: Path) -> None:
    """A record that cannot be written is counted in activelabel_audit_dropped_total, never lost unseen."""
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    log = AuditLog(tmp_path / "audit", registry=registry)
    log.close()
    log.log_admin("late", actor="x")
    assert registry.get_sample_value("activelabel_audit_dropped_total", {"reason": "closed"}) == 1.0


def test_audit_search_and_show_print_json_lines(tmp_path: Path) -> None:
    """`audit search --id` and `audit show` print matching records as JSON lines a pipe can read."""
    directory = tmp_path / "audit"
    labeler = _write_log(directory)
    done = subprocess.run([*CLI, "audit", "search", str(directory), "--id", "r3"], capture_output=True, text=True,
                          check=True)
    (record,) = [orjson.loads(line) for line in done.stdout.splitlines()]
    assert record["decision_id"] == "r3" and record["bundles"]["edge-requests"]["revision"] == labeler.version
    shown = subprocess.run([*CLI, "audit", "show", str(directory), "--from", "10", "-n", "3"], capture_output=True,
                           text=True, check=True)
    assert [orjson.loads(line)["index"] for line in shown.stdout.splitlines()] == [10, 11, 12]


def test_extending_the_tree_in_runs_gives_the_tree_of_single_appends() -> None:
    """Leaves appended in runs of any length give the same subtrees and root as one at a time."""
    from activelabel.governance._merkle import MerkleFrontier

    leaves = [leaf_hash(str(i).encode()) for i in range(600)]
    for run in (1, 2, 3, 7, 64, 100, 255, 600):
        one, runs = MerkleFrontier(), MerkleFrontier()
        for i in range(0, len(leaves), run):
            for leaf in leaves[i:i + run]:
                one.append(leaf)
            runs.extend(leaves[i:i + run])
            assert runs.subtrees == one.subtrees and runs.root() == _mth(leaves[:i + len(leaves[i:i + run])])


names = st.lists(st.text(min_size=1, max_size=8), min_size=0, max_size=5, unique=True)


@settings(max_examples=150, deadline=None)
@given(ids=st.lists(st.text(max_size=12), min_size=1, max_size=6), labels=names, policy_name=st.text(max_size=8),
       arm=st.text(max_size=6), door=st.text(max_size=6))
def test_metadata_records_joined_from_pieces_are_rfc8785(tmp_path_factory: pytest.TempPathFactory, ids: list[str],
                                                         labels: list[str], policy_name: str, arm: str,
                                                         door: str) -> None:
    """A Metadata record built from pre-rendered pieces is byte-identical to the reference RFC 8785 form, any text."""
    from activelabel.governance.audit import Outcome

    directory = tmp_path_factory.mktemp("audit")
    outcome = Outcome(labels, {name: f"rule:{name[::-1]}" for name in labels})
    with AuditLog(directory) as log:
        assert log.log_outcomes(ids, [0] * len(ids), [outcome], door=door, policy_name=policy_name,
                                version="sha256:ab/1", arm=arm) == len(ids)
    lines = (directory / "segments" / "000000000000.jsonl").read_bytes().splitlines()
    assert len(lines) == len(ids)
    for line, record_id in zip(lines, ids, strict=True):
        record = orjson.loads(line)
        assert rfc8785.dumps(record) == line
        assert record["decision_id"] == record_id and record["labels_set"] == labels and record["arm"] == arm
    assert verify_log(directory).ok


@settings(max_examples=100, deadline=None)
@given(prefix=st.one_of(st.text(max_size=12), st.just("bad\ud800:")), first=st.integers(0, 10**12), gaps=st.lists(st.integers(1, 3), min_size=1, max_size=6),
       consecutive=st.booleans(), labels=names)
def test_numbered_ids_rendered_by_the_writer_are_rfc8785(tmp_path_factory: pytest.TempPathFactory, prefix: str,
                                                          first: int, gaps: list[int], consecutive: bool,
                                                          labels: list[str]) -> None:
    """``FILE:LINE`` ids given as a prefix and numbers (a range or a list with gaps) give the same canonical records."""
    from activelabel.governance.audit import NumberedIds, Outcome

    numbers: list[int] | range = range(first, first + len(gaps)) if consecutive else [
        first + sum(gaps[:k]) for k in range(len(gaps))]
    ids = NumberedIds(prefix, numbers)
    directory = tmp_path_factory.mktemp("audit")
    outcome = Outcome(labels, {name: f"rule:{name}" for name in labels})
    with AuditLog(directory) as log:
        written = log.log_outcomes(ids, [0] * len(ids), [outcome], door="cli", policy_name="p", version="sha256:ab/1")
    lines = (directory / "segments" / "000000000000.jsonl").read_bytes().splitlines()
    if any(0xD800 <= ord(c) <= 0xDFFF for c in prefix):  # no JSON form: left out and counted, never written broken
        assert written == 0 and lines == [] and log.dropped == {"unencodable": len(ids)}
        return
    assert written == len(lines) == len(ids)
    for line, number in zip(lines, numbers, strict=True):
        record = orjson.loads(line)
        assert rfc8785.dumps(record) == line
        assert record["decision_id"] == f"{prefix}{number}"
    assert verify_log(directory).ok


def test_the_bulk_path_writes_the_records_the_decision_path_writes(tmp_path: Path) -> None:
    """Records written from source codes (no Decisions) equal those written from whole Decisions, but for the time."""
    from activelabel.engine.record_loop import RecordLoop
    from activelabel.governance.observers import AuditObserver, cli_record_id, cli_record_ids

    labeler = Labeler.from_file(EDGE)
    raws = [line for line in (REPO / "examples/edge/requests.jsonl").read_bytes().splitlines() if line.startswith(b"{")]
    blocks = [(("requests.jsonl", 1), raws[:300]), (("requests.jsonl", 301), raws[300:])]

    class Discard:
        def write_many(self, where: object, lines: list[bytes]) -> list[tuple[int, str, str]]:
            return []

        def dead_letter(self, *args: object) -> None:
            return None

    records = []
    for name, kwargs in (("codes", {"record_ids_of": cli_record_ids}), ("decisions", {})):
        directory = tmp_path / name
        with AuditLog(directory) as log:
            observer = AuditObserver(log, door="cli", policy=labeler.policy, record_id_of=cli_record_id, **kwargs)
            # A plain function around the observer hides observe_codes: the loop builds Decisions for it.
            counts = RecordLoop(labeler, observer=observer if name == "codes" else (lambda w, e, d, o=observer: o(w, e, d)),
                                chunk_records=128).run(blocks, Discard())
        assert verify_log(directory).ok
        records.append([{k: v for k, v in r.items() if k not in ("timestamp", "prev")} for r in read_records(directory)])
        assert len(records[-1]) == counts.labeled > 500
    assert records[0] == records[1]
    assert records[0][5]["decision_id"] == "requests.jsonl:6" and records[0][5]["sources"]


def test_a_run_the_disk_refuses_is_cut_off_and_counted_never_left_half_written(tmp_path: Path) -> None:
    """When the segment cannot grow (a file size limit), each refused run is dropped whole and counted; the log verifies."""
    script = f"""
import json, resource, signal
from activelabel.governance.audit import AuditLog, Outcome
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG from write() instead of a killed process
resource.setrlimit(resource.RLIMIT_FSIZE, (12_000, resource.RLIM_INFINITY))
outcome = Outcome(["priority", "bot"], {{"priority": "rule:pay-5xx", "bot": "default"}})
with AuditLog({str(tmp_path / "audit")!r}, checkpoint_every=7) as log:
    for i in range(10):
        log.log_outcomes([f"r{{i}}-{{j}}" for j in range(20)], [0] * 20, [outcome], door="cli", policy_name="edge",
                         version="sha256:ab/1")
print(json.dumps({{"written": log.size, "dropped": log.dropped}}))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    outcome = orjson.loads(done.stdout)
    assert 0 < outcome["written"] < 200 and outcome["dropped"] == {"write_error": 200 - outcome["written"]}
    result = verify_log(tmp_path / "audit")
    assert result.ok and result.records == outcome["written"] and not result.torn_tail
    assert result.checkpoints >= 1  # the last checkpoint signs what is on disk, not what was refused


def test_a_second_writer_on_the_same_log_is_refused_while_the_first_is_open(tmp_path: Path) -> None:
    """Two writers would interleave one chain: the second waits for writer.lock, then says who holds the log."""
    from activelabel.errors import AuditError

    with AuditLog(tmp_path / "audit") as log:
        log.log_admin("start", actor="ops")
        with pytest.raises(AuditError, match="being written by another process"):
            AuditLog(tmp_path / "audit", lock_wait_s=0.2)
    with AuditLog(tmp_path / "audit") as again:  # released at close
        again.log_admin("restart", actor="ops")
    assert verify_log(tmp_path / "audit").records == 2


def test_a_writer_process_writes_the_log_the_writer_thread_writes(tmp_path: Path) -> None:
    """With the chaining in a forked child, the records, checkpoints, counts and size are those of one process."""
    from activelabel.governance.audit import Outcome

    outcome = Outcome(["priority", "bot"], {"priority": "rule:pay-5xx", "bot": "default"})
    logs = {}
    for mode in ("thread", "process"):
        directory = tmp_path / mode
        with AuditLog(directory, checkpoint_every=50, clock=lambda: 1_000_000.0) as log:
            if mode == "process":
                log.start_writer_process()
            for i in range(7):
                log.log_outcomes([f"r{i}-{j}" for j in range(30)], [0] * 30, [outcome], door="cli", policy_name="edge",
                                 version="sha256:ab/1")
            log.log_outcomes(["\ud800"], [0], [outcome], door="cli", policy_name="edge", version="sha256:ab/1")
            log.log_admin("reload", actor="ana")
            assert log.checkpoint().size == 211 and log.size == 211
        assert log.dropped == {"unencodable": 1} and log.size == 211
        result = verify_log(directory)
        assert result.ok and result.records == 211, result.problem
        logs[mode] = ((directory / "segments" / "000000000000.jsonl").read_bytes(),
                      sorted(p.name for p in (directory / "checkpoints").glob("*.note")))
    assert logs["thread"] == logs["process"]


def test_outcome_pieces_cross_to_the_writer_process_once_and_survive_a_cache_reset(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks that reuse, add and (past the cache limit) forget outcomes give the same log in a child as in one process."""
    import activelabel.governance.audit as audit_module
    from activelabel.governance.audit import NumberedIds, Outcome

    monkeypatch.setattr(audit_module, "_CACHE_LIMIT", 4)  # the table starts over every few outcomes
    outcomes = [Outcome(["priority"], {"priority": f"rule:r{k}"}) for k in range(9)]
    logs = {}
    for mode in ("thread", "process"):
        directory = tmp_path / mode
        with AuditLog(directory, checkpoint_every=25, clock=lambda: 1_000_000.0) as log:
            if mode == "process":
                log.start_writer_process()
            for chunk in range(12):
                used = [outcomes[(chunk + k) % 9] for k in range(3)]  # overlapping runs of outcomes
                log.log_outcomes(NumberedIds("in.jsonl:", range(chunk * 10 + 1, chunk * 10 + 11)),
                                 [j % 3 for j in range(10)], used, door="cli", policy_name="edge", version="sha256:ab/1")
        result = verify_log(directory)
        assert result.ok and result.records == 120, result.problem
        logs[mode] = (directory / "segments" / "000000000000.jsonl").read_bytes()
    assert logs["thread"] == logs["process"]
    records = [orjson.loads(line) for line in logs["process"].splitlines()]
    # Chunk 11 uses outcomes 2, 3, 4 (11 % 9 = 2), in turn: its records name those rules.
    assert [r["sources"]["priority"] for r in records[110:113]] == ["rule:r2", "rule:r3", "rule:r4"]
    assert records[119]["decision_id"] == "in.jsonl:120"


def _log_runs(log: AuditLog, runs: int, size: int = 20, start: int = 0) -> None:
    from activelabel.governance.audit import Outcome

    outcome = Outcome(["priority", "bot"], {"priority": "rule:pay-5xx", "bot": "default"})
    for i in range(start, start + runs):
        log.log_outcomes([f"r{i}-{j}" for j in range(size)], [0] * size, [outcome], door="cli", policy_name="edge",
                         version="sha256:ab/1")


def test_a_writer_that_falls_behind_spills_to_disk_and_the_labeler_goes_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stalled disk does not stall labeling: runs wait in DIR/spill/, then reach the log in order, none lost.

    The stall is simulated (no real slow disk here): the writer thread's fsync waits for an
    event the test sets. Everything else (the spill file, the reads back, the log) is real.
    """
    import os
    import threading

    stalled, release = threading.Event(), threading.Event()
    real_fsync = os.fsync

    def slow_fsync(fd: int) -> None:
        stalled.set()
        release.wait(30)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", slow_fsync)
    directory = tmp_path / "audit"
    registry = __import__("prometheus_client").CollectorRegistry()
    with AuditLog(directory, checkpoint_every=20, writer_memory_bytes=4096, registry=registry) as log:
        _log_runs(log, 1)
        assert stalled.wait(10)  # the writer thread is now stuck in the checkpoint's fsync
        _log_runs(log, 200, start=1)  # 4,000 records more: returns although nothing can be written
        spill = directory / "spill" / "runs.spill"
        assert spill.stat().st_size > 100_000
        assert registry.get_sample_value("activelabel_audit_spilled_bytes_total") > 100_000
        release.set()
    assert not spill.exists()  # read back and emptied once the writer caught up
    assert log.dropped == {} and log.size == 4020
    result = verify_log(directory)
    assert result.ok and result.records == 4020, result.problem
    ids = [r["decision_id"] for r in read_records(directory)]
    assert ids == [f"r{i}-{j}" for i in range(201) for j in range(20)]  # in order


def _crashed_with_spill(directory: Path, on_disk: int, spilled: range) -> None:
    """A log as a kill -9 leaves it: records ``0..on_disk-1`` in the segment, ``spilled`` of the rest in the spill file.

    Made from a real log of 100 records: the later lines are cut off the segment and
    written to DIR/spill/runs.spill as the writer had spilled them; checkpoints past the
    cut are removed (a note is only ever written after its records' fsync).
    """
    with AuditLog(directory, checkpoint_every=1000) as log:
        _log_runs(log, 5)
    segment, lines = _lines(directory)
    segment.write_bytes(b"".join(lines[:on_disk]))
    (directory / "spill").mkdir()
    (directory / "spill" / "runs.spill").write_bytes(b"".join(lines[k] for k in spilled))
    for note in (directory / "checkpoints").glob("*.note"):
        note.unlink()
    (directory / "checkpoints" / "state.json").unlink()


@pytest.mark.parametrize("on_disk, spilled, recovered, lost", [
    (60, range(60, 100), 100, 0),  # everything after the segment's last record was spilled
    (60, range(40, 100), 100, 0),  # the writer had written some spilled runs before the kill
    (60, range(80, 100), 60, 20),  # a run still in memory (60..79) was lost: the rest cannot chain on
])
def test_after_a_kill_the_next_writer_replays_the_spilled_runs_that_chain_on(
        tmp_path: Path, on_disk: int, spilled: range, recovered: int, lost: int) -> None:
    """Spilled runs survive a kill -9: reopening writes those that follow the log; what cannot chain is kept and counted."""
    directory = tmp_path / "audit"
    _crashed_with_spill(directory, on_disk, spilled)
    with AuditLog(directory) as log:
        assert log.size == recovered
        assert log.dropped == ({"lost_in_crash": lost} if lost else {})
        log.log_admin("restart", actor="ops")
    result = verify_log(directory)
    assert result.ok and result.records == recovered + 1, result.problem
    assert not (directory / "spill" / "runs.spill").exists()
    orphans = list((directory / "spill").glob("runs.spill.orphan-*"))
    assert len(orphans) == (1 if lost else 0)


def test_a_log_cut_below_its_last_checkpoint_is_never_written_after(tmp_path: Path) -> None:
    """Bytes cut off a record a checkpoint signed: the next writer refuses (naming verify) instead of gluing records on."""
    from activelabel.errors import AuditError

    directory = tmp_path / "audit"
    _write_log(directory)
    segment, lines = _lines(directory)
    segment.write_bytes(b"".join(lines)[:-20])  # the last record loses its end, newline included
    with pytest.raises(AuditError, match="was cut: its segments hold 50 complete records but a signed checkpoint "
                                         "covers 51"):
        AuditLog(directory)
    assert segment.read_bytes() == b"".join(lines)[:-20]  # untouched: it is the evidence
    done = subprocess.run([*CLI, "label", "-p", str(EDGE), str(REPO / "examples/edge/requests.jsonl"), "-o",
                           str(tmp_path / "out.jsonl"), "--audit", str(directory)], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr  # refused at start, as a bad key is
    assert "was cut" in done.stderr and "audit verify" in done.stderr
    assert "BROKEN at record 50" in _verify(directory).stdout


def test_decisions_of_a_reloaded_or_candidate_policy_are_written_with_that_policys_privacy(tmp_path: Path) -> None:
    """The log was opened for a policy with no pii label; a later version (a reload, a rollout's candidate) adds one:
    its values are masked at level Full, and a level rule on `sensitivities: [pii]` now matches it."""
    from activelabel.governance.observers import open_audit_log

    base = tmp_path / "v1.yaml"
    base.write_text("apiVersion: activelabel/v1\nkind: Policy\nmetadata: {name: p, version: '1'}\nlabels:\n"
                    "  route: {type: string}\nrules:\n  - {id: r, label: route, value_expr: event.path}\n")
    later = tmp_path / "v2.yaml"
    later.write_text(base.read_text().replace("version: '1'", "version: '2'")
                     .replace("labels:\n", "labels:\n  who: {type: string, sensitivity: pii}\n")
                     .replace("rules:\n", "rules:\n  - {id: w, label: who, value_expr: event.user}\n"))
    v1, v2 = Labeler.from_file(base), Labeler.from_file(later)
    policy = tmp_path / "levels.yaml"
    policy.write_text("rules:\n  - {level: Full, sensitivities: [pii]}\n  - {level: Metadata}\n")
    event = {"path": "/a", "user": "alice@example.com"}
    log = open_audit_log(str(tmp_path / "audit"), policy=v1.policy, level_policy_file=str(policy))
    with log:
        log.log_decisions([(v1.label(event), "r1", event, "stable")], door="http", policy_name="p")
        log.log_decisions([(v2.label(event), "r2", event, "canary")], door="http", policy_name="p")
    raw = b"".join(p.read_bytes() for p in (tmp_path / "audit" / "segments").glob("*.jsonl"))
    assert b"alice" not in raw
    first, second = [r for r in read_records(tmp_path / "audit") if r["kind"] == "decision"]
    assert first["level"] == "Metadata" and second["level"] == "Full"
    assert second["result"]["route"] == "/a" and "/result/who" in (second.get("masked", []) + second.get("erased", []))


def test_verify_says_which_records_no_signed_checkpoint_covers_yet(tmp_path: Path) -> None:
    """Records after the newest note verify by their chain only: verify passes and says so, naming how many."""
    directory = tmp_path / "audit"
    _write_log(directory)
    assert "after the newest signed checkpoint" not in _verify(directory).stdout  # close() signed everything
    newest = sorted((directory / "checkpoints").glob("*.note"))[-1]
    newest.unlink()  # as a killed writer leaves it, or someone who also removed the newest note
    done = _verify(directory)
    assert done.returncode == 0
    assert "the last 1 records are after the newest signed checkpoint" in done.stdout


def test_a_cut_log_is_refused_even_without_state_json_and_when_the_cut_is_inside(tmp_path: Path) -> None:
    """Deleting checkpoints/state.json does not hide a cut (the signed notes count), and a segment cut short
    inside a log of several segments is found too: the next writer refuses, the log is left as it was."""
    from activelabel.errors import AuditError

    tail_cut = tmp_path / "tail"
    _write_log(tail_cut)
    segment, lines = _lines(tail_cut)
    segment.write_bytes(b"".join(lines)[:-20])
    (tail_cut / "checkpoints" / "state.json").unlink()
    with pytest.raises(AuditError, match="was cut: its segments hold 50 complete records but a signed checkpoint "
                                         "covers 51"):
        AuditLog(tail_cut)
    inside = tmp_path / "inside"
    with AuditLog(inside, segment_max_bytes=4_000, checkpoint_every=7) as log:
        _log_runs(log, 12)
    segments = sorted((inside / "segments").glob("*.jsonl"))
    assert len(segments) > 3
    second = segments[1].read_bytes()
    segments[1].write_bytes(second[:second.rstrip(b"\n").rfind(b"\n") + 1])  # its last record removed whole
    before = {p.name: p.read_bytes() for p in segments}
    with pytest.raises(AuditError, match=f"was cut inside: {segments[1].name} does not end with record"):
        AuditLog(inside)
    assert {p.name: p.read_bytes() for p in sorted((inside / "segments").glob("*.jsonl"))} == before
    assert verify_log(inside).ok is False
