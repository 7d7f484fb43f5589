"""The one record loop: decode → label → write | dead-letter, with counts that add up.

Every front door that labels serialized records runs this loop: ``activelabel label``
(files, stdin), the Kafka stream worker, and any later door (HTTP batch, OTLP logs).
A door supplies blocks of raw records and a ``RecordOutput`` saying where labeled
records and dead letters go; the loop owns everything in between:

- **decode**: each raw record is a JSON object (``ReadLimits`` bound its size and
  depth); anything else is dead-lettered with a stable ``kind`` and a reason;
- **label**: through the Labeler's public bulk surface (``Labeler.label_lines``,
  column-wise for large chunks) or, when whole decisions are needed (``explain``,
  ``on_decision``), ``Labeler.label`` per record;
- **write** the original bytes with the labels spliced in, or **dead-letter** the
  original bytes: every record ends in exactly one of them, so
  ``records_in == labeled + dead_lettered`` (``RecordCounts``).

Output order is input order; dead letters are handed over as they are found. Records
are labeled ``CHUNK_RECORDS`` at a time and each block is finished before the next is
read, so a slow pipe (or a Kafka batch) is labeled as it arrives.

    >>> loop = RecordLoop(labeler, limits=ReadLimits())                 # doctest: +SKIP
    >>> counts = loop.run([(origin, [b'{"status": 503}'])], output)     # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import orjson

from activelabel.errors import ActiveLabelError
from activelabel.sinks import DeadLetterSink, JsonlSink, splice_fields
from activelabel.sinks.jsonl import JSON_WHITESPACE, rewrite_refusal
from activelabel.sources import JsonlSource
from activelabel.sources.jsonl import PARSER_MAX_DEPTH, ReadLimits, decode_line

if TYPE_CHECKING:
    from activelabel.engine.decision import Decision
    from activelabel.engine.labeler import LinesResult
    from activelabel.governance.output import OutputGuard

#: The bytes after which the fast splice cannot add `,"labels":...`: an opening brace
#: and JSON's four whitespace characters (any other byte before `}` ends a value).
NO_COMMA_BEFORE = (b"{", b" ", b"\t", b"\r", b"\n")

#: Records labeled at once (the columnar path's sweet spot; bounds memory per chunk).
CHUNK_RECORDS = 4096

#: A block of input: an origin the output understands (a file and its first line, a
#: list of Kafka messages) and the raw records in it (None: a record with no value).
Block = tuple[Any, Sequence[bytes | None]]

#: Where a record came from: its block's origin and its position in the block.
Where = tuple[Any, int]


@runtime_checkable
class BulkLabeler(Protocol):
    """What the loop needs of a labeler: ``activelabel.Labeler`` has it (see ``PerEventLabeler``)."""

    def label_lines(self, raws: list[bytes], events: list[dict[str, Any]], labels_field: str = "labels") -> LinesResult:
        ...

    def label(self, event: dict[str, Any]) -> Decision:
        ...


class EventLabeler(Protocol):
    """The smaller shape a door may be given (the stream worker's ``StreamLabeler``)."""

    def labels_only(self, event: dict[str, Any]) -> dict[str, Any]:
        ...

    def label(self, event: dict[str, Any]) -> Any:
        ...


class PerEventLabeler:
    """A ``BulkLabeler`` over anything with ``labels_only`` and ``label``, one event at a time."""

    def __init__(self, labeler: EventLabeler) -> None:
        self._labeler = labeler
        self.label = labeler.label

    def label_lines(self, raws: list[bytes], events: list[dict[str, Any]], labels_field: str = "labels") -> LinesResult:
        from activelabel.engine.labeler import LinesResult

        return LinesResult(*splice_each(self._labeler.labels_only, raws, events, labels_field))


def as_bulk(labeler: BulkLabeler | EventLabeler) -> BulkLabeler:
    """``labeler`` itself when it labels lines in bulk, else a per-event adapter around it."""
    return labeler if isinstance(labeler, BulkLabeler) else PerEventLabeler(labeler)


def splice_each(labels_of: Callable[[dict[str, Any]], Any], raws: list[bytes], events: list[dict[str, Any]],
                labels_field: str, *, pairs: bool = False, answers: list[Any] | None = None
                ) -> tuple[list[bytes], list[tuple[int, str]]]:
    """Each event's labels spliced into its line; ``(position, reason)`` for those whose labeling raised.

    ``pairs``: ``labels_of`` returns ``(labels, codes)`` (the generated function itself, no wrapper call);
    ``answers`` then collects each spliced event's pair, aligned with the lines.
    """
    dumps = orjson.dumps
    prefix = b"," + dumps(labels_field) + b":"
    lines: list[bytes] = []
    append = lines.append
    failed: list[tuple[int, str]] = []
    keep = answers.append if answers is not None and pairs else None
    for i, (raw, event) in enumerate(zip(raws, events)):
        try:
            if pairs:
                answer = labels_of(event)
                labels = answer[0]
            else:
                labels = labels_of(event)
            # The common case, `{...}` with no labels field yet: append before the closing brace,
            # unless it follows `{` or JSON whitespace (`{\r}`, `{"a":1 }`: splice_fields trims it).
            if raw[-1:] == b"}" and raw[-2:-1] not in NO_COMMA_BEFORE and labels_field not in event:
                append(raw[:-1] + prefix + dumps(labels) + b"}")
            else:
                append(splice_fields(raw, event, {labels_field: labels}))
            if keep is not None:
                keep(answer)
        except Exception as exc:  # noqa: BLE001 - a front door's last line of defence: never lose a record
            failed.append((i, str(exc) if isinstance(exc, ActiveLabelError) else f"{type(exc).__name__}: {exc}"))
    return lines, failed


def index_codes(codes: list[dict[str, Any]]) -> tuple[list[int], list[dict[str, Any]]]:
    """Each record's index into its chunk's distinct source codes, and those codes, each once.

    Two codes dicts are equal when their values are: a source code belongs to one label
    (``Labeler.source_table()``), so the codes say which labels are set. That makes the
    key a tuple of a few ints, not of ``(name, code)`` pairs.
    """
    by_value: dict[tuple[Any, ...], int] = {}
    distinct: list[dict[str, Any]] = []
    index: list[int] = []
    add, get = index.append, by_value.get
    for c in codes:
        key = tuple(c.values())
        k = get(key)
        if k is None:
            k = by_value[key] = len(distinct)
            distinct.append(c)
        add(k)
    return index, distinct


class RecordOutput(Protocol):
    """Where a record loop's results go (a JSONL file pair, a Kafka topic pair, an HTTP response)."""

    def write_many(self, where: list[Where], lines: list[bytes]) -> list[tuple[int, str, str]]:
        """Write labeled records in order; return ``(index into lines, kind, reason)`` for any refused."""
        ...

    def dead_letter(self, where: Where, raw: bytes | None, kind: str, reason: str) -> None:
        """Hand over the original bytes of a record that could not be labeled, with why."""
        ...


#: Sees each chunk once labeled, before it is written: where each record came from, the
#: decoded events and the served Decisions, aligned (``RecordLoop(observer=...)``).
ChunkObserver = Callable[[list[Where], list[dict[str, Any]], list["Decision"]], None]


@runtime_checkable
class CodesLabeler(Protocol):
    """A labeler whose bulk path can give each event's labels and source codes (``activelabel.Labeler``)."""

    @property
    def version(self) -> str:
        ...

    def label_lines(self, raws: list[bytes], events: list[dict[str, Any]], labels_field: str = "labels", *,
                    codes: bool = False) -> LinesResult:
        ...

    def source_table(self) -> list[tuple[str, str | None, float]]:
        ...


@runtime_checkable
class CodesObserver(Protocol):
    """A chunk observer that can do with each record's labels and source codes instead of whole Decisions.

    The loop then keeps its bulk path (no Decision is built) and calls ``observe_codes``;
    it still calls the observer with Decisions when it builds them anyway (``explain``,
    ``on_decision``, an output guard) or when the labeler cannot give codes. With
    ``needs_values`` False, ``events`` and ``labels`` may be None (the parallel path
    sends only the codes from its workers, engine/parallel.py).
    """

    @property
    def needs_values(self) -> bool:
        ...

    def observe_codes(self, labeler: CodesLabeler, wheres: list[Where], events: list[dict[str, Any]] | None,
                      labels: list[dict[str, Any]] | None, codes: list[dict[str, Any]]) -> None:
        """A labeled chunk: record ``j`` has the source codes ``codes[j]``."""

    def observe_indexed_codes(self, labeler: CodesLabeler, wheres: list[Where], index: list[int],
                              distinct: list[dict[str, Any]], events: list[dict[str, Any]] | None = None,
                              labels: list[dict[str, Any]] | None = None) -> None:
        """The same, with each distinct codes dict given once: record ``j`` has ``distinct[index[j]]``."""

    def __call__(self, wheres: list[Where], events: list[dict[str, Any]], decisions: list[Decision]) -> None:
        ...


@dataclass
class RecordCounts:
    """Counts of one run: ``records_in == labeled + dead_lettered`` always."""

    records_in: int = 0
    labeled: int = 0
    dead_lettered: int = 0
    dead_letter_kinds: dict[str, int] = field(default_factory=dict)


class RecordLoop:
    """Decode, label and write (or dead-letter) records, a block at a time.

    ``jsonl``: records are lines of a text stream: blank lines are skipped (not records)
    and a trailing CR is dropped. ``explain`` adds a ``label_meta`` object;
    ``on_decision(event, decision)`` sees each labeled record's Decision (``--record``);
    ``observer(wheres, events, decisions)`` sees each labeled chunk (a shadow, the audit log);
    a ``CodesObserver`` sees it as labels and source codes on the bulk path instead.
    """

    def __init__(self, labeler: BulkLabeler | EventLabeler, *, limits: ReadLimits = ReadLimits(), labels_field: str = "labels",
                 explain: bool = False, on_decision: Callable[[dict[str, Any], Decision], None] | None = None,
                 jsonl: bool = True, chunk_records: int = CHUNK_RECORDS, guard: OutputGuard | None = None,
                 observer: ChunkObserver | None = None) -> None:
        self.labeler = as_bulk(labeler)
        # Privacy hook: the output's guard protects each record's labels before it is written
        # (None or ``guard.passthrough``: nothing to protect, the columnar fast path stays).
        self.guard = guard if guard is not None and not guard.passthrough else None
        self.limits = limits
        self.labels_field = labels_field
        self.explain = explain
        self.on_decision = on_decision
        self.jsonl = jsonl
        self.chunk_records = chunk_records
        self.observer = observer
        # The audit log needs only each record's source codes: no Decisions, the bulk path stays.
        coder = self.labeler if isinstance(self.labeler, CodesLabeler) else None
        self._codes: tuple[CodesObserver, CodesLabeler] | None = (
            (observer, coder) if coder is not None and isinstance(observer, CodesObserver) else None)

    def run(self, blocks: Iterable[Block], output: RecordOutput) -> RecordCounts:
        """Run every block through the loop; labeled records are written by the time this returns."""
        counts = RecordCounts()
        kinds = counts.dead_letter_kinds
        limits = self.limits
        max_bytes, max_depth = limits.max_line_bytes, limits.max_depth
        if max_depth >= PARSER_MAX_DEPTH:
            max_depth = 1 << 62  # the parser enforces it: skip the bracket count
        loads = orjson.loads
        decode_error = orjson.JSONDecodeError
        jsonl = self.jsonl
        labels_field, explain = self.labels_field, self.explain
        decisions = self.explain or self.on_decision is not None or self.guard is not None
        chunk = self.chunk_records
        pend_where: list[Where] = []
        pend_raw: list[bytes] = []
        pend_event: list[dict[str, Any]] = []
        records = 0

        pend_dead: list[tuple[Where, bytes | None, str, str]] = []

        def dead(where: Where, raw: bytes | None, kind: str, reason: str) -> None:
            # Held until the pending records are labeled, so dead letters leave in input order
            # (a record refused at labeling or writing sits among the ones refused at decoding).
            counts.dead_lettered += 1
            kinds[kind] = kinds.get(kind, 0) + 1
            pend_dead.append((where, raw, kind, reason))

        def flush() -> None:
            if pend_event:
                self._label_and_write(pend_where, pend_raw, pend_event, output, counts, dead, decisions)
            if pend_dead:
                pend_dead.sort(key=lambda d: d[0][1])  # one block's positions: input order
                for where, raw, kind, reason in pend_dead:
                    output.dead_letter(where, raw, kind, reason)
                pend_dead.clear()
            pend_where.clear()
            pend_raw.clear()
            pend_event.clear()

        for origin, raws in blocks:
            for pos, raw in enumerate(raws):
                if raw is None:
                    records += 1
                    dead((origin, pos), None, "empty", "the message has no value (a tombstone)")
                    continue
                if jsonl:
                    if raw[-1:] == b"\r":
                        raw = raw[:-1]
                    if not raw or (raw.isspace() and not raw.strip(JSON_WHITESPACE)):
                        continue  # blank: JSON whitespace only (a `\x0b` or `\x0c` line is a bad record)
                records += 1
                if len(raw) > max_bytes or (max_depth < PARSER_MAX_DEPTH and raw.count(b"{") + raw.count(b"[") > max_depth):
                    decoded = decode_line(raw, limits)  # the slow, complete check: too large, too deep
                    if not isinstance(decoded, dict):
                        dead((origin, pos), raw, decoded[0], decoded[1])
                        continue
                    event = decoded
                else:
                    try:
                        value = loads(raw)
                    except decode_error:
                        value = None
                    if value.__class__ is dict:
                        event = value
                    else:
                        got = decode_line(raw, limits)  # says why: invalid UTF-8, JSON, not an object
                        if isinstance(got, tuple):
                            dead((origin, pos), raw, got[0], got[1])
                            continue
                        event = got
                if labels_field in event or (explain and "label_meta" in event):
                    refusal = rewrite_refusal(event, labels_field)
                    if refusal is not None:  # found before labeling: the labeler's counters never see it
                        dead((origin, pos), raw, "unwritable", refusal)
                        continue
                pend_where.append((origin, pos))
                pend_raw.append(raw)
                pend_event.append(event)
                if len(pend_event) >= chunk:
                    flush()
            if pend_event or pend_dead:
                flush()  # a block is what the source has now: a slow pipe is labeled as it arrives
        counts.records_in = records
        return counts

    def _label_and_write(self, wheres: list[Where], raws: list[bytes], events: list[dict[str, Any]], output: RecordOutput,
                         counts: RecordCounts, dead: Callable[[Where, bytes | None, str, str], None], decisions: bool) -> None:
        """Label the pending records, write the labeled lines in order, dead-letter what labeling or writing refused."""
        decided: list[Decision] | None = None
        coded: LinesResult | None = None
        if decisions:
            lines, failed, decided = self._label_decisions(raws, events)
        elif self._codes is not None:
            coded = self._codes[1].label_lines(raws, events, self.labels_field, codes=True)
            lines, failed = coded.lines, coded.failed
        elif self.observer is not None:
            lines, failed, decided = self._label_observed(raws, events)
        else:
            result = self.labeler.label_lines(raws, events, self.labels_field)
            lines, failed = result.lines, result.failed
        kept: Sequence[int] = range(len(wheres))
        if failed:
            bad = {i for i, _ in failed}
            for i, reason in failed:
                dead(wheres[i], raws[i], "label_failed", reason)
            kept = [i for i in kept if i not in bad]
            wheres = [wheres[i] for i in kept]
        # Observers (shadow, audit) see the served decisions of the records about to be written.
        if coded is not None and self._codes is not None and coded.codes is not None:
            observer, coder = self._codes
            observer.observe_codes(coder, wheres, events if not failed else [events[i] for i in kept], coded.labels,
                                   coded.codes)
        elif self.observer is not None and decided is not None:
            self.observer(wheres, events if not failed else [events[i] for i in kept], decided)
        refused = output.write_many(wheres, lines) if lines else []
        for i, kind, reason in refused:
            dead(wheres[i], raws[kept[i]], kind, reason)
        counts.labeled += len(lines) - len(refused)

    def _label_observed(self, raws: list[bytes], events: list[dict[str, Any]]
                        ) -> tuple[list[bytes], list[tuple[int, str]], list[Decision]]:
        """Whole Decisions for an observer, spliced exactly as the bulk path splices labels."""
        batch = getattr(self.labeler, "label_batch", None)
        got: list[Decision | None]
        try:
            got = list(batch(events)) if batch is not None else [self.labeler.label(e) for e in events]
        except Exception:  # noqa: BLE001 - one bad event must not sink the chunk: label it per event
            got = []
            for event in events:
                try:
                    got.append(self.labeler.label(event))
                except Exception:  # noqa: BLE001 - reported below as label_failed
                    got.append(None)
        kept = [(i, d) for i, d in enumerate(got) if d is not None]
        served = iter([d.labels for _, d in kept])  # splice_each asks once per event, in order

        def labels_of(_event: dict[str, Any]) -> dict[str, Any]:
            return next(served)

        lines, failed = splice_each(labels_of, [raws[i] for i, _ in kept], [events[i] for i, _ in kept],
                                    self.labels_field)
        bad = {i for i, _ in failed}
        failed = [(kept[j][0], reason) for j, reason in failed]
        failed += [(i, "the labeler raised on this event") for i, d in enumerate(got) if d is None]
        return lines, sorted(failed), [d for j, (_, d) in enumerate(kept) if j not in bad]

    def _label_decisions(self, raws: list[bytes], events: list[dict[str, Any]]
                         ) -> tuple[list[bytes], list[tuple[int, str]], list[Decision]]:
        """The records that need whole Decisions (--explain, --record), one at a time."""
        label = self.labeler.label
        explain = self.explain
        on_decision = self.on_decision
        key = self.labels_field
        guard = self.guard
        lines: list[bytes] = []
        failed: list[tuple[int, str]] = []
        decided: list[Decision] = []
        for i, (raw, event) in enumerate(zip(raws, events)):
            try:
                decision = label(event)
                if guard is not None:  # privacy hook: protected labels (and redacted event) only
                    if on_decision is not None:
                        on_decision(event, decision)
                    lines.append(guard.line(raw, event, decision.labels, labels_field=key,
                                            explain=decision.explain() if explain else None))
                    decided.append(decision)
                    continue
                fields: dict[str, Any] = {key: decision.labels}
                if explain:
                    fields["label_meta"] = decision.explain()
                if on_decision is not None:
                    on_decision(event, decision)
                lines.append(splice_fields(raw, event, fields))
                decided.append(decision)
            except Exception as exc:  # noqa: BLE001 - a front door's last line of defence: never lose a record
                failed.append((i, str(exc) if isinstance(exc, ActiveLabelError) else f"{type(exc).__name__}: {exc}"))
        return lines, failed, decided


class JsonlFileOutput:
    """A ``RecordOutput`` into a JSONL sink and a dead-letter sink (``activelabel label``).

    Blocks come from ``JsonlSource.iter_blocks`` as ``((source name, first line number), lines)``,
    so a dead letter names its file and line.
    """

    def __init__(self, sink: JsonlSink, dead: DeadLetterSink) -> None:
        self.sink = sink
        self.dead = dead

    def write_many(self, where: list[Where], lines: list[bytes]) -> list[tuple[int, str, str]]:
        self.sink.write_lines(lines)
        return []

    def dead_letter(self, where: Where, raw: bytes | None, kind: str, reason: str) -> None:
        (name, first_line), pos = where
        self.dead.write(source=name, line_no=first_line + pos, raw=raw or b"", kind=kind, reason=reason)


def jsonl_blocks(source: JsonlSource) -> Iterable[Block]:
    """A JSONL source's blocks in the shape ``RecordLoop.run`` reads (see ``JsonlFileOutput``)."""
    for name, first_line, lines in source.iter_blocks():
        yield (name, first_line), lines


__all__ = ["CHUNK_RECORDS", "Block", "BulkLabeler", "ChunkObserver", "CodesLabeler", "CodesObserver", "EventLabeler", "JsonlFileOutput", "PerEventLabeler", "RecordCounts", "RecordLoop", "RecordOutput", "Where",
           "as_bulk", "index_codes", "jsonl_blocks", "splice_each"]
