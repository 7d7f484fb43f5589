"""Prometheus metrics of activelabel (registry injected; see ``metrics``), rules and dashboards as code."""

from activelabel.observability.catalog import CATALOG, MetricSpec
from activelabel.observability.labeler_stats import StatsTotals, totals_from_stats
from activelabel.observability.metrics import (
    FRONT_DOORS,
    LATENCY_BUCKETS,
    DoorMetrics,
    LabelTimer,
    PiiLeakMetrics,
    ServiceMetrics,
)

__all__ = [
    "CATALOG",
    "DoorMetrics",
    "FRONT_DOORS",
    "LATENCY_BUCKETS",
    "LabelTimer",
    "MetricSpec",
    "PiiLeakMetrics",
    "ServiceMetrics",
    "StatsTotals",
    "totals_from_stats",
]
