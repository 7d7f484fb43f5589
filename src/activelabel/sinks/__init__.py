"""Sinks: where labeled records and dead letters go."""

from activelabel.sinks.jsonl import DeadLetterSink, JsonlSink, default_dlq_path, splice_fields

__all__ = ["DeadLetterSink", "JsonlSink", "default_dlq_path", "splice_fields"]
