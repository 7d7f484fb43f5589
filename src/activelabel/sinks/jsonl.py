"""JSON Lines output and the dead-letter file.

Labeled output keeps each input record's original bytes and splices the new
fields in before the closing brace: no re-serialisation, so numbers, key order
and unicode escapes come out exactly as they went in.
"""

from __future__ import annotations

import base64
import gzip
import sys
from pathlib import Path
from typing import IO, Any

import orjson

from activelabel.errors import SinkError

#: JSON's whitespace, the only bytes a valid object may have around its tokens.
JSON_WHITESPACE = b" \t\r\n"


def splice_fields(raw: bytes, event: dict[str, Any], fields: dict[str, Any]) -> bytes:
    """Return ``raw`` (a JSON object) with ``fields`` added as top-level keys."""
    if any(name in event for name in fields):
        # The record already has the field: replace it rather than emit a duplicate key.
        merged = dict(event)
        merged.update(fields)
        return _dumps_whole(merged, fields)
    body = raw.rstrip(JSON_WHITESPACE)
    addition = orjson.dumps(fields)[1:-1]
    if body.endswith(b"}"):
        inner = body[:-1].rstrip(JSON_WHITESPACE)
        sep = b"" if inner.endswith(b"{") else b","
        return inner + sep + addition + b"}"
    return _dumps_whole({**event, **fields}, fields)


def _refusal(names: str, exc: Exception) -> str:
    return (f"the record cannot be written with {names} added: it already has a field named {names}, so it is "
            f"re-serialised whole, and the JSON writer refused it ({exc}; it writes at most 254 levels of nesting); "
            f"pass --labels-field NAME to write the labels to a field the records do not have")


def rewrite_refusal(event: dict[str, Any], labels_field: str) -> str | None:
    """Why a record that already has ``labels_field`` cannot be re-serialised with new labels, or None if it can.

    Such a record is written whole by ``splice_fields``; the JSON writer refuses more than
    254 levels of nesting (the reader accepts 1,024), so the loop asks before labeling it.
    """
    try:
        orjson.dumps(event)
    except orjson.JSONEncodeError as exc:
        return _refusal(labels_field, exc)
    return None


def _dumps_whole(record: dict[str, Any], fields: dict[str, Any]) -> bytes:
    """Re-serialise a whole record; the writer's refusal (deeper than 254 levels) is a SinkError."""
    try:
        return orjson.dumps(record)
    except orjson.JSONEncodeError as exc:
        raise SinkError(_refusal(", ".join(fields), exc)) from exc


def _open_out(path: str | None) -> IO[bytes] | gzip.GzipFile:
    if path is None or path == "-":
        return sys.stdout.buffer
    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        if p.suffix == ".gz":
            return gzip.open(p, "wb")
        return p.open("wb")
    except OSError as exc:
        raise SinkError(f"cannot write {path}: {exc.strerror or exc}") from exc


class JsonlSink:
    """Writes one JSON object per line; buffers writes, flushes on close."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._stream = _open_out(path)
        self._buffer: list[bytes] = []
        self.count = 0

    def write_raw(self, line: bytes) -> None:
        self._buffer.append(line)
        self.count += 1
        if len(self._buffer) >= 4096:
            self.flush()

    def write_lines(self, lines: list[bytes]) -> None:
        """Many lines at once (the batch paths)."""
        self._buffer.extend(lines)
        self.count += len(lines)
        if len(self._buffer) >= 4096:
            self.flush()

    def write_block(self, data: bytes, count: int) -> None:
        """``count`` lines already joined by newlines (no trailing one): a parallel worker's block."""
        self.flush()
        self.count += count
        try:
            self._stream.write(data + b"\n")
        except OSError as exc:
            raise SinkError(f"writing {self.path or '<stdout>'} failed: {exc}") from exc

    def flush(self) -> None:
        if self._buffer:
            self._buffer.append(b"")
            try:
                self._stream.write(b"\n".join(self._buffer))
            except OSError as exc:
                raise SinkError(f"writing {self.path or '<stdout>'} failed: {exc}") from exc
            self._buffer = []

    def push(self) -> None:
        """Write what is buffered through to the OS, so a reader on a pipe sees it now."""
        self.flush()
        try:
            self._stream.flush()
        except OSError as exc:
            raise SinkError(f"writing {self.path or '<stdout>'} failed: {exc}") from exc

    def close(self) -> None:
        self.flush()
        if self._stream is not sys.stdout.buffer:
            self._stream.close()
        else:
            self._stream.flush()


class DeadLetterSink:
    """The dead-letter output: one JSON object per rejected record, with its reason.

    ``raw`` holds the original line when it is valid UTF-8, else ``raw_base64``. The
    file is created on the first dead letter: a clean run leaves no empty DLQ behind.
    """

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._sink: JsonlSink | None = None
        self.count = 0
        self.by_kind: dict[str, int] = {}

    @property
    def written(self) -> bool:
        """Whether the DLQ file exists because this run wrote a dead letter to it."""
        return self._sink is not None

    def write(self, *, source: str, line_no: int, raw: bytes, kind: str, reason: str) -> None:
        self.count += 1
        self.by_kind[kind] = self.by_kind.get(kind, 0) + 1
        if self.path is None:
            return
        entry: dict[str, Any] = {"source": source, "line": line_no, "kind": kind, "reason": reason}
        try:
            entry["raw"] = raw.decode("utf-8")
        except UnicodeDecodeError:
            entry["raw_base64"] = base64.b64encode(raw).decode("ascii")
        if self._sink is None:
            self._sink = JsonlSink(self.path)
        self._sink.write_raw(orjson.dumps(entry))

    def flush(self) -> None:
        """Write the buffered dead letters out (the ``Sink`` protocol)."""
        if self._sink is not None:
            self._sink.flush()

    def push(self) -> None:
        """Write buffered dead letters through to the OS (a streaming run shows them as they come)."""
        if self._sink is not None:
            self._sink.push()

    def close(self) -> None:
        if self._sink is not None:
            self._sink.close()


def default_dlq_path(output: str | None) -> str:
    """Where dead letters go without ``--dlq``: next to a regular output file, else ``./activelabel.dlq.jsonl``.

    Standard output, ``-``, ``/dev/null``, a pipe or any other non-regular file has no
    "next to" (``/dev/null.dlq.jsonl`` is no place for a file), so those runs use the
    working directory. The file is only created if there is a dead letter.
    """
    if output and output != "-":
        p = Path(output)
        if not p.exists() or p.is_file():
            return f"{output}.dlq.jsonl"
    return "activelabel.dlq.jsonl"
