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


def splice_fields(raw: bytes, event: dict[str, Any], fields: dict[str, Any]) -> bytes:
    """Return ``raw`` (a JSON object) with ``fields`` added as top-level keys."""
    if any(name in event for name in fields):
        # The record already has the field: replace it rather than emit a duplicate key.
        merged = dict(event)
        merged.update(fields)
        return orjson.dumps(merged)
    body = raw.rstrip()
    addition = orjson.dumps(fields)[1:-1]
    if body.endswith(b"}"):
        inner = body[:-1].rstrip()
        sep = b"" if inner.endswith(b"{") else b","
        return inner + sep + addition + b"}"
    return orjson.dumps({**event, **fields})


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

    def flush(self) -> None:
        if self._buffer:
            self._buffer.append(b"")
            try:
                self._stream.write(b"\n".join(self._buffer))
            except OSError as exc:
                raise SinkError(f"writing {self.path or '<stdout>'} failed: {exc}") from exc
            self._buffer = []

    def close(self) -> None:
        self.flush()
        if self._stream is not sys.stdout.buffer:
            self._stream.close()
        else:
            self._stream.flush()


class DeadLetterSink:
    """The dead-letter output: one JSON object per rejected record, with its reason.

    ``raw`` holds the original line when it is valid UTF-8, else ``raw_base64``.
    """

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._sink = JsonlSink(path) if path is not None else None
        self.count = 0
        self.by_kind: dict[str, int] = {}

    def write(self, *, source: str, line_no: int, raw: bytes, kind: str, reason: str) -> None:
        self.count += 1
        self.by_kind[kind] = self.by_kind.get(kind, 0) + 1
        if self._sink is None:
            return
        entry: dict[str, Any] = {"source": source, "line": line_no, "kind": kind, "reason": reason}
        try:
            entry["raw"] = raw.decode("utf-8")
        except UnicodeDecodeError:
            entry["raw_base64"] = base64.b64encode(raw).decode("ascii")
        self._sink.write_raw(orjson.dumps(entry))

    def flush(self) -> None:
        """Write the buffered dead letters out (the ``Sink`` protocol)."""
        if self._sink is not None:
            self._sink.flush()

    def close(self) -> None:
        if self._sink is not None:
            self._sink.close()
