"""A per-model circuit breaker: fail fast while a model is unhealthy.

After ``failure_threshold`` consecutive errors or timeouts the breaker *opens*:
calls are refused (the model abstains) for ``cooldown_s``. Then it lets one trial
call through (*half-open*); success closes it, failure opens it for another
cool-down. The clock is injected so tests drive time explicitly.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"


@dataclass
class CircuitBreaker:
    """Counts consecutive failures of one model and decides whether to call it."""

    failure_threshold: int = 5
    cooldown_s: float = 30.0
    clock: Callable[[], float] = time.monotonic
    state: str = CLOSED
    consecutive_failures: int = 0
    opened_at: float | None = None
    times_opened: int = 0
    rejected_calls: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def allow(self) -> bool:
        """True when the model may be called now (closed, or the trial call of half-open)."""
        with self._lock:
            if self.state == CLOSED:
                return True
            if self.state == OPEN and self.opened_at is not None and self.clock() - self.opened_at >= self.cooldown_s:
                self.state = HALF_OPEN
                return True
            # Open and cooling down, or half-open with the trial call already in flight.
            self.rejected_calls += 1
            return False

    def record_success(self) -> None:
        with self._lock:
            self.state = CLOSED
            self.consecutive_failures = 0
            self.opened_at = None

    def record_failure(self) -> None:
        with self._lock:
            self.consecutive_failures += 1
            if self.state == HALF_OPEN or self.consecutive_failures >= self.failure_threshold:
                if self.state != OPEN:
                    self.times_opened += 1
                self.state = OPEN
                self.opened_at = self.clock()

    def snapshot(self) -> dict[str, object]:
        """The breaker's state as plain data, for stats() and metrics."""
        with self._lock:
            remaining = 0.0
            if self.state == OPEN and self.opened_at is not None:
                remaining = max(0.0, self.cooldown_s - (self.clock() - self.opened_at))
            return {
                "state": self.state,
                "consecutive_failures": self.consecutive_failures,
                "times_opened": self.times_opened,
                "rejected_calls": self.rejected_calls,
                "cooldown_remaining_s": round(remaining, 3),
            }
