"""Every source and sink, JSONL and Kafka, satisfies the ``Source`` / ``Sink`` protocols a front door relies on."""

from __future__ import annotations

from pathlib import Path

from activelabel.sinks import DeadLetterSink, JsonlSink, Sink
from activelabel.sinks.kafka import KafkaSink
from activelabel.sources import JsonlSource, Source
from activelabel.sources.kafka import KafkaSource
from activelabel.stream import StreamConfig


def test_jsonl_source_and_sinks_satisfy_the_protocols(tmp_path: Path):
    """A JSONL source is a Source and the JSONL output and dead-letter sinks are Sinks whose output reaches the file."""
    source = JsonlSource([str(tmp_path / "in.jsonl")])
    assert isinstance(source, Source)
    out = JsonlSink(str(tmp_path / "out.jsonl"))
    dlq = DeadLetterSink(str(tmp_path / "dlq.jsonl"))
    assert isinstance(out, Sink) and isinstance(dlq, Sink)
    out.write_raw(b'{"a":1}')
    dlq.write(source="in", line_no=1, raw=b"x", kind="invalid_json", reason="bad")
    out.flush()
    dlq.flush()
    out.close()
    dlq.close()
    source.close()
    assert (tmp_path / "out.jsonl").read_bytes() == b'{"a":1}\n'
    assert b'"kind":"invalid_json"' in (tmp_path / "dlq.jsonl").read_bytes()


def test_kafka_source_and_sink_satisfy_the_protocols_and_keep_their_old_import_path():
    """KafkaSource and KafkaSink (built without contacting a broker) are a Source and a Sink, also importable from activelabel.stream."""
    import logging

    from activelabel import stream

    assert stream.KafkaSource is KafkaSource and stream.KafkaSink is KafkaSink
    cfg = StreamConfig(bootstrap_servers="127.0.0.1:9", input_topic="a", output_topic="b", flush_timeout_s=0.1)
    log = logging.getLogger("test.protocols")
    source, sink = KafkaSource(cfg, logger=log), KafkaSink(cfg, logger=log)
    try:
        assert isinstance(source, Source) and isinstance(sink, Sink)
        sink.flush()  # nothing queued: returns at once
    finally:
        sink.close()
        source.close()
