"""Lookup enrichers: a whole CSV / JSON / SQLite table in a dict, keyed by one field.

The table is read once (when the policy loads); `LookupEnricher.lookup` is a
dict get on the hot path. A miss returns the shared `EMPTY` map, so a rule's
``has(tenant.tier)`` is simply false.
"""

from __future__ import annotations

import csv
import hashlib
import io
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson

from activelabel.errors import EnricherError as EnricherError

EMPTY: Mapping[str, Any] = {}
"""What a miss returns: one shared empty map (never mutate it)."""


class Enricher(Protocol):
    """What the engine calls: ``lookup(key)`` gives the row for ``key`` or an empty map."""

    name: str

    def lookup(self, key: Any) -> Mapping[str, Any]: ...


@dataclass(frozen=True)
class Table:
    """A loaded lookup table: rows by normalised key, and the SHA-256 of the file read."""

    rows: dict[str, dict[str, Any]]
    sha256: str


def normalize_key(key: Any) -> str | None:
    """The table key for a lookup key: strings as is, integral numbers as decimal text.

    ``42``, ``42.0`` and ``"42"`` find the same row; bools become ``"true"``/``"false"``;
    values that cannot be keys (null, lists, maps) give None (a miss).
    """
    if isinstance(key, str):
        return key
    if isinstance(key, bool):
        return "true" if key else "false"
    if isinstance(key, int):
        return str(int(key))
    if isinstance(key, float):
        if key != key or key in (float("inf"), float("-inf")):
            return None
        return str(int(key)) if key.is_integer() else repr(key)
    if isinstance(key, (bytes, bytearray)):
        try:
            return bytes(key).decode("utf-8")
        except UnicodeDecodeError:
            return None
    return None


class LookupEnricher:
    """The runtime of a ``type: lookup`` enricher.

    >>> tenants = LookupEnricher("tenant", {"t1": {"tier": "gold"}})
    >>> tenants.lookup("t1")["tier"], dict(tenants.lookup("nope"))
    ('gold', {})
    """

    __slots__ = ("_get", "_rows", "name")

    def __init__(self, name: str, rows: Mapping[str, Mapping[str, Any]]) -> None:
        self.name = name
        self._rows = dict(rows)
        self._get = self._rows.get

    @property
    def string_get(self) -> Callable[[str, Mapping[str, Any]], Mapping[str, Any]]:
        """``get(key, default)`` for a ``str`` key: what ``lookup`` does for one, without the call.

        Generated code inlines it (``get(k, EMPTY) if k.__class__ is str else lookup(k)``).
        """
        return self._get

    def lookup(self, key: Any) -> Mapping[str, Any]:
        """The row for ``key``, or the shared empty map on a miss."""
        if type(key) is str:
            return self._get(key, EMPTY)
        k = normalize_key(key)
        if k is None:
            return EMPTY
        return self._get(k, EMPTY)

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, key: object) -> bool:
        return normalize_key(key) in self._rows

    def __repr__(self) -> str:
        return f"LookupEnricher({self.name!r}, {len(self._rows)} rows)"


def read_table_file(
    path: Path,
    fmt: str,
    *,
    key_field: str | None = None,
    table: str | None = None,
    key_column: str | None = None,
) -> Table:
    """Read a whole lookup table; raise `EnricherError` saying what is wrong with the file."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise EnricherError(f"file `{path.name}` not found ({path})", suggestion="paths are relative to the policy file") from None
    except IsADirectoryError:
        raise EnricherError(f"`{path}` is a directory, not a file") from None
    except OSError as exc:
        raise EnricherError(f"cannot read `{path}`: {exc.strerror or exc}") from exc
    digest = hashlib.sha256(data).hexdigest()
    if fmt == "csv":
        rows = _read_csv(data, key_field)
    elif fmt == "json":
        rows = _read_json(data, key_field)
    elif fmt == "jsonl":
        rows = _read_json_list(_read_jsonl(data), key_field, "line", start=1)
    elif fmt == "sqlite":
        rows = _read_sqlite(path, data, table, key_column)
    else:
        raise EnricherError(f"unknown lookup format `{fmt}`", suggestion="use csv, json, jsonl or sqlite")
    return Table(rows, digest)


def read_table(spec: Any) -> dict[str, Any]:
    """The rows of an `EnricherSpec`'s table, read now (a novelty enricher's index as plain data)."""
    if spec.type == "novelty":
        from ._novelty import read_novelty_file

        return read_novelty_file(spec.path)[0]
    return read_table_file(
        spec.path, spec.format, key_field=spec.key_field, table=spec.table, key_column=spec.key_column
    ).rows


def _suggest(word: str, candidates: list[str]) -> str | None:
    from activelabel.policy import did_you_mean

    return did_you_mean(word, candidates) or ("columns: " + ", ".join(candidates) if candidates else None)


def _add(rows: dict[str, dict[str, Any]], key: Any, row: dict[str, Any], where: str, field: str) -> None:
    # Messages name the row, never the key's value: tables often hold personal data.
    k = normalize_key(key)
    if k is None or k == "":
        kind = "empty" if key in ("", None) else f"a {type(key).__name__}"
        raise EnricherError(f"{where} has no usable key in `{field}` ({kind})")
    if k in rows:
        raise EnricherError(f"{where} repeats the `{field}` of an earlier row", suggestion="keys must be unique")
    rows[k] = row


def _read_csv(data: bytes, key_field: str | None) -> dict[str, dict[str, Any]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise EnricherError(f"CSV is not UTF-8 ({exc.reason} at byte {exc.start})") from exc
    # "id, tier" means columns "id" and "tier": spaces after a comma are layout, not data.
    reader = csv.reader(io.StringIO(text, newline=""), skipinitialspace=True)
    try:
        header = next(reader, None)
        if not header or not any(h.strip() for h in header):
            raise EnricherError("CSV file has no header row", suggestion="the first row names the columns")
        if len(set(header)) != len(header):
            raise EnricherError("CSV header repeats a column name")
        field = key_field if key_field is not None else header[0]
        if field not in header:
            raise EnricherError(f"CSV has no column `{field}`", suggestion=_suggest(field, header))
        idx = header.index(field)
        rows: dict[str, dict[str, Any]] = {}
        width = len(header)
        for values in reader:  # inlined: tables can have millions of rows
            if not values:
                continue  # blank line
            key = values[idx] if idx < len(values) else ""
            if len(values) > width or not key or key in rows:
                where = f"CSV line {reader.line_num}"
                if len(values) > width:
                    raise EnricherError(f"{where} has {len(values)} fields, the header has {width}")
                _add(rows, key or None, {}, where, field)  # raises the right error
            rows[key] = dict(zip(header, values))
    except csv.Error as exc:
        raise EnricherError(f"invalid CSV at line {reader.line_num}: {exc}") from exc
    return rows


def _read_json(data: bytes, key_field: str | None) -> dict[str, dict[str, Any]]:
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise EnricherError(f"invalid JSON: {exc}") from exc
    rows: dict[str, dict[str, Any]] = {}
    if isinstance(doc, dict):
        if key_field is not None:
            raise EnricherError("`key_field` is for a JSON list of objects; this file is an object keyed by key")
        for n, (key, row) in enumerate(doc.items()):
            if not isinstance(row, dict):
                raise EnricherError(f"JSON entry {n} is not an object", suggestion="each key maps to an object of fields")
            _add(rows, key, row, f"JSON entry {n}", "key")
        return rows
    if isinstance(doc, list):
        return _read_json_list(doc, key_field, "item", start=0)
    raise EnricherError("JSON must be an object keyed by key or a list of objects")


def _read_json_list(items: list[Any], key_field: str | None, unit: str, start: int) -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    field = key_field
    for i, row in enumerate(items, start=start):
        where = f"JSON {unit} {i}"
        if not isinstance(row, dict):
            raise EnricherError(f"{where} is not an object")
        if field is None:
            if not row:
                raise EnricherError(f"{where} is empty; cannot pick the key field", suggestion="set `key_field`")
            field = next(iter(row))
        if field not in row:
            raise EnricherError(f"{where} has no `{field}`", suggestion=_suggest(field, list(row)))
        _add(rows, row[field], row, where, field)
    return rows


def _read_jsonl(data: bytes) -> list[Any]:
    items = []
    for n, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            items.append(orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            raise EnricherError(f"invalid JSON on line {n}: {exc}") from exc
    return items


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _read_sqlite(path: Path, data: bytes, table: str | None, key_column: str | None) -> dict[str, dict[str, Any]]:
    if not data.startswith(b"SQLite format 3\x00"):
        raise EnricherError(f"`{path.name}` is not a SQLite database")
    if not table or not key_column:
        raise EnricherError("a sqlite lookup needs `table` and `key_column`")
    try:
        conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise EnricherError(f"cannot open SQLite database: {exc}") from exc
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")]
        if table not in tables:
            raise EnricherError(f"no table `{table}` in the database", suggestion=_suggest(table, tables))
        cur = conn.execute(f"SELECT * FROM {_quote(table)}")
        columns = [d[0] for d in cur.description]
        if key_column not in columns:
            raise EnricherError(f"table `{table}` has no column `{key_column}`", suggestion=_suggest(key_column, columns))
        idx = columns.index(key_column)
        rows: dict[str, dict[str, Any]] = {}
        for n, values in enumerate(cur, start=1):
            _add(rows, values[idx], dict(zip(columns, values)), f"table `{table}` row {n}", key_column)
        return rows
    except sqlite3.Error as exc:
        raise EnricherError(f"cannot read SQLite table `{table}`: {exc}") from exc
    finally:
        conn.close()


def build_enricher(kind: str, name: str, rows: Mapping[str, Any]) -> Enricher:
    """The runtime enricher of ``kind`` over ``rows`` (a novelty index for ``novelty``); EnricherError if they do not fit."""
    if kind == "lookup":
        return LookupEnricher(name, rows)
    if kind == "cidr":
        from ._cidr import CidrEnricher

        return CidrEnricher(name, rows)
    if kind == "pii":
        from ._pii import PiiEnricher

        return PiiEnricher(name)
    if kind == "novelty":
        from ._novelty import NoveltyEnricher

        return NoveltyEnricher(name, rows)
    raise EnricherError(f"unknown enricher type `{kind}`", suggestion="use lookup, cidr, pii or novelty")
