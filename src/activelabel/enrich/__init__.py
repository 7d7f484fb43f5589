"""Enrichers: data joined onto an event before the rules run.

A ``type: lookup`` enricher reads a whole CSV, JSON or SQLite table when the
policy loads and answers ``lookup(key)`` with a dict get::

    enricher = policy.enrichers[0].build()
    enricher.lookup("t1")      # {"tenant_id": "t1", "tier": "gold"}
    enricher.lookup("nope")    # {} (the shared EMPTY map)
"""

from ._lookup import (
    EMPTY,
    Enricher,
    EnricherError,
    LookupEnricher,
    Table,
    normalize_key,
    read_table,
    read_table_file,
)

__all__ = [
    "EMPTY",
    "Enricher",
    "EnricherError",
    "LookupEnricher",
    "Table",
    "normalize_key",
    "read_table",
    "read_table_file",
]
