"""The ``Source`` protocol: what every source of records (JSONL, Kafka) promises.

A source hands out records and holds resources (open files, a consumer-group
membership) until it is closed. How records are read differs by medium — a
JSONL source is iterated, a Kafka source is polled in batches and acknowledged
with ``commit`` — so the protocol names only what a front door needs of all of
them; ``SourceError`` is the one error any source raises for a failure as a whole.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class Source(Protocol):
    """A source of records; ``close`` releases what it holds and is safe to call twice."""

    def close(self) -> None:
        """Release files, connections or group membership; records not yet acknowledged are read again by the next reader."""
        ...
