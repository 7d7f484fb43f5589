"""The record loop on several cores: blocks of lines labeled in worker processes, written in input order.

``activelabel label --workers N`` runs this for large regular files. The parent cuts
each file into blocks of whole lines (``file_spans``: byte offsets) and hands each
block to a pool of worker processes, which read it themselves; each worker holds one Labeler
(compiled once, in the parent, and inherited on ``fork``) and runs the one
``RecordLoop`` over its block, returning the labeled lines as one byte string and its
dead letters. The parent writes results strictly in block order, so the output is the
one-process output, byte for byte, and ``records_in == labeled + dead_lettered`` holds.

Memory stays flat: at most ``2 × workers`` blocks are in flight (being labeled or
waiting to be written), whatever the input size.

Counters: each worker answers every block with its labeler's cumulative ``stats()`` and
``hits_by_source()`` (the engine's public counters); the parent keeps each worker's
latest and sums them (``merge_stats``), so the end-of-run summary is the one a single
process would print.

Cardinality guards (with or without a ``window``) admit the first N distinct values in
input order across the whole run, so no worker can decide them. When no rule reads a
guarded label (``deferred_guards``), the workers pass its values through unguarded and
send each one back; the parent runs the one guard over them in input order and, for a
value that overflows, puts the overflow value into that record's labels (the bytes of
the one-process output). What cannot run in parallel (``parallel_refusal``): a guarded
label that a rule reads (it would see the value before the guard) and policies with
models (their state is learned in order). Those runs use one process, and the CLI says so.
"""

from __future__ import annotations

import copy
import multiprocessing
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, fields
from typing import IO, TYPE_CHECKING, Any

import orjson

from activelabel.engine.cardinality import CardinalityGuard
from activelabel.engine.record_loop import CodesObserver, RecordCounts, RecordLoop, Where, index_codes
from activelabel.errors import ActiveLabelError
from activelabel.sources.jsonl import UTF8_BOM, ReadLimits

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
    read = _guarded_labels_read(labeler)
    if read:
        return (f"label {read[0]} has a cardinality guard, decided in input order across the whole run, "
                "and a rule reads it")
    return None


def deferred_guards(labeler: Labeler) -> dict[str, CardinalityGuard]:
    """The cardinality guards of labels no rule reads, by label: the parent decides them after the workers."""
    if _guarded_labels_read(labeler):
        return {}
    return {lp.spec.name: lp.guard for lp in labeler.compiled.plan.labels if isinstance(lp.guard, CardinalityGuard)}


def _guarded_labels_read(labeler: Labeler) -> list[str]:
    """Guarded labels some rule's condition or value reads (all of them if one reads ``labels`` whole)."""
    from activelabel.cel import references

    plan = labeler.compiled.plan
    guarded = [lp.spec.name for lp in plan.labels if isinstance(lp.guard, CardinalityGuard)]
    if not guarded:
        return []
    read: set[str] = set()
    for lp in plan.labels:
        for rp in lp.rules:
            for prog in (rp.when, rp.value_prog):
                for ref in references(prog.ast) if prog is not None else ():
                    if ref.path[0] == "labels":
                        if len(ref.path) == 1:
                            return guarded
                        read.add(str(ref.path[1]))
    return [name for name in guarded if name in read]


@dataclass(frozen=True)
class WorkerSettings:
    """How each worker runs its record loop (the labeler itself is inherited on fork)."""

    limits: ReadLimits
    labels_field: str
    explain: bool
    codes: bool = False  # send each labeled record's source codes back (for the parent's audit log)
    guarded: tuple[str, ...] = ()  # labels whose guard the parent decides: send their values back


@dataclass
class BlockResult:
    """One block's outcome, as a worker sends it back."""

    pid: int
    lines: int  # physical lines in the block (blank ones included), for the next block's line numbers
    labeled: bytes  # the labeled lines joined by newlines (no trailing one); b"" if none
    labeled_count: int
    dead: list[tuple[int, bytes | None, str, str]]  # (position in the block, raw, kind, reason)
    counts: RecordCounts
    stats: LabelerStats
    hits_by_source: dict[str, dict[str, int]]
    # With ``WorkerSettings.codes``: (position of each labeled record, index of its codes in
    # the third list, each distinct codes dict once). None otherwise.
    codes: tuple[list[int], list[int], list[dict[str, Any]]] | None = None
    # With ``WorkerSettings.guarded``, per label: the labeled lines (their index) that set
    # it, its value in each, and where each line's labels object starts (-1: the whole
    # line is one serialised object), for the parent's guard.
    guarded: dict[str, tuple[list[int], list[Any], list[int]]] | None = None


class _CollectCodes:
    """A worker's ``CodesObserver``: what the parent needs of each labeled record, for its block.

    With ``codes``: each record's position and source codes (distinct codes sent once per
    chunk), so the parent's observer (the audit log) sees the block as if it had labeled
    it itself, without the events or label values. With ``guarded``: the values of those
    labels and each record's labels, for the parent's guard (``guarded_values``).
    """

    needs_values = False

    def __init__(self, codes: bool = True, guarded: tuple[str, ...] = (), labels_field: str = "labels") -> None:
        self.codes = codes
        self.guarded = guarded
        self.labels_field = labels_field
        self.positions: list[int] = []
        self.index: list[int] = []
        self.outcomes: list[dict[str, Any]] = []
        self.labeled = 0
        self.sets: dict[str, tuple[list[int], list[Any], list[dict[str, Any] | None]]] = {n: ([], [], []) for n in guarded}

    def take(self) -> tuple[list[int], list[int], list[dict[str, Any]]] | None:
        """This block's codes (None without ``codes``), and a fresh start for the next block."""
        got = (self.positions, self.index, self.outcomes) if self.codes else None
        self.positions, self.index, self.outcomes = [], [], []
        return got

    def guarded_values(self, lines: list[bytes]) -> dict[str, tuple[list[int], list[Any], list[int]]] | None:
        """Per guarded label, this block's (line index, value, labels offset) (``BlockResult.guarded``); a fresh start."""
        if not self.guarded:
            return None
        out: dict[str, tuple[list[int], list[Any], list[int]]] = {}
        for name, (at, values, labels) in self.sets.items():
            out[name] = (at, values, [_labels_offset(lines[k], labels_k) for k, labels_k in zip(at, labels, strict=True)])
        self.sets = {n: ([], [], []) for n in self.guarded}
        self.labeled = 0
        return out

    def observe_codes(self, labeler: Any, wheres: list[Where], events: list[dict[str, Any]] | None,
                      labels: list[dict[str, Any]] | None, codes: list[dict[str, Any]]) -> None:
        if self.codes:
            index, distinct = index_codes(codes)
            base = len(self.outcomes)
            self.outcomes.extend(distinct)
            self.index.extend([k + base for k in index] if base else index)
            self.positions.extend([pos for _, pos in wheres])
        if self.guarded:
            assert labels is not None, "the bulk path gives each record's labels with its codes"
            base = self.labeled
            field = self.labels_field
            # A record that already had the labels field is serialised whole, its labels where
            # the field was: None tells _labels_offset so (its tail may hold an equal object).
            whole = [field in event for event in events] if events is not None else None
            for name, (at, values, kept) in self.sets.items():
                for k, record_labels in enumerate(labels):
                    if name in record_labels:
                        at.append(base + k)
                        values.append(record_labels[name])
                        kept.append(None if whole is None or whole[k] else record_labels)
        self.labeled += len(codes)

    def observe_indexed_codes(self, labeler: Any, wheres: list[Where], index: list[int],
                              distinct: list[dict[str, Any]], events: list[dict[str, Any]] | None = None,
                              labels: list[dict[str, Any]] | None = None) -> None:
        raise ActiveLabelError("a worker's codes go to the parent, not back into a worker")

    def __call__(self, wheres: list[Where], events: list[dict[str, Any]], decisions: list[Any]) -> None:
        raise ActiveLabelError("a parallel audited run builds no Decisions (--explain audits in one process)")


def _labels_offset(line: bytes, labels: dict[str, Any] | None) -> int:
    """Where ``labels``' JSON starts in ``line`` when it was spliced in last, else -1 (None: serialised whole)."""
    if labels is None:
        return -1
    text = orjson.dumps(labels)
    if len(line) > len(text) and line.endswith(b"}") and line[-1 - len(text):-1] == text:
        return len(line) - 1 - len(text)
    return -1


def _overflowed(line: bytes, offset: int, name: str, overflow: str, labels_field: str) -> bytes:
    """``line`` with label ``name`` set to the overflow value, as the one-process run writes it."""
    if offset >= 0:  # the labels object spliced in before the closing brace: change only it
        labels = orjson.loads(line[offset:-1])
        labels[name] = overflow
        return line[:offset] + orjson.dumps(labels) + b"}"
    record = orjson.loads(line)  # a record the loop serialised whole: so does this
    record[labels_field][name] = overflow
    return orjson.dumps(record)


def apply_guards(guards: dict[str, CardinalityGuard], found: dict[str, tuple[list[int], list[Any], list[int]]],
                 labeled: bytes, labels_field: str) -> bytes:
    """A block's labeled lines after the parent's guards, in input order: overflowing values replaced."""
    changes: dict[int, list[tuple[str, int, str]]] = {}
    for name, (at, values, offsets) in found.items():
        guard = guards[name]
        for i in guard.admit_many(values):
            changes.setdefault(at[i], []).append((name, offsets[i], guard.overflow_value))
    if not changes:
        return labeled
    lines = labeled.split(b"\n")
    for k, overflows in changes.items():
        line = lines[k]
        for name, offset, overflow in overflows:
            line = _overflowed(line, offset, name, overflow, labels_field)
        lines[k] = line
    return b"\n".join(lines)


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


# One per worker process: set by the pool initializer from the labeler inherited on fork.
_worker_loop: RecordLoop | None = None
_worker_labeler: Labeler | None = None
_worker_codes: _CollectCodes | None = None
_inherited: Labeler | None = None
_worker_files: dict[str, IO[bytes]] = {}


def _init_worker(settings: WorkerSettings) -> None:
    global _worker_loop, _worker_labeler, _worker_codes
    labeler = _inherited
    assert labeler is not None, "workers are forked after run_parallel sets it"
    _worker_labeler = labeler
    for lp in labeler.compiled.plan.labels:
        if lp.spec.name in settings.guarded and isinstance(lp.guard, CardinalityGuard):
            lp.guard.admit_everything()  # the parent guards these, in input order
    _worker_codes = (_CollectCodes(settings.codes, settings.guarded, settings.labels_field)
                     if settings.codes or settings.guarded else None)
    _worker_loop = RecordLoop(labeler, limits=settings.limits, labels_field=settings.labels_field, explain=settings.explain,
                              observer=_worker_codes)


def _label_block(path: str, start: int, end: int) -> BlockResult:
    loop, labeler = _worker_loop, _worker_labeler
    assert loop is not None and labeler is not None, "the pool initializer sets both"
    fh = _worker_files.get(path)
    if fh is None:
        fh = _worker_files[path] = open(path, "rb")  # noqa: SIM115 - kept open for this worker's next blocks
    fh.seek(start)
    data = fh.read(end - start)
    if start == 0:
        data = data.removeprefix(UTF8_BOM)
    lines = data.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()  # the block's last line ending
    out = _Collect()
    counts = loop.run([(None, lines)], out)
    return BlockResult(os.getpid(), len(lines), b"\n".join(out.lines), len(out.lines), out.dead, counts,
                       labeler.stats(), labeler.hits_by_source(),
                       _worker_codes.take() if _worker_codes is not None else None,
                       _worker_codes.guarded_values(out.lines) if _worker_codes is not None else None)


def file_spans(path: str, block_bytes: int = BLOCK_BYTES) -> Iterator[tuple[int, int]]:
    """``(start, end)`` byte offsets of ``path`` cut into blocks of whole lines of about ``block_bytes``."""
    size = os.path.getsize(path)
    start = 0
    with open(path, "rb") as fh:
        while start < size:
            end = start + block_bytes
            if end >= size:
                end = size
            else:
                fh.seek(end)
                while True:  # on to the end of the line the cut falls in
                    chunk = fh.read(1 << 16)
                    if not chunk:
                        end = size
                        break
                    at = chunk.find(b"\n")
                    if at >= 0:
                        end += at + 1
                        break
                    end += len(chunk)
            yield start, end
            start = end


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


def _os_threads() -> int:
    """Threads of this process, native ones included (a Polars pool is invisible to ``threading``)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


def fork_refusal() -> str | None:
    """Why worker processes cannot be forked from this one now, or None when they can.

    Workers are forked, so they inherit the compiled labeler (no second compile, no
    re-import). Forking a process that has other threads (a Polars pool, a server) can
    leave a lock held forever in the child, so such a process labels alone.
    """
    if "fork" not in multiprocessing.get_all_start_methods():
        return "this platform cannot fork worker processes"
    if _os_threads() != 1:
        return "this process already runs threads (forking it could deadlock a worker)"
    return None


def run_parallel(labeler: Labeler, settings: WorkerSettings, inputs: Iterable[tuple[str, str]],
                 sink: JsonlSink, dead: DeadLetterSink, *, workers: int,
                 on_block: Callable[[int], None] | None = None, block_bytes: int = BLOCK_BYTES,
                 observer: CodesObserver | None = None) -> ParallelRun:
    """Label the regular files ``inputs`` (``(path, name in dead letters)``) in ``workers`` processes, writing in order.

    Workers read their blocks from the files themselves (the parent only cuts them at
    line ends, ``file_spans``), so the parent's work is writing the results in order.
    ``labeler`` is the parent's compiled labeler: the forked workers each use their copy
    (its counters are still zero: the parent labels nothing itself). Raises
    ``ActiveLabelError`` when this process cannot fork safely (``fork_refusal``), before
    anything is read. ``on_block(bytes of input done)`` runs after each block is written.
    ``observer`` (one whose ``needs_values`` is False: the audit log at Metadata) sees each
    block's source codes in input order, before the block is written, as in one process;
    ``settings.codes`` must be set for the workers to send them.
    """
    global _inherited
    guards = deferred_guards(labeler) if settings.guarded else {}
    if set(guards) != set(settings.guarded):
        raise ActiveLabelError("cannot label in parallel: a rule reads a guarded label; label in one process (--workers 1)")
    refusal = fork_refusal()
    if refusal is not None:
        raise ActiveLabelError(f"cannot label in parallel: {refusal}; label in one process (--workers 1)")
    ctx = multiprocessing.get_context("fork")
    _inherited = labeler
    counts = RecordCounts()
    latest: dict[int, BlockResult] = {}
    pending: deque[tuple[str, int, AsyncResult[BlockResult]]] = deque()
    line_no: dict[str, Any] = {"name": "", "next": 1}
    try:
        with ctx.Pool(workers, initializer=_init_worker, initargs=(settings,)) as pool:

            def finish_oldest() -> None:
                name, size, future = pending.popleft()
                result = future.get()
                if line_no["name"] != name:
                    line_no["name"], line_no["next"] = name, 1
                first_line = line_no["next"]
                line_no["next"] += result.lines
                if observer is not None and result.codes is not None:
                    positions, index, outcomes = result.codes
                    origin = (name, first_line)  # the one-process loop's Where for this block
                    observer.observe_indexed_codes(labeler, [(origin, pos) for pos in positions], index, outcomes)
                labeled = result.labeled
                if result.guarded:  # the guards, in input order, on the values the worker let through
                    labeled = apply_guards(guards, result.guarded, labeled, settings.labels_field)
                if result.labeled_count:
                    sink.write_block(labeled, result.labeled_count)
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
                    on_block(size)

            for path, name in inputs:
                for start, end in file_spans(path, block_bytes):
                    pending.append((name, end - start, pool.apply_async(_label_block, (path, start, end))))
                    if len(pending) >= 2 * workers:
                        finish_oldest()
            while pending:
                finish_oldest()
    finally:
        _inherited = None
    stats = merge_stats(r.stats for r in latest.values())
    if stats is not None:
        for name, guard in guards.items():  # the workers' guards let everything through: the parent's count
            stats.overflow[name] = guard.overflowed
            stats.distinct[name] = guard.distinct
    return ParallelRun(counts, stats, merge_sources(r.hits_by_source for r in latest.values()), workers)


__all__ = ["BLOCK_BYTES", "MIN_PARALLEL_BYTES", "BlockResult", "ParallelRun", "WorkerSettings", "apply_guards",
           "deferred_guards", "default_workers", "file_spans", "fork_refusal", "merge_sources", "merge_stats",
           "parallel_refusal", "run_parallel"]
