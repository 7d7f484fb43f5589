"""Sinks: where labeled records and dead letters go (JSONL; Kafka in ``activelabel.sinks.kafka``)."""

from activelabel.sinks.base import Sink
from activelabel.sinks.jsonl import DeadLetterSink, JsonlSink, default_dlq_path, splice_fields

__all__ = ["DeadLetterSink", "JsonlSink", "Sink", "default_dlq_path", "splice_fields"]
