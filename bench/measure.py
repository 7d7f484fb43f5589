"""Timing primitives: events/s from repeated runs, paired ratios, per-call latency.

Throughput is the median of `repeats` runs over the same event list. A ratio
to the baseline is measured pair by pair: each repeat times the engine and the
baseline back to back (alternating which goes first), takes the ratio of that
pair, and the reported ratio is the median of those pair ratios, so machine
noise that hits both halves of a pair cancels out. Latency is
`time.perf_counter_ns()` around each call on a sample; the figures include the
~40-60 ns the clock read itself costs.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass


def _time_loop(fn: Callable[[dict], object], events: list[dict]) -> float:
    gc.collect()
    t0 = time.perf_counter()
    for e in events:
        fn(e)
    return time.perf_counter() - t0


def _time_batches(fn: Callable[[list[dict]], object], batches: list[list[dict]]) -> float:
    gc.collect()
    t0 = time.perf_counter()
    for b in batches:
        fn(b)
    return time.perf_counter() - t0


def make_runner(label: Callable | None, label_many: Callable | None, events: list[dict],
                batch_size: int = 4096, min_events: int = 0) -> Callable[[], float]:
    """A zero-argument callable giving the seconds of one pass over `events` (per event, or in batches).

    With `min_events`, a short list is looped over several times and the time
    divided back to one pass: a fast baseline timed on the 200 events a slow
    peer gets would otherwise take a millisecond and carry all the timer noise.
    """
    if label_many is not None:
        batches = [events[i:i + batch_size] for i in range(0, len(events), batch_size)]
        return lambda: _time_batches(label_many, batches)
    assert label is not None
    loops = max(1, -(-min_events // max(1, len(events))))
    if loops == 1:
        return lambda: _time_loop(label, events)
    many = events * loops
    return lambda: _time_loop(label, many) / loops


@dataclass
class Throughput:
    events: int
    repeats: int
    events_per_s: float          # median over repeats
    spread: float                # (max - min) / median of the per-run rates
    baseline_events_per_s: float | None = None
    ratio_to_baseline: float | None = None  # median of paired ratios (>1: faster than baseline)

    def as_dict(self) -> dict:
        return asdict(self)


def throughput(run: Callable[[], float], n_events: int, repeats: int,
               baseline: Callable[[], float] | None = None, warmup: int = 1) -> Throughput:
    """Median events/s of `run`; with `baseline`, also the paired ratio to it."""
    for _ in range(warmup):
        run()
        if baseline is not None:
            baseline()
    rates, base_rates, ratios = [], [], []
    for r in range(repeats):
        if baseline is None:
            rates.append(n_events / run())
            continue
        if r % 2 == 0:
            t_eng, t_base = run(), baseline()
        else:
            t_base, t_eng = baseline(), run()
        rates.append(n_events / t_eng)
        base_rates.append(n_events / t_base)
        ratios.append(t_base / t_eng)
    med = statistics.median(rates)
    return Throughput(
        events=n_events,
        repeats=repeats,
        events_per_s=med,
        spread=(max(rates) - min(rates)) / med,
        baseline_events_per_s=statistics.median(base_rates) if base_rates else None,
        ratio_to_baseline=statistics.median(ratios) if ratios else None,
    )


@dataclass
class Latency:
    samples: int
    p50_us: float
    p99_us: float
    max_us: float

    def as_dict(self) -> dict:
        return asdict(self)


def latency(fn: Callable[[dict], object], events: list[dict]) -> Latency:
    """p50/p99 of one call, timed call by call over `events` (after one warm-up pass)."""
    for e in events[: min(len(events), 200)]:
        fn(e)
    clock = time.perf_counter_ns
    out = []
    append = out.append
    gc.collect()
    for e in events:
        t0 = clock()
        fn(e)
        append(clock() - t0)
    out.sort()
    n = len(out)
    return Latency(samples=n, p50_us=out[n // 2] / 1000, p99_us=out[min(n - 1, int(n * 0.99))] / 1000,
                   max_us=out[-1] / 1000)


def batch_latency(fn: Callable[[list[dict]], object], events: list[dict], batch_size: int) -> Latency:
    """p50/p99 of one whole batch call (for the batch path, where per-event latency has no meaning)."""
    batches = [events[i:i + batch_size] for i in range(0, len(events) - batch_size + 1, batch_size)]
    fn(batches[0])
    out = []
    for b in batches:
        t0 = time.perf_counter_ns()
        fn(b)
        out.append(time.perf_counter_ns() - t0)
    out.sort()
    n = len(out)
    return Latency(samples=n, p50_us=out[n // 2] / 1000, p99_us=out[min(n - 1, int(n * 0.99))] / 1000,
                   max_us=out[-1] / 1000)
