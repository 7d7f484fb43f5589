"""Sources: where records come from (JSONL files, stdin, gzip; Kafka in ``activelabel.sources.kafka``)."""

from activelabel.sources.base import Source
from activelabel.sources.jsonl import BadRecord, JsonlSource, ReadLimits, Record, decode_line

__all__ = ["BadRecord", "JsonlSource", "ReadLimits", "Record", "Source", "decode_line"]
