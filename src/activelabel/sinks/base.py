"""The ``Sink`` protocol: what every output of records (JSONL, Kafka) promises.

A front door writes records through the sink's own write method (a JSONL line,
a Kafka message with key and headers), then calls ``flush``: once it returns,
every record written so far has left the sink (written to its file, or
acknowledged by the broker), so the input may be acknowledged. A sink that cannot make that
promise raises ``SinkError``; it never drops a record silently.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class Sink(Protocol):
    """An output of records: ``flush`` hands everything written on (file, broker) or raises ``SinkError``."""

    def flush(self) -> None:
        """Return once every record written so far has left the sink; ``SinkError`` when one cannot."""
        ...

    def close(self) -> None:
        """Flush what is left (best effort) and release the output."""
        ...
