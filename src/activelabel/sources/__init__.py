"""Sources: where records come from (JSONL files, stdin, gzip)."""

from activelabel.sources.jsonl import BadRecord, JsonlSource, ReadLimits, Record, decode_line

__all__ = ["BadRecord", "JsonlSource", "ReadLimits", "Record", "decode_line"]
