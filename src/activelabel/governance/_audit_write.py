"""The audit log's write path: records rendered and chained a chunk at a time, written and signed off the labeler.

Kept apart from ``audit.py`` (levels, record building, recovery, retention) and
``audit_files.py`` (layout, keys, verification) because this is the part on the
labeling path's budget:

- ``Outcome``: what a Metadata record says about one decision (which labels were set,
  by which source). Decisions with the same outcome share one, and its canonical JSON
  fragments are rendered once, not once per record.
- ``Chunk`` / ``chain_lines``: a run of records as canonical lines, each carrying its
  ``index`` and the previous record's leaf hash (``prev``), with their RFC 9162 leaf
  hashes. A Metadata record is joined from pre-rendered bytes (its outcome's, its
  id's); anything else goes through ``canonical_json``. Both give the same RFC 8785
  bytes (``tests/test_audit_log.py`` checks them against the reference implementation).
- ``SegmentWriter``: one thread that writes the runs of records and makes checkpoints
  durable, in order: fsync of the segment, then the signed notes, then ``state.json``,
  so a note never covers a record that is not on disk.
- ``WriterProcess``: a forked child that runs all of the above for a labeling process
  (``AuditLog.start_writer_process``), fed chunk by chunk through a pipe.
- ``lock_directory``: ``writer.lock``, one writer per log.
"""

from __future__ import annotations

import binascii
import contextlib
import gc
import hashlib
import os
import pickle
import queue
import signal
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from activelabel.errors import AuditError
from activelabel.governance._merkle import Checkpoint, canonical_json, sign_note

# The keys of a Metadata record in RFC 8785 order (all ASCII, so UTF-16 order is byte order):
# arm, bundles, decision_id, door, index, kind, labels_set, level, prev, sources, timestamp.
# ``index`` and ``prev`` sit between fixed pieces, so a record is a join of seven parts.
_KIND_AND_SET = b',"kind":"decision","labels_set":'
_LEVEL_AND_PREV = b',"level":"Metadata","prev":"'
_SOURCES = b'","sources":'


class Outcome:
    """One way a decision came out, as a Metadata record says it: the labels set, and each one's source.

    Immutable once made; ``AuditLog`` caches its rendered JSON on it, so share one object
    between all the decisions it describes (``AuditObserver`` does, per distinct source codes).
    """

    __slots__ = ("_mid", "_sources_json", "names", "sources")

    def __init__(self, names: Sequence[str], sources: Mapping[str, str]) -> None:
        self.names: tuple[str, ...] = tuple(names)
        self.sources: Mapping[str, str] = sources
        self._mid: bytes | None = None
        self._sources_json: bytes | None = None

    def pieces(self) -> tuple[bytes, bytes]:
        """``(labels_set up to prev, sources JSON)``, rendered on first use (TypeError: not encodable)."""
        if self._mid is None:
            self._sources_json = _SOURCES + canonical_json(dict(self.sources))
            self._mid = _KIND_AND_SET + canonical_json(list(self.names)) + _LEVEL_AND_PREV
        assert self._sources_json is not None
        return self._mid, self._sources_json


def record_prefix(arm: str, policy_name: str, version: str) -> bytes:
    """The canonical bytes of a Metadata record before its ``decision_id`` value."""
    return (b'{"arm":' + canonical_json(arm) + b',"bundles":' + canonical_json({policy_name: {"revision": version}})
            + b',"decision_id":')


def door_piece(door: str) -> bytes:
    """The canonical bytes between a Metadata record's ``decision_id`` value and its ``index`` value."""
    return b',"door":' + canonical_json(door) + b',"index":'


def stamp_piece(stamp: str) -> bytes:
    """The canonical bytes after a Metadata record's sources: its timestamp and the closing brace."""
    return b',"timestamp":' + canonical_json(stamp) + b"}"


_NO_PIECES: list[tuple[bytes, bytes] | None] = [None]

# Where runs wait when the writer is behind (SegmentWriter), under the log's directory.
SPILL_DIR = "spill"
SPILL_FILE = "runs.spill"
_MAX_PENDING_CHECKPOINTS = 16  # a table with kind 0 only: whole records


@dataclass
class Chunk:
    """Records to append, in order, in the form the chaining loop reads fastest.

    Record ``j`` is a Metadata record when ``pieces[kinds[j]]`` is a ``(mid, tail)`` pair:
    its line is ``prefix + heads[j] + door + index + mid + prev + tail + stamp``. ``kinds[j] == 0``
    (``pieces[0]`` is None) marks any other record, given whole in ``general[j]``.

    Ids numbered under one prefix (``FILE:LINE``) come as ``numbers`` instead of ``heads``:
    ``heads[j]`` is then ``b"%d" % numbers[j]`` (``prefix`` ends with the id's opening quote
    and prefix, ``door`` starts with its closing quote). The writer renders them as it chains,
    so the labeling process neither renders nor pickles a head per record.
    """

    prefix: bytes = b""
    door: bytes = b""
    heads: list[bytes] = field(default_factory=list)
    kinds: list[int] = field(default_factory=list)
    # None: the log's pieces table (AuditLog fills it in before chaining), which
    # ``fresh`` adds to (after clearing it when ``reset``): an outcome's pieces cross
    # to a writer process once, not with every chunk.
    pieces: list[tuple[bytes, bytes] | None] | None = field(default_factory=lambda: _NO_PIECES.copy())
    general: dict[int, dict[str, Any]] = field(default_factory=dict)
    numbers: Sequence[int] | None = None
    stamp: bytes = b""  # the timestamp and closing brace, after the sources piece
    fresh: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)
    reset: bool = False
    _piece_bound: int | None = field(default=None, repr=False, compare=False)

    @classmethod
    def of_records(cls, records: Sequence[dict[str, Any]]) -> Chunk:
        """A chunk of whole records (admin actions, decisions above Metadata)."""
        return cls(heads=[b""] * len(records), kinds=[0] * len(records), general=dict(enumerate(records)))

    def __len__(self) -> int:
        return len(self.kinds)

    def metadata_line_bound(self) -> int:
        """An upper bound on the bytes of any Metadata line of the chunk (its newline included)."""
        if self.numbers is not None:
            numbers = self.numbers
            ends = (numbers[0], numbers[-1]) if isinstance(numbers, range) and numbers else numbers
            head = len(b"%d" % max(map(abs, ends), default=0)) + 1  # and its sign, if any
        else:
            head = max(map(len, self.heads), default=0)
        if self._piece_bound is None:  # the pieces a chunk uses never change
            pieces = self.pieces
            assert pieces is not None, "AuditLog sets the pieces table before chaining"
            used = (pieces[kind] for kind in set(self.kinds) if kind > 0)
            self._piece_bound = max((len(p[0]) + len(p[1]) for p in used if p is not None), default=0)
        return (len(self.prefix) + head + len(self.door) + 20 + self._piece_bound + len(self.stamp) + 44
                + 1)  # 20: index digits, 44: prev


def chain_lines(chunk: Chunk, start: int, stop: int, index: int, prev64: bytes,
                room_bytes: int) -> tuple[list[bytes], list[bytes], int, int, bytes, int]:
    """Render records ``start..stop-1`` of ``chunk`` as chained canonical lines, from record ``index`` after ``prev64``.

    Stops early after the line that fills ``room_bytes`` (a segment's remaining size).
    Returns ``(lines, leaf hashes, next position in the chunk, bytes incl. newlines,
    prev64 after the last line, records left out as unencodable)``.
    """
    sha = hashlib.sha256
    b2a = binascii.b2a_base64
    join = b"".join
    prefix, door, heads, kinds, pieces, general = (chunk.prefix, chunk.door, chunk.heads, chunk.kinds, chunk.pieces,
                                                   chunk.general)
    numbers, stamp = chunk.numbers, chunk.stamp
    assert pieces is not None, "AuditLog sets the pieces table before chaining"
    lines: list[bytes] = []
    leaves: list[bytes] = []
    add_line, add_leaf = lines.append, leaves.append
    if not general and chunk.metadata_line_bound() * (stop - start) < room_bytes:
        # The common run: Metadata records only, and the segment has room for all of them.
        # A record's id is its number (rendered here) or its ready JSON head: one format for either.
        line_format = b"%s%d%s%d%s%s%s%s" if numbers is not None else b"%s%s%s%d%s%s%s%s"
        ids = numbers[start:stop] if numbers is not None else heads[start:stop]
        for record_id, kind in zip(ids, kinds[start:stop]):
            mid, tail = pieces[kind]  # type: ignore[misc]  # no whole records in this chunk: never None
            line = line_format % (prefix, record_id, door, index, mid, prev64, tail, stamp)
            leaf = sha(b"\x00" + line).digest()
            add_line(line)
            add_leaf(leaf)
            prev64 = b2a(leaf, newline=False)
            index += 1
        return lines, leaves, stop, sum(map(len, lines)) + len(lines), prev64, 0
    nbytes = 0
    unencodable = 0
    j = start
    while j < stop:
        piece = pieces[kinds[j]]
        if piece is not None:
            head = b"%d" % numbers[j] if numbers is not None else heads[j]
            line = join((prefix, head, door, b"%d" % index, piece[0], prev64, piece[1], stamp))
        else:
            record = general[j]
            record["index"] = index
            record["prev"] = prev64.decode()
            try:
                line = canonical_json(record)
            except (AuditError, TypeError):
                unencodable += 1
                j += 1
                continue
        j += 1
        leaf = sha(b"\x00" + line).digest()
        add_line(line)
        add_leaf(leaf)
        prev64 = b2a(leaf, newline=False)
        index += 1
        nbytes += len(line) + 1
        if nbytes >= room_bytes:
            break
    return lines, leaves, j, nbytes, prev64, unencodable


def write_all(fd: int, data: bytes) -> None:
    """Write every byte of ``data`` (OSError as the OS gives it)."""
    view = memoryview(data)
    done = 0
    while done < len(data):
        done += os.write(fd, view[done:])


def replace_file(path: Path, data: bytes) -> None:
    """Write ``path`` whole or not at all (a kill -9 mid-write leaves the old file)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@dataclass(frozen=True)
class WriterState:
    """Where the log stood before a run of records: what a failed write rewinds to."""

    index: int
    prev: bytes
    prev64: bytes
    subtrees: tuple[tuple[int, bytes], ...]
    segment_bytes: int
    since_checkpoint: int


class SegmentWriter:
    """Writes records and makes checkpoints durable, in order, on one thread.

    Jobs run in the order they are submitted: ``write`` (one run of records, one
    ``os.write``), ``checkpoint`` (fsync the segment, then the signed note, then
    ``state.json``: a note never covers a record that is not on disk) and ``close``.
    The labeling thread chains and hashes; the write and the fsync release the GIL, so
    they run on another core. Queued runs are held in memory up to ``memory_bytes``;
    when the writer falls behind (a slow fsync, a stalled disk) further runs spill to
    ``DIR/spill/runs.spill`` and the labeler goes on: the queue then holds only where
    each run sits in that file. The writer reads them back in order and empties the
    file once it has caught up. Only when the spill file reaches ``spill_max_bytes``
    does the labeler wait, so nothing is ever dropped for being late. A kill -9 loses
    the runs still in memory; spilled runs that chain on to the log's last record are
    written by the next ``AuditLog`` to open the directory (``replay_spill``).

    A write that fails is cut back off the file (no partial record is left inside the
    log); it and every run queued after it (they chain onto it) are skipped and counted
    in ``lost``, and ``rewind_to`` says where the labeling thread must go back to
    (``take_write_failure``). A checkpoint that fails is kept and raised by
    ``raise_failure``. The thread starts on first use: a process that forks labeling
    workers must have no other thread before it forks.
    """

    def __init__(self, directory: Path, key_name: str, key: Any, *, memory_bytes: int = 32 << 20,
                 spill_max_bytes: int = 1 << 30, on_spill: Callable[[int], Any] | None = None) -> None:
        self.directory = directory
        self.key_name = key_name
        self._key = key
        # Unbounded: a run's bytes beyond memory_bytes wait in the spill file, the queue holds where.
        self._queue: queue.Queue[tuple[Any, ...] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self.failure: BaseException | None = None  # a checkpoint that could not be written
        self.write_failure: BaseException | None = None
        self.rewind_to: WriterState | None = None
        self.lost = 0
        self._torn: dict[int, int] = {}  # fd -> size to cut it back to before its next write
        self.memory_bytes = memory_bytes
        self.spill_max_bytes = spill_max_bytes
        self._on_spill = on_spill
        self._room = threading.Condition()  # guards the byte counts below
        self._in_memory = 0  # bytes of queued runs held in memory
        self._spill_fd: int | None = None
        self._spill_end = 0  # bytes in the spill file
        self._spilled_queued = 0  # spilled runs not yet written to their segment
        self.spilled_bytes = 0  # total, for the log's metrics and its tests

    def write(self, fd: int, data: bytes, count: int, before: WriterState) -> None:
        """Queue one run of ``count`` records (``data``: their lines) for the segment open as ``fd``.

        In memory while the queued runs fit in ``memory_bytes``, else appended to the spill
        file; waits only when that is full too.
        """
        size = len(data)
        with self._room:
            while True:
                if self._in_memory + size <= self.memory_bytes or self._in_memory == 0:
                    self._in_memory += size
                    job: tuple[Any, ...] = ("write", fd, data, count, before)
                    break
                if self._spill_end + size <= self.spill_max_bytes:
                    job = ("write", fd, self._spill(data), count, before)
                    break
                self._room.wait(1.0)  # the disk is far behind: the labeler waits, nothing is dropped
        self._put(job)

    def _spill(self, data: bytes) -> tuple[int, int]:
        """Append ``data`` to the spill file (under ``_room``); where it now sits."""
        if self._spill_fd is None:
            spill = self.directory / SPILL_DIR
            spill.mkdir(exist_ok=True)
            self._spill_fd = os.open(spill / SPILL_FILE, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
            self._spill_end = os.fstat(self._spill_fd).st_size
        at = self._spill_end
        write_all(self._spill_fd, data)
        self._spill_end += len(data)
        self._spilled_queued += 1
        self.spilled_bytes += len(data)
        if self._on_spill is not None:
            self._on_spill(len(data))
        return at, len(data)

    def _take_data(self, data: bytes | tuple[int, int]) -> bytes:
        """A queued run's bytes: as queued, or read back from the spill file."""
        if isinstance(data, bytes):
            return data
        at, size = data
        assert self._spill_fd is not None, "a spilled run was queued after the spill file was opened"
        return os.pread(self._spill_fd, size, at)

    def _release(self, data: bytes | tuple[int, int]) -> None:
        """A queued run is done (written or skipped): free its room; an emptied spill file is cut back to 0."""
        with self._room:
            if isinstance(data, bytes):
                self._in_memory -= len(data)
            else:
                self._spilled_queued -= 1
                if self._spilled_queued == 0 and self._spill_fd is not None:
                    os.ftruncate(self._spill_fd, 0)
                    self._spill_end = 0
            self._room.notify_all()

    def checkpoint(self, fd: int | None, checkpoint: Checkpoint, note: Path, state: bytes) -> None:
        """Queue a checkpoint of everything written to ``fd`` before it."""
        self._put(("checkpoint", fd, checkpoint, note, state))

    def close_fd(self, fd: int) -> None:
        """Queue the closing of a segment once everything before is done."""
        self._put(("close", fd))

    def wait(self) -> None:
        """Return once every submitted job has run (or was skipped)."""
        if self._thread is not None:
            self._queue.join()

    def take_write_failure(self) -> tuple[BaseException, WriterState, int] | None:
        """After ``wait``: the failed write's error, the state to rewind to and the records lost; then clear it."""
        if self.write_failure is None or self.rewind_to is None:
            return None
        got = (self.write_failure, self.rewind_to, self.lost)
        self.write_failure, self.rewind_to, self.lost = None, None, 0
        return got

    def close(self) -> None:
        """Finish what was submitted and stop the thread."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        if self._spill_fd is not None:
            os.close(self._spill_fd)
            self._spill_fd = None
            with contextlib.suppress(OSError):
                if os.path.getsize(self.directory / SPILL_DIR / SPILL_FILE) == 0:
                    os.unlink(self.directory / SPILL_DIR / SPILL_FILE)

    def raise_failure(self) -> None:
        if self.failure is not None:
            raise AuditError(f"the audit log could not write a checkpoint in {self.directory}: {self.failure}; "
                             "free space or fix the permissions, then run `activelabel audit verify`") from self.failure

    def _put(self, job: tuple[Any, ...]) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="activelabel-audit-writer", daemon=True)
            self._thread.start()
        self._queue.put(job)

    def _run(self) -> None:
        # Checkpoints wait here until the queue is empty (or a segment closes): one fsync then
        # covers all of them, so a slow fsync holds back one batch of notes, not every write.
        pending: list[tuple[Any, ...]] = []
        while True:
            try:
                job = self._queue.get(block=not pending)
            except queue.Empty:
                self._flush(pending)
                continue
            if job is not None and job[0] == "checkpoint":
                pending.append(job)  # done (task_done) once flushed
                if len(pending) >= _MAX_PENDING_CHECKPOINTS:  # a writer kept busy still signs as it goes
                    self._flush(pending)
                continue
            try:
                if job is None or job[0] == "close":
                    self._flush(pending)
                if job is None:
                    return
                self._do(job, pending)
            except Exception as exc:  # noqa: BLE001 - kept and raised on the labeling thread
                self.failure = self.failure or exc
            finally:
                self._queue.task_done()

    def _do(self, job: tuple[Any, ...], pending: list[tuple[Any, ...]]) -> None:
        kind, fd = job[0], job[1]
        if kind == "close":
            self._torn.pop(fd, None)
            os.close(fd)
            return
        _, _, queued, count, before = job
        try:
            self._write_run(fd, queued, count, before, pending)
        finally:
            self._release(queued)

    def _write_run(self, fd: int, queued: bytes | tuple[int, int], count: int, before: WriterState,
                   pending: list[tuple[Any, ...]]) -> None:
        if self.write_failure is not None:
            self.lost += count  # it chains onto a record that is not on disk
            return
        try:
            data = self._take_data(queued)
            torn = self._torn.pop(fd, None)
            if torn is not None:
                os.ftruncate(fd, torn)
            write_all(fd, data)
        except OSError as exc:
            try:
                os.ftruncate(fd, before.segment_bytes)  # no partial record inside the log
            except OSError:
                self._torn[fd] = before.segment_bytes  # cut it back before the next write
            self._flush(pending)  # the checkpoints queued before this run sign records that are on disk
            self.write_failure, self.rewind_to, self.lost = exc, before, self.lost + count

    def _flush(self, pending: list[tuple[Any, ...]]) -> None:
        """Make the queued checkpoints durable: fsync each segment once, then the notes in order, then state.json."""
        if not pending:
            return
        try:
            if self.write_failure is None and self.failure is None:  # else they would sign records not on disk
                for fd in dict.fromkeys(job[1] for job in pending if job[1] is not None):
                    os.fsync(fd)
                for _, _, checkpoint, note, _state in pending:
                    replace_file(note, sign_note(checkpoint, self.key_name, self._key))
                replace_file(self.directory / "checkpoints" / "state.json", pending[-1][4])
        except Exception as exc:  # noqa: BLE001 - kept and raised on the labeling thread
            self.failure = self.failure or exc
        finally:
            for _ in pending:
                self._queue.task_done()
            pending.clear()


class WriterProcess:
    """A forked child that does a log's sequential work (chain, hash, write, checkpoints) on another core.

    The labeling process hands it each chunk (``send``) and goes on labeling; the pipe
    between them is the queue, so a child that falls behind slows the sender down and
    nothing piles up. ``call`` waits for an answer (a checkpoint, the close). The child
    owns the log's files from the fork on; it ignores SIGINT and SIGTERM and ends when
    it is told to close or when the pipe closes (its parent exited, even by kill -9),
    after writing what it was sent and a final checkpoint. An error in a chunk sent
    without an answer is kept by the child and raised by the next ``call``.
    """

    def __init__(self, serve: Callable[[tuple[Any, ...]], Any], finish: Callable[[], Any],
                 in_child: Callable[[], Any]) -> None:
        global _forking_writer
        to_child_r, to_child_w = os.pipe()
        to_parent_r, to_parent_w = os.pipe()
        _grow_pipe(to_child_w)
        _forking_writer = True
        try:
            pid = os.fork()
        finally:
            _forking_writer = False
        if pid == 0:  # the child: never returns
            os.close(to_child_w)
            os.close(to_parent_r)
            _child_main(to_child_r, to_parent_w, serve, finish, in_child)
        os.close(to_child_r)
        os.close(to_parent_w)
        self.pid = pid
        self._w, self._r = to_child_w, to_parent_r
        _PARENT_ONLY.update((to_child_w, to_parent_r))
        self._alive = True

    def send(self, message: tuple[Any, ...]) -> None:
        """Hand ``message`` to the child; no answer (AuditError when the child has gone)."""
        self._put((False, message))

    def call(self, message: tuple[Any, ...]) -> Any:
        """Hand ``message`` to the child and return its answer (AuditError for an error it had)."""
        self._put((True, message))
        reply = _read_message(self._r)
        if reply is None:
            self._alive = False
            raise AuditError("the audit writer process ended without answering; its records may be incomplete: "
                             "run `activelabel audit verify`")
        ok, value = reply
        if not ok:
            raise AuditError(str(value))
        return value

    def wait(self) -> int:
        """Wait for the child to exit; its exit status."""
        for fd in (self._w, self._r):
            _PARENT_ONLY.discard(fd)
            with contextlib.suppress(OSError):
                os.close(fd)
        _, status = os.waitpid(self.pid, 0)
        self._alive = False
        return os.waitstatus_to_exitcode(status)

    def _put(self, message: tuple[bool, tuple[Any, ...]]) -> None:
        if not self._alive:
            raise AuditError("the audit writer process has ended; nothing more can be written")
        try:
            write_all(self._w, _frame(message))
        except OSError as exc:  # BrokenPipeError: the child died
            self._alive = False
            raise AuditError(f"the audit writer process died ({exc}); run `activelabel audit verify`") from exc


def _grow_pipe(fd: int) -> None:
    """A 1 MiB pipe (Linux), so a chunk or two are in flight without the sender waiting."""
    try:
        import fcntl

        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)
    except (OSError, ImportError):
        pass  # the default size works too, with more waiting


def _read_exactly(fd: int, n: int) -> bytes | None:
    parts: list[bytes] = []
    while n:
        got = os.read(fd, min(n, 1 << 20))
        if not got:
            return None
        parts.append(got)
        n -= len(got)
    return b"".join(parts)


def _read_message(fd: int) -> Any:
    head = _read_exactly(fd, 8)
    if head is None:
        return None
    body = _read_exactly(fd, int.from_bytes(head, "little"))
    return None if body is None else pickle.loads(body)  # our own pipe, from our own fork


def _child_main(r: int, w: int, serve: Callable[[tuple[Any, ...]], Any], finish: Callable[[], Any],
                in_child: Callable[[], Any]) -> None:
    """The writer process: serve messages until told to close or the pipe closes, then exit."""
    code = 0
    try:
        # Everything inherited is shared with the labeling process page by page until written:
        # keep the collector off it, or each collection would copy the whole heap.
        gc.freeze()
        in_child()  # fresh locks and threads: the fork copied only the thread that forked
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C stops the labeler, which then closes the log
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        null = os.open(os.devnull, os.O_RDWR)
        for std in (0, 1, 2):  # hold no end of the caller's pipes (a reader waits for their EOF)
            os.dup2(null, std)
        pending: str | None = None
        while True:
            message = _read_message(r)
            if message is None:  # the labeling process is gone: keep what it sent
                finish()
                break
            wants_answer, body = message
            try:
                value = serve(body)
            except Exception as exc:  # noqa: BLE001 - reported to the labeling process, never lost
                pending = pending or f"{exc}"
                value = None
            if wants_answer:
                write_all(w, _frame((False, pending) if pending else (True, value)))
                pending = None
            if body[0] == "close":
                break
    except BaseException:  # noqa: BLE001 - a child must never return into the parent's code
        code = 1
    finally:
        os._exit(code)


def _frame(message: Any) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return len(data).to_bytes(8, "little") + data


# File descriptors a forked child must not keep (a labeling worker, not the writer process):
# the parent's ends of writer pipes and the logs' directory locks. A worker that kept them
# would keep a writer process waiting, or a log locked, after its parent died.
_PARENT_ONLY: set[int] = set()
_forking_writer = False


def _close_parent_only() -> None:
    if _forking_writer:
        return  # the writer process itself: it keeps the lock it writes under
    for fd in list(_PARENT_ONLY):
        with contextlib.suppress(OSError):
            os.close(fd)
    _PARENT_ONLY.clear()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_close_parent_only)


def lock_directory(directory: Path, wait_s: float = 30.0) -> int:
    """Hold ``DIR/writer.lock`` (one writer per log): a second writer waits for it, then gives up.

    Returns the descriptor that holds the lock; closing it (in every process that has it)
    releases it. Without ``fcntl`` (Windows) there is no lock: -1.
    """
    try:
        import fcntl
    except ImportError:
        return -1
    import time

    fd = os.open(directory / "writer.lock", os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                raise AuditError(f"{directory} is being written by another process (it holds writer.lock); wait for "
                                 "it to finish, or give --audit another directory") from None
            time.sleep(0.05)  # the other writer is finishing (a writer process closing after its labeler)
        else:
            _PARENT_ONLY.add(fd)
            return fd


def unlock_directory(fd: int) -> None:
    """Release a lock taken by ``lock_directory``."""
    if fd < 0:
        return
    _PARENT_ONLY.discard(fd)
    with contextlib.suppress(OSError):
        os.close(fd)
