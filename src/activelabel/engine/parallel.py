"""The record loop on several cores: blocks of lines labeled in worker processes, written in input order.

``activelabel label --workers N`` runs this for large regular files. The parent reads
each file in blocks of whole lines (``JsonlSource.iter_line_blocks``) and hands each
block, undecoded, to a pool of worker processes; each worker holds one Labeler
(compiled once, or inherited from the parent on ``fork``) and runs the one
``RecordLoop`` over its block, returning the labeled lines as one byte string and its
dead letters. The parent writes results strictly in block order, so the output is the
one-process output, byte for byte, and ``records_in == labeled + dead_lettered`` holds.

Memory stays flat: at most ``2 × workers`` blocks are in flight (read, being labeled,
or waiting to be written), whatever the input size.

Counters: each worker answers every block with its labeler's cumulative ``stats()`` and
``hits_by_source()`` (the engine's public counters); the parent keeps each worker's
latest and sums them (``merge_stats``), so the end-of-run summary is the one a single
process would print.

What cannot run in parallel (``parallel_refusal``): labels with a cardinality guard or
a ``window`` (the first N distinct values are decided in input order across the whole
run) and policies with models (their state is learned in order). Those runs use one
process, and the CLI says so.
"""

from __future__ import annotations

import copy
import multiprocessing
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from activelabel.engine.record_loop import RecordCounts, RecordLoop, Where
from activelabel.sources.jsonl import ReadLimits

if TYPE_CHECKING:
    from multiprocessing.pool import AsyncResult

    from activelabel.engine.labeler import Labeler, LabelerStats
    from activelabel.sinks.jsonl import DeadLetterSink, JsonlSink

#: Bytes of input per block handed to a worker: large enough that the pickling and
#: the pipe cost nothing next to labeling it, small enough that 2 × workers of them
#: in flight are a few MiB.
BLOCK_BYTES = 1 << 20

#: Inputs smaller than this are labeled in one process: starting workers costs more.
MIN_PARALLEL_BYTES = 4 << 20


def default_workers() -> int:
    """The CPUs this process may run on (the affinity mask, as ``taskset`` sets it), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def parallel_refusal(labeler: Labeler) -> str | None:
    """Why ``labeler``'s policy must label in one process, or None when blocks may run in parallel."""
    policy = labeler.policy
    if policy.models:
        return "the policy has models, whose state is learned in input order"
    for spec in policy.labels.values():
        if spec.max_cardinality is not None or spec.window is not None:
            return f"label {spec.name} has a cardinality guard, decided in input order across the whole run"
    return None


@dataclass(frozen=True)
class WorkerSettings:
    """What each worker needs to build its labeler and record loop (picklable)."""

    policy: Path
    labeler_options: dict[str, Any]
    limits: ReadLimits
    labels_field: str
    explain: bool


@dataclass
class BlockResult:
    """One block's outcome, as a worker sends it back."""

    pid: int
    labeled: bytes  # the labeled lines joined by newlines (no trailing one); b"" if none
    labeled_count: int
    dead: list[tuple[int, bytes | None, str, str]]  # (position in the block, raw, kind, reason)
    counts: RecordCounts
    stats: LabelerStats
    hits_by_source: dict[str, dict[str, int]]


class _Collect:
    """A worker's ``RecordOutput``: labeled lines and dead letters kept for the parent."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.dead: list[tuple[int, bytes | None, str, str]] = []

    def write_many(self, where: list[Where], lines: list[bytes]) -> list[tuple[int, str, str]]:
        self.lines.extend(lines)
        return []

    def dead_letter(self, where: Where, raw: bytes | None, kind: str, reason: str) -> None:
        self.dead.append((where[1], raw, kind, reason))


# One per worker process: set by the pool initializer (or inherited on fork).
_worker_loop: RecordLoop | None = None
_worker_labeler: Labeler | None = None
_inherited: Labeler | None = None


def _init_worker(settings: WorkerSettings) -> None:
    global _worker_loop, _worker_labeler
    labeler = _inherited
    if labeler is None:
        from activelabel.engine.labeler import Labeler

        labeler = Labeler.from_file(settings.policy, **settings.labeler_options)
    _worker_labeler = labeler
    _worker_loop = RecordLoop(labeler, limits=settings.limits, labels_field=settings.labels_field, explain=settings.explain)


def _label_block(data: bytes) -> BlockResult:
    loop, labeler = _worker_loop, _worker_labeler
    assert loop is not None and labeler is not None, "the pool initializer sets both"
    out = _Collect()
    counts = loop.run([(None, data.split(b"\n"))], out)
    return BlockResult(os.getpid(), b"\n".join(out.lines), len(out.lines), out.dead, counts,
                       labeler.stats(), labeler.hits_by_source())


def merge_stats(parts: Iterable[LabelerStats]) -> LabelerStats | None:
    """Sum several labelers' ``stats()`` into one: counts add; ``distinct`` takes the largest (a lower bound)."""
    merged: LabelerStats | None = None
    for part in parts:
        if merged is None:
            merged = copy.deepcopy(part)
            continue
        for f in fields(part):
            mine, theirs = getattr(merged, f.name), getattr(part, f.name)
            if isinstance(theirs, int):
                setattr(merged, f.name, mine + theirs)
            elif isinstance(theirs, dict):
                for key, value in theirs.items():
                    if not isinstance(value, int):
                        mine.setdefault(key, value)  # per-model state: not a count
                    elif f.name == "distinct":
                        mine[key] = max(mine.get(key, 0), value)
                    else:
                        mine[key] = mine.get(key, 0) + value
    return merged


def merge_sources(parts: Iterable[dict[str, dict[str, int]]]) -> dict[str, dict[str, int]]:
    """Sum several labelers' ``hits_by_source()``."""
    merged: dict[str, dict[str, int]] = {}
    for part in parts:
        for label, counts in part.items():
            mine = merged.setdefault(label, {})
            for source, n in counts.items():
                mine[source] = mine.get(source, 0) + n
    return merged


@dataclass
class ParallelRun:
    """What a parallel run returns: the loop's counts and the workers' merged counters."""

    counts: RecordCounts
    stats: LabelerStats | None
    hits_by_source: dict[str, dict[str, int]]
    workers: int


def _context() -> multiprocessing.context.BaseContext:
    # fork inherits the parent's compiled labeler (no second compile, no re-import) and is
    # safe while the parent has a single thread; otherwise workers start clean.
    if "fork" in multiprocessing.get_all_start_methods() and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def run_parallel(labeler: Labeler, settings: WorkerSettings, blocks: Iterable[tuple[str, int, bytes]],
                 sink: JsonlSink, dead: DeadLetterSink, *, workers: int,
                 on_block: Callable[[], None] | None = None) -> ParallelRun:
    """Label ``blocks`` (source name, first line number, whole lines) in ``workers`` processes, writing in order.

    ``labeler`` is the parent's compiled labeler: workers forked from this process use it
    (its counters are still zero: the parent labels nothing itself); spawned workers
    compile ``settings.policy`` once each. ``on_block`` runs after each block is written.
    """
    global _inherited
    ctx = _context()
    _inherited = labeler if ctx.get_start_method() == "fork" else None
    counts = RecordCounts()
    latest: dict[int, BlockResult] = {}
    pending: deque[tuple[str, int, AsyncResult[BlockResult]]] = deque()
    try:
        with ctx.Pool(workers, initializer=_init_worker, initargs=(settings,)) as pool:

            def finish_oldest() -> None:
                name, first_line, future = pending.popleft()
                result = future.get()
                if result.labeled_count:
                    sink.write_block(result.labeled, result.labeled_count)
                for pos, raw, kind, reason in result.dead:
                    dead.write(source=name, line_no=first_line + pos, raw=raw or b"", kind=kind, reason=reason)
                c = result.counts
                counts.records_in += c.records_in
                counts.labeled += c.labeled
                counts.dead_lettered += c.dead_lettered
                for kind, n in c.dead_letter_kinds.items():
                    counts.dead_letter_kinds[kind] = counts.dead_letter_kinds.get(kind, 0) + n
                latest[result.pid] = result  # cumulative per worker: the last one answered counts
                if on_block is not None:
                    on_block()

            for name, first_line, data in blocks:
                pending.append((name, first_line, pool.apply_async(_label_block, (data,))))
                if len(pending) >= 2 * workers:
                    finish_oldest()
            while pending:
                finish_oldest()
    finally:
        _inherited = None
    return ParallelRun(counts, merge_stats(r.stats for r in latest.values()),
                       merge_sources(r.hits_by_source for r in latest.values()), workers)


__all__ = ["BLOCK_BYTES", "MIN_PARALLEL_BYTES", "BlockResult", "ParallelRun", "WorkerSettings", "default_workers",
           "merge_sources", "merge_stats", "parallel_refusal", "run_parallel"]
