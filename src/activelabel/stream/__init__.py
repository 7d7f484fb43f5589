"""Kafka stream worker: consumer group in → labeled topic out, bad messages to a DLQ topic.

    from activelabel import Labeler
    from activelabel.stream import StreamConfig, StreamWorker

    config = StreamConfig(bootstrap_servers="127.0.0.1:9092", input_topic="requests",
                          output_topic="requests.labeled")
    StreamWorker(Labeler.from_file("policy.yaml"), config).run()

Delivery is at-least-once: offsets are committed only after the batch's labeled
and dead-lettered messages are acknowledged. See docs/stream.md.
"""

# isort: off
from activelabel.stream import _needs_extra  # noqa: F401  (first: names the missing extra)
# isort: on
from activelabel.sinks.kafka import KafkaSink, ValueTooLarge
from activelabel.sources.kafka import KafkaSource
from activelabel.stream.config import StreamConfig
from activelabel.stream.records import (
    ARM_HEADER,
    DLQ_KIND_HEADER,
    DLQ_OFFSET_HEADER,
    DLQ_PARTITION_HEADER,
    DLQ_REASON_HEADER,
    DLQ_TOPIC_HEADER,
    DLQ_VALUE_DROPPED_HEADER,
    POLICY_VERSION_HEADER,
)
from activelabel.stream.worker import StreamLabeler, StreamWorker

__all__ = [
    "ARM_HEADER",
    "DLQ_KIND_HEADER",
    "DLQ_OFFSET_HEADER",
    "DLQ_PARTITION_HEADER",
    "DLQ_REASON_HEADER",
    "DLQ_TOPIC_HEADER",
    "DLQ_VALUE_DROPPED_HEADER",
    "KafkaSink",
    "KafkaSource",
    "POLICY_VERSION_HEADER",
    "StreamConfig",
    "StreamLabeler",
    "StreamWorker",
    "ValueTooLarge",
]
