"""Policy history: every policy the runtime loaded, accepted (a reload, a rollout's candidate) or refused.

A rollout refused for its spec (before or after its candidate compiled) never started: its
candidate gets no row; a candidate refused by validation or its tests gets a ``refused`` one.

One append-only SQLite table (UPDATE and DELETE are refused by triggers), in the same
file as the decision store by default. A row keeps the canonical form (tables'
hashes included), the version and ``metadata.version``, who offered it and when, a
message, the outcome and, for a refusal, every error.

    history = PolicyHistory("decisions.db")
    history.record(policy, outcome="accepted", who="ana", message="raise pay priority")
    history.record_refusal(text, errors=[...], who="ana", source="policy.yaml")
    history.entries()            # newest first
    history.find("sha256:ab12")  # a version or an unambiguous prefix of one
"""

from __future__ import annotations

import getpass
import hashlib
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from activelabel.errors import StoreError

OUTCOMES = ("accepted", "refused", "promoted", "rolled_back", "rollback", "loaded")
#: The message every reload's ``accepted`` row starts with (an offered candidate's does not: it never served).
RELOAD_MESSAGE = "reload ("

_SCHEMA = """
CREATE TABLE IF NOT EXISTS policy_history (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    ts               REAL NOT NULL,
    version          TEXT,
    metadata_version TEXT,
    name             TEXT,
    source           TEXT,
    canonical        TEXT,
    tables           TEXT NOT NULL,
    who              TEXT NOT NULL,
    message          TEXT NOT NULL,
    outcome          TEXT NOT NULL,
    errors           TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS policy_history_version ON policy_history (version);
CREATE TRIGGER IF NOT EXISTS policy_history_no_update BEFORE UPDATE ON policy_history
BEGIN SELECT RAISE(ABORT, 'policy_history is append-only'); END;
CREATE TRIGGER IF NOT EXISTS policy_history_no_delete BEFORE DELETE ON policy_history
BEGIN SELECT RAISE(ABORT, 'policy_history is append-only'); END;
"""

_MAX_REFUSED_TEXT = 64 << 10


@dataclass(frozen=True)
class HistoryEntry:
    """One row of the history."""

    seq: int
    ts: float
    version: str | None
    metadata_version: str | None
    name: str | None
    source: str | None
    canonical: str | None
    tables: dict[str, str]
    who: str
    message: str
    outcome: str
    errors: list[str]


def current_user() -> str:
    """The OS user, for changes made from the command line."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _file_hashes(paths: Sequence[Path]) -> dict[str, str]:
    out: dict[str, str] = {}
    for path in paths:
        try:
            out[str(path)] = "sha256:" + hashlib.sha256(Path(path).read_bytes()).hexdigest()
        except OSError:
            out[str(path)] = "unreadable"
    return out


class PolicyHistory:
    """The append-only policy history table in a SQLite file."""

    def __init__(self, path: str | Path, *, clock: Any = time.time) -> None:
        self.path = Path(path)
        self._clock = clock
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot open the policy history ({exc})") from exc

    def record(self, policy: Any, *, outcome: str = "accepted", who: str | None = None, message: str = "") -> int:
        """Keep a policy that loaded (``outcome``: accepted, promoted, rolled_back, ...); returns its row number."""
        deps = [Path(p) for p in getattr(policy, "dependencies", ())][1:]
        return self._insert(
            version=policy.version, metadata_version=policy.metadata.version, name=policy.metadata.name,
            source=str(policy.source), canonical=policy.canonical_json.decode(), tables=_file_hashes(deps),
            who=who or current_user(), message=message, outcome=outcome, errors=[],
        )

    def record_refusal(self, text: str | None, *, errors: Sequence[str], who: str | None = None, message: str = "",
                       source: str | None = None) -> int:
        """Keep a policy that was refused, with every error (the offered text, capped at 64 KiB)."""
        return self._insert(
            version=None, metadata_version=None, name=None, source=source,
            canonical=(text or "")[:_MAX_REFUSED_TEXT] or None, tables={}, who=who or current_user(),
            message=message, outcome="refused", errors=list(errors),
        )

    def _insert(self, **row: Any) -> int:
        if row["outcome"] not in OUTCOMES:
            raise StoreError(f"unknown history outcome {row['outcome']!r}; one of {', '.join(OUTCOMES)}")
        with self._lock:
            try:
                cur = self._db.execute(
                    "INSERT INTO policy_history (ts, version, metadata_version, name, source, canonical, tables, who,"
                    " message, outcome, errors) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (self._clock(), row["version"], row["metadata_version"], row["name"], row["source"],
                     row["canonical"], orjson.dumps(row["tables"]).decode(), row["who"], row["message"],
                     row["outcome"], orjson.dumps(row["errors"]).decode()),
                )
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path}: cannot write the policy history ({exc})") from exc
            return int(cur.lastrowid or 0)

    def entries(self, limit: int = 0) -> list[HistoryEntry]:
        """Rows, newest first (``limit`` 0: all)."""
        sql = "SELECT * FROM policy_history ORDER BY seq DESC" + (f" LIMIT {int(limit)}" if limit else "")
        with self._lock:
            rows = self._db.execute(sql).fetchall()
        return [_entry(r) for r in rows]

    def find(self, version: str) -> HistoryEntry:
        """The newest loaded row of a version, given whole or as an unambiguous prefix; StoreError otherwise."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM policy_history WHERE version LIKE ? || '%' AND outcome != 'refused' ORDER BY seq DESC",
                (version,),
            ).fetchall()
        versions = {r[2] for r in rows}
        if not rows:
            raise StoreError(f"no accepted policy with version {version!r} in {self.path}; "
                             "see `activelabel policy history`")
        if len(versions) > 1:
            raise StoreError(f"version prefix {version!r} is ambiguous ({len(versions)} versions); give more of it")
        return _entry(rows[0])

    def last_serving(self) -> tuple[HistoryEntry | None, HistoryEntry | None]:
        """The newest ``loaded`` row (what the last start served) and the newest row that made a policy serve.

        A row serves when it is ``loaded``, ``promoted``, ``rollback`` or a reload's ``accepted`` (an
        offered candidate's ``accepted`` and a ``rolled_back`` candidate never served). Read before a
        start records its own ``loaded`` row: a restart serves again what was serving before it.
        """
        loaded = serving = None
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM policy_history WHERE outcome IN ('loaded', 'promoted', 'rollback')"
                " OR (outcome = 'accepted' AND message LIKE ? || '%') ORDER BY seq DESC", (RELOAD_MESSAGE,))
            for row in rows:
                entry = _entry(row)
                serving = serving or entry
                if entry.outcome == "loaded":
                    loaded = entry
                    break
        return loaded, serving

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _entry(row: tuple[Any, ...]) -> HistoryEntry:
    return HistoryEntry(
        seq=int(row[0]), ts=float(row[1]), version=row[2], metadata_version=row[3], name=row[4], source=row[5],
        canonical=row[6], tables=orjson.loads(row[7]), who=row[8], message=row[9], outcome=row[10],
        errors=orjson.loads(row[11]),
    )
