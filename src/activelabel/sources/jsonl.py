"""JSON Lines input: files, ``-`` for stdin, ``.gz``; one record per line.

Every physical line becomes exactly one ``Record`` or one ``BadRecord``, so the
caller can promise ``in = out + DLQ``. Blank lines (JSON whitespace only) are not
records; a UTF-8 byte order mark at the start of an input is dropped.
"""

from __future__ import annotations

import gzip
import sys
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from activelabel.errors import SourceError

DEFAULT_MAX_LINE_BYTES = 1 << 20  # 1 MiB
#: orjson refuses deeper documents while parsing, at no extra cost; a lower limit
#: costs a scan of each line for brackets.
PARSER_MAX_DEPTH = 1024
DEFAULT_MAX_DEPTH = PARSER_MAX_DEPTH
#: A UTF-8 byte order mark, which some editors and Windows tools put at the start of a
#: file; JSON parsers refuse it, so it is dropped from the start of each input.
UTF8_BOM = b"\xef\xbb\xbf"
#: JSON's whitespace: a line of nothing else is blank, not a record.
JSON_WHITESPACE = b" \t\r\n"


@dataclass(frozen=True, slots=True)
class ReadLimits:
    """Per-line limits; a line past either goes to the dead-letter output."""

    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
    max_depth: int = DEFAULT_MAX_DEPTH


@dataclass(slots=True)
class Record:
    """A decoded input object with the exact bytes it came from."""

    source: str
    line_no: int
    raw: bytes
    event: dict[str, Any]


@dataclass(slots=True)
class BadRecord:
    """A line that could not be decoded; ``kind`` is a stable machine-readable reason."""

    source: str
    line_no: int
    raw: bytes
    kind: str
    reason: str


def _depth(value: Any) -> int:
    # Iterative, so a hostile document cannot blow the Python stack.
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > deepest:
            deepest = depth
        if isinstance(node, dict):
            stack.extend((child, depth + 1) for child in node.values() if isinstance(child, (dict, list)))
        elif isinstance(node, list):
            stack.extend((child, depth + 1) for child in node if isinstance(child, (dict, list)))
    return deepest


def decode_line(raw: bytes, limits: ReadLimits = ReadLimits()) -> dict[str, Any] | tuple[str, str]:
    """Decode one line into an object, or return ``(kind, reason)`` saying why not."""
    if len(raw) > limits.max_line_bytes:
        return ("too_large", f"line is {len(raw)} bytes, over the limit of {limits.max_line_bytes} (raise --max-line-bytes)")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as uexc:
            return ("invalid_utf8", f"not valid UTF-8 at byte {uexc.start}")
        text = str(exc).lower()
        if "depth" in text or "recursion" in text:
            return ("too_deep", f"nested deeper than {min(limits.max_depth, PARSER_MAX_DEPTH)} levels")
        return ("invalid_json", f"not valid JSON: {exc}")
    if not isinstance(value, dict):
        return ("not_object", f"a JSON {type(value).__name__ if value is not None else 'null'} where an object was expected")
    # Counting brackets is a cheap upper bound on depth: only walk when it could exceed.
    if limits.max_depth < PARSER_MAX_DEPTH and raw.count(b"{") + raw.count(b"[") > limits.max_depth and _depth(value) > limits.max_depth:
        return ("too_deep", f"nested deeper than the limit of {limits.max_depth} (raise --max-depth)")
    return value


def _open(path: str) -> IO[bytes] | gzip.GzipFile:
    if path == "-":
        return sys.stdin.buffer
    p = Path(path)
    try:
        if p.suffix == ".gz":
            return gzip.open(p, "rb")
        return p.open("rb")
    except OSError as exc:
        raise SourceError(f"cannot read input {path}: {exc.strerror or exc}") from exc


class JsonlSource:
    """Reads records from each input in turn, line by line, in order."""

    def __init__(self, inputs: Sequence[str], limits: ReadLimits = ReadLimits()) -> None:
        self.inputs = list(inputs) or ["-"]
        self.limits = limits
        self.bytes_read = 0

    def close(self) -> None:
        """Nothing to release: each input is opened and closed while it is read (the ``Source`` protocol)."""

    def __iter__(self) -> Iterator[Record | BadRecord]:
        limits = self.limits
        for label, line_no, raw in self.iter_raw():
            decoded = decode_line(raw, limits)
            if decoded.__class__ is dict:
                yield Record(label, line_no, raw, decoded)
            else:
                kind, reason = decoded
                yield BadRecord(label, line_no, raw, kind, reason)

    def iter_raw(self) -> Iterator[tuple[str, int, bytes]]:
        """(source name, line number, line bytes) for every non-blank line, undecoded."""
        for name in self.inputs:
            label = "<stdin>" if name == "-" else name
            stream = _open(name)
            try:
                for line_no, line in enumerate(stream, 1):
                    self.bytes_read += len(line)
                    raw = line.rstrip(b"\r\n")
                    if line_no == 1 and raw.startswith(UTF8_BOM):
                        raw = raw[len(UTF8_BOM):]
                    if raw and raw.strip(JSON_WHITESPACE):
                        yield label, line_no, raw
            except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
                raise SourceError(f"reading {label} failed: {exc}") from exc
            finally:
                if stream is not sys.stdin.buffer:
                    stream.close()

    def iter_blocks(self, block_bytes: int = 1 << 22) -> Iterator[tuple[str, int, list[bytes]]]:
        """(source name, number of the first line, lines) a block of input at a time.

        Lines come without their line ending; blank ones are included (the caller
        skips them) so line numbers stay countable. ``read1`` returns what a pipe has
        now, so a slow stdin is labeled as it arrives rather than 4 MiB at a time.
        """
        for name in self.inputs:
            label = "<stdin>" if name == "-" else name
            stream = _open(name)
            read = getattr(stream, "read1", stream.read)
            try:
                carry = b""
                line_no = 0
                first = True
                while True:
                    data = read(block_bytes)
                    if not data:
                        break
                    self.bytes_read += len(data)
                    if first:
                        head = carry + data
                        if len(head) < len(UTF8_BOM) and UTF8_BOM.startswith(head):
                            carry = head  # too short to tell yet (a slow pipe): decide on the next read
                            continue
                        first = False
                        carry = b""
                        data = head.removeprefix(UTF8_BOM)  # editors' byte order mark: not part of line 1's record
                    lines = (carry + data).split(b"\n")
                    carry = lines.pop()
                    if lines:
                        yield label, line_no + 1, lines
                        line_no += len(lines)
                if carry:
                    yield label, line_no + 1, [carry]
            except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
                # Say where it stopped: what came before was labeled, the rest (and this partial line) was not read.
                partial = f" and {len(carry):,} bytes of line {line_no + 1}" if carry else ""
                raise SourceError(f"reading {label} failed after line {line_no:,}{partial}: {exc}; "
                                  "the lines before it were labeled, the rest of the input was not read") from exc
            finally:
                if stream is not sys.stdin.buffer:
                    stream.close()

    def iter_chunks(self, chunk_lines: int = 4096) -> Iterator[list[Record | BadRecord]]:
        """Records in lists of up to ``chunk_lines``, for batch labeling."""
        chunk: list[Record | BadRecord] = []
        for item in self:
            chunk.append(item)
            if len(chunk) >= chunk_lines:
                yield chunk
                chunk = []
        if chunk:
            yield chunk
