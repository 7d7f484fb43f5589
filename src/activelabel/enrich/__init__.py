"""Enrichers: data joined onto an event before the rules run.

An enricher reads a whole CSV, JSON or SQLite table when the policy loads and
answers ``lookup(key)`` from memory: ``type: lookup`` with a dict get,
``type: cidr`` with the most specific network containing an IP address::

    enricher = policy.enrichers[0].build()
    enricher.lookup("t1")      # {"tenant_id": "t1", "tier": "gold"}
    enricher.lookup("nope")    # {} (the shared EMPTY map)
"""

from ._cidr import CidrEnricher
from ._lookup import (
    EMPTY,
    Enricher,
    EnricherError,
    LookupEnricher,
    Table,
    build_enricher,
    normalize_key,
    read_table,
    read_table_file,
)

__all__ = [
    "CidrEnricher",
    "EMPTY",
    "Enricher",
    "EnricherError",
    "LookupEnricher",
    "Table",
    "build_enricher",
    "normalize_key",
    "read_table",
    "read_table_file",
]
