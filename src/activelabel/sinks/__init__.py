"""Sinks: where labeled records and dead letters go."""

from activelabel.sinks.jsonl import DeadLetterSink, JsonlSink, splice_fields

__all__ = ["DeadLetterSink", "JsonlSink", "splice_fields"]
