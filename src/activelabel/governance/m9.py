"""M9, the PII leak count, as three numbers (never the values).

1. ``declared``: a label declared above an output's clearance left in clear.
   `OutputGuard` checks every record it writes after protecting it, so this is
   zero by construction *and* measured: a non-zero count is a bug.
2. ``undeclared``: a validated detector (`pii.VALIDATED`) fired on a value that
   left in clear - a label or event field nobody declared sensitive, i.e. a gap
   in the registry. Sampled (``pii: {undeclared_sample: 0.1}``).
3. canary recall: ``activelabel pii audit`` injects honeytokens and counts how
   many it finds protected; ``caught / injected``.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class PrivacyCounters:
    """Counters shared by the outputs of one process; keys are names, never values."""

    declared: Counter[tuple[str, str]] = field(default_factory=Counter)  # (door, label)
    undeclared: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # (door, field, entity)
    protected: Counter[tuple[str, str]] = field(default_factory=Counter)  # (door, treatment)
    scanned: int = 0
    truncated: int = 0
    canaries_injected: int = 0
    canaries_caught: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    # Prometheus families (`observability.metrics.PiiLeakMetrics`) every count is also sent to, when bound.
    metrics: Any = field(default=None, repr=False, compare=False)

    def add(self, name: str, key: Any, n: int = 1) -> None:
        with self._lock:
            getattr(self, name)[key] += n
        if self.metrics is not None:
            if name == "declared":
                self.metrics.count_declared_leak(key[0], key[1], n)
            elif name == "undeclared":
                self.metrics.count_undeclared(key[0], key[2], n)

    def add_canaries(self, injected: int, caught: int) -> None:
        """Count one canary run; the recall gauge follows the totals."""
        with self._lock:
            self.canaries_injected += injected
            self.canaries_caught += caught
            totals = (self.canaries_caught, self.canaries_injected)
        if self.metrics is not None:
            self.metrics.set_canary_recall(*totals)

    def add_scan(self, values: int, truncated: int) -> None:
        with self._lock:
            self.scanned += values
            self.truncated += truncated

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready totals: what ``pii audit`` and reports print."""
        with self._lock:
            return {
                "declared_leaks": sum(self.declared.values()),
                "declared_leaks_by_label": {f"{d}/{lab}": n for (d, lab), n in sorted(self.declared.items())},
                "undeclared_pii": sum(self.undeclared.values()),
                "undeclared_pii_by_field": {f"{d}/{f}/{e}": n for (d, f, e), n in sorted(self.undeclared.items())},
                "protected_values": sum(self.protected.values()),
                "values_scanned": self.scanned,
                "scans_truncated": self.truncated,
                "canaries_injected": self.canaries_injected,
                "canaries_caught": self.canaries_caught,
                "canary_recall": (self.canaries_caught / self.canaries_injected) if self.canaries_injected else None,
            }
