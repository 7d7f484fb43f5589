"""Prometheus metrics of activelabel (registry injected; see ``metrics``)."""

from activelabel.observability.labeler_stats import StatsTotals, totals_from_stats
from activelabel.observability.metrics import (
    FRONT_DOORS,
    LATENCY_BUCKETS,
    LabelerStatsCollector,
    ServiceMetrics,
)

__all__ = [
    "FRONT_DOORS",
    "LATENCY_BUCKETS",
    "LabelerStatsCollector",
    "ServiceMetrics",
    "StatsTotals",
    "totals_from_stats",
]
