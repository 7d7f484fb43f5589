"""The decision and ground-truth store: one SQLite file.

It holds sampled decisions (id, time, policy version, labels, confidences, sources,
explanation, and the event fields rules and models read) and ground truth (id,
label, true value, who, when, how). Feedback that cannot be accepted is kept with
its reason, so nothing is silently lost and refusals can be counted.

    store = DecisionStore("decisions.db", policy=labeler.policy)
    store.record(record_id_for(event, "id"), event, decision)
    store.add_ground_truth(rid, "priority", "high", who="ana", how="cli")
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from activelabel.errors import FeedbackError, StoreError
from activelabel.quality._registry import LabelRegistry, registry_from_policy

if TYPE_CHECKING:
    from activelabel.governance.output import OutputGuard
    from activelabel.policy import Policy

_SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
    record_id      TEXT PRIMARY KEY,
    ts             REAL NOT NULL,
    policy_version TEXT,
    labels         TEXT NOT NULL,
    confidences    TEXT NOT NULL,
    sources        TEXT NOT NULL,
    explain        TEXT,
    event          TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS decisions_ts ON decisions (ts);
CREATE TABLE IF NOT EXISTS ground_truth (
    record_id TEXT NOT NULL,
    label     TEXT NOT NULL,
    value     TEXT NOT NULL,
    who       TEXT,
    ts        REAL NOT NULL,
    how       TEXT,
    PRIMARY KEY (record_id, label)
);
CREATE TABLE IF NOT EXISTS feedback_rejections (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    ts        REAL NOT NULL,
    record_id TEXT,
    label     TEXT,
    value     TEXT,
    reason    TEXT NOT NULL,
    how       TEXT
);
CREATE TABLE IF NOT EXISTS known_labels (label TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS holdout (
    record_id TEXT NOT NULL,
    label     TEXT NOT NULL,
    value     TEXT,
    PRIMARY KEY (record_id, label)
);
CREATE TABLE IF NOT EXISTS label_values (
    label TEXT NOT NULL,
    value TEXT NOT NULL,
    who   TEXT,
    ts    REAL NOT NULL,
    how   TEXT,
    PRIMARY KEY (label, value)
);
CREATE TABLE IF NOT EXISTS model_builds (
    label       TEXT NOT NULL,
    version     TEXT NOT NULL,
    ts          REAL NOT NULL,
    trained_ids TEXT NOT NULL,
    PRIMARY KEY (label, version)
);
"""


def _canonical(value: Any) -> bytes:
    """Sorted-key JSON; stdlib json for what orjson refuses (integers beyond 64 bits)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str)
    except TypeError:
        import json

        return json.dumps(value, sort_keys=True, default=str, ensure_ascii=False, separators=(",", ":")).encode()


def _dumps(value: Any) -> str:
    return _canonical(value).decode()


def record_id_for(event: Mapping[str, Any], id_field: str | None = None) -> str:
    """A stable id: the event's ``id_field`` (dot path allowed) when given, else a content hash.

    The hash is over the canonical JSON of the event (sorted keys), so the same
    event always gets the same id, in any process.
    """
    if id_field:
        value: Any = event
        for part in id_field.split("."):
            if not isinstance(value, Mapping) or part not in value:
                raise StoreError(f"event has no id field {id_field!r}; pick another --id-field or omit it to hash content")
            value = value[part]
        return str(value)
    return "sha256:" + hashlib.sha256(_canonical(event)).hexdigest()[:24]


@dataclass(frozen=True)
class StoredDecision:
    """One recorded decision, as read back."""

    record_id: str
    ts: float
    policy_version: str | None
    labels: dict[str, Any]
    confidences: dict[str, float]
    sources: dict[str, str]
    explain: dict[str, Any]
    event: dict[str, Any]


@dataclass(frozen=True)
class GroundTruth:
    """One true value for one label of one record."""

    record_id: str
    label: str
    value: Any
    who: str | None
    ts: float
    how: str | None


def _decision_parts(decision: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], str | None, dict[str, Any]]:
    if isinstance(decision, Mapping):  # a decision already serialised (service, JSONL with label_meta)
        return (dict(decision.get("labels") or {}), dict(decision.get("confidences") or {}),
                dict(decision.get("sources") or {}), decision.get("policy_version"),
                dict(decision.get("explain") or {}))
    explain = decision.explain() if callable(getattr(decision, "explain", None)) else {}
    return (dict(decision.labels), dict(getattr(decision, "confidences", {}) or {}),
            dict(getattr(decision, "sources", {}) or {}), getattr(decision, "policy_version", None),
            dict(explain or {}))


class DecisionStore:
    """Decisions and ground truth in one SQLite file (created on first use)."""

    def __init__(self, path: str | Path, *, policy: Policy | None = None, clock: Callable[[], float] | None = None, sample_rate: float = 1.0,
                 guard: OutputGuard | None = None) -> None:
        if not 0.0 < sample_rate <= 1.0:
            raise StoreError(f"sample_rate must be in (0, 1], got {sample_rate}")
        self.path = Path(path)
        # The store is an output with its own clearance: labels above it are stored as their
        # protect: treatment, the event as that guard leaves it (redact:, protected echoes).
        self.guard = guard
        self.sample_rate = sample_rate
        self.skipped_by_sampling = 0
        self._clock = clock or (lambda: datetime.now(UTC).timestamp())
        self._lock = threading.RLock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            # The CLI, the service and a reviewer's import may share the file: wait for a writer, don't fail.
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open store {self.path}: {exc}") from exc
        if policy is not None:
            self.register_policy(policy)

    # -- lifecycle ------------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> DecisionStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _exec(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Cursor:
        try:
            with self._lock:
                return self._db.execute(sql, tuple(params))
        except sqlite3.Error as exc:
            raise StoreError(f"store {self.path}: {exc}") from exc

    # -- the label registry (for validating feedback) -------------------------------------------

    def register_policy(self, policy: Policy) -> None:
        """Remember the policy's labels (types, enums) and constant rule values, for feedback and reports."""
        registry = registry_from_policy(policy)
        if self.guard is not None:
            # A reloaded policy's labels get their own sensitivities and redact: (the store's clearance stays).
            from activelabel.governance.output import OutputGuard

            g = self.guard
            self.guard = OutputGuard.of(policy, door=g.door, protector=g.protector, clearance=g.clearance, counters=g.counters,
                                        scan_undeclared=g.scanner is not None)
        self._exec("INSERT OR REPLACE INTO meta (key, value) VALUES ('registry', ?)", (_dumps(registry.to_json()),))
        self._exec("INSERT OR REPLACE INTO meta (key, value) VALUES ('policy_version', ?)",
                   (policy.version or "",))

    def registry(self) -> LabelRegistry | None:
        row = self._exec("SELECT value FROM meta WHERE key = 'registry'").fetchone()
        return LabelRegistry.from_json(orjson.loads(row[0])) if row else None

    # -- decisions ------------------------------------------------------------------------------

    def record(self, record_id: str, event: Mapping[str, Any], decision: Any, *, ts: float | None = None) -> None:
        """Store (or replace) the decision for one record."""
        self.record_many([(record_id, event, decision)], ts=ts)

    def record_many(self, items: Iterable[tuple[str, Mapping[str, Any], Any]], *, ts: float | None = None) -> int:
        """Store many decisions (those in the sample) in one transaction; returns how many were stored."""
        now = self._clock() if ts is None else ts
        rows: list[tuple[Any, ...]] = []
        labels: set[str] = set()
        for record_id, event, decision in items:
            if self.sample_rate < 1.0 and not self.in_sample(record_id):
                self.skipped_by_sampling += 1
                continue
            lab, conf, src, version, explain = _decision_parts(decision)
            if self.guard is not None:
                guarded = self.guard.record(event, lab, explain=explain)
                lab, explain = guarded.fields["labels"], guarded.fields["label_meta"]
                event = event if guarded.event is None else guarded.event
            labels.update(lab)
            rows.append((record_id, now, version, _dumps(lab), _dumps(conf), _dumps(src), _dumps(explain), _dumps(event)))
        try:
            with self._lock:
                self._db.execute("BEGIN")
                self._db.executemany("INSERT OR REPLACE INTO decisions VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
                self._db.executemany("INSERT OR IGNORE INTO known_labels VALUES (?)", [(x,) for x in labels])
                self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            with self._lock:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
            raise StoreError(f"store {self.path}: cannot record decisions: {exc}") from exc
        return len(rows)

    def in_sample(self, record_id: str) -> bool:
        """Whether ``record_id`` falls in the recorded sample. Decided by a hash of the id, so a
        record is in or out every time it is seen, in every process (its feedback can always land)."""
        digest = hashlib.sha256(record_id.encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < self.sample_rate

    def decisions(self, *, since: float | None = None, until: float | None = None) -> Iterator[StoredDecision]:
        """Recorded decisions in time order, optionally within [since, until)."""
        sql, params = "SELECT * FROM decisions", []
        where = []
        if since is not None:
            where.append("ts >= ?")
            params.append(since)
        if until is not None:
            where.append("ts < ?")
            params.append(until)
        if where:
            sql += " WHERE " + " AND ".join(where)
        # A cursor of its own, read in chunks: a store of millions of decisions is never in memory at once.
        with self._lock:
            cursor = self._db.cursor()
            cursor.execute(sql + " ORDER BY ts, rowid", params)
        while True:
            with self._lock:
                rows = cursor.fetchmany(5000)
            if not rows:
                break
            for row in rows:
                yield StoredDecision(row[0], row[1], row[2], orjson.loads(row[3]), orjson.loads(row[4]),
                                     orjson.loads(row[5]), orjson.loads(row[6] or "{}"), orjson.loads(row[7]))

    def decision(self, record_id: str) -> StoredDecision | None:
        row = self._exec("SELECT * FROM decisions WHERE record_id = ?", (record_id,)).fetchone()
        if row is None:
            return None
        return StoredDecision(row[0], row[1], row[2], orjson.loads(row[3]), orjson.loads(row[4]),
                              orjson.loads(row[5]), orjson.loads(row[6] or "{}"), orjson.loads(row[7]))

    def count_decisions(self) -> int:
        return int(self._exec("SELECT COUNT(*) FROM decisions").fetchone()[0])

    def has_record(self, record_id: str) -> bool:
        return self._exec("SELECT 1 FROM decisions WHERE record_id = ?", (record_id,)).fetchone() is not None

    def known_labels(self) -> set[str]:
        seen = {r[0] for r in self._exec("SELECT label FROM known_labels").fetchall()}
        registry = self.registry()
        return seen | (set(registry.labels) if registry else set())

    # -- ground truth ---------------------------------------------------------------------------

    def add_ground_truth(self, record_id: str, label: str, value: Any, *, who: str | None = None,
                         how: str | None = "api", ts: float | None = None) -> GroundTruth:
        """Accept one true value, or raise FeedbackError with the reason (and keep the refusal)."""
        now = self._clock() if ts is None else ts
        try:
            value = self.validate_feedback(record_id, label, value)
        except FeedbackError as exc:
            self.record_rejection(str(exc), record_id=record_id, label=label, value=value, how=how, ts=now)
            raise
        if self.is_holdout(record_id, label):
            # Ground truth for a held-out item would be trained on: it goes to the holdout instead.
            self.set_holdout_truth(record_id, label, value)
            return GroundTruth(record_id, label, value, who, now, "holdout")
        self._exec("INSERT OR REPLACE INTO ground_truth VALUES (?, ?, ?, ?, ?, ?)",
                   (record_id, label, _dumps(value), who, now, how))
        self._note_value(label, value, who=who, how=how, ts=now)
        return GroundTruth(record_id, label, value, who, now, how)

    # -- open label sets: values learned from people ---------------------------------------------

    def _note_value(self, label: str, value: Any, *, who: str | None, how: str | None, ts: float) -> None:
        registry = self.registry()
        info = registry.labels.get(label) if registry else None
        if info is not None and info.values and (not info.open or value in info.values):
            return  # a value the policy lists: nothing to learn
        self._exec("INSERT OR IGNORE INTO label_values VALUES (?, ?, ?, ?, ?)", (label, _dumps(value), who, ts, how))

    def learned_values(self, label: str) -> list[dict[str, Any]]:
        """Values of an open label (``type: string``, or an enum with ``open: true``: only values it does not
        list) that people gave, each with who and when it first came."""
        rows = self._exec("SELECT value, who, ts, how FROM label_values WHERE label = ? ORDER BY ts, rowid",
                          (label,)).fetchall()
        return [{"value": orjson.loads(r[0]), "who": r[1], "ts": r[2], "how": r[3]} for r in rows]

    # -- the holdout: items review never selects and training never sees ------------------------

    def set_holdout(self, label: str, record_ids: Iterable[str]) -> None:
        """Mark records as held out for ``label`` (kept across runs; truth can be added later)."""
        with self._lock:
            self._db.executemany("INSERT OR IGNORE INTO holdout (record_id, label, value) VALUES (?, ?, NULL)",
                                 [(rid, label) for rid in record_ids])

    def set_holdout_truth(self, record_id: str, label: str, value: Any) -> None:
        self._exec("INSERT OR REPLACE INTO holdout (record_id, label, value) VALUES (?, ?, ?)",
                   (record_id, label, _dumps(value)))

    def is_holdout(self, record_id: str, label: str) -> bool:
        return self._exec("SELECT 1 FROM holdout WHERE record_id = ? AND label = ?",
                          (record_id, label)).fetchone() is not None

    def holdout_ids(self, label: str | None = None) -> set[str]:
        sql = "SELECT record_id FROM holdout" + (" WHERE label = ?" if label else "")
        return {r[0] for r in self._exec(sql, (label,) if label else ()).fetchall()}

    def holdout_truth(self, label: str | None = None) -> dict[tuple[str, str], Any]:
        """{(record_id, label): true value} for held-out items whose truth is known."""
        sql = "SELECT record_id, label, value FROM holdout WHERE value IS NOT NULL" + (" AND label = ?" if label else "")
        return {(r[0], r[1]): orjson.loads(r[2]) for r in self._exec(sql, (label,) if label else ()).fetchall()}

    def set_pool_classes(self, label: str, classes: Iterable[str]) -> None:
        """The classes present in the review pool (known when the loop has a truth file), so
        ``report`` scores the holdout over the same class set the loop printed."""
        self._exec("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                   (f"pool_classes:{label}", _dumps(sorted(classes))))

    def pool_classes(self, label: str) -> set[str] | None:
        row = self._exec("SELECT value FROM meta WHERE key = ?", (f"pool_classes:{label}",)).fetchone()
        return None if row is None else set(orjson.loads(row[0]))

    # -- model builds: which ground truth each model was trained on -----------------------------

    def record_model_build(self, label: str, version: str, trained_ids: Iterable[str], *, ts: float | None = None) -> None:
        self._exec("INSERT OR REPLACE INTO model_builds VALUES (?, ?, ?, ?)",
                   (label, version, self._clock() if ts is None else ts, _dumps(sorted(trained_ids))))

    def latest_model_build(self, label: str) -> dict[str, Any] | None:
        row = self._exec("SELECT version, ts, trained_ids FROM model_builds WHERE label = ? ORDER BY ts DESC, rowid DESC"
                         " LIMIT 1", (label,)).fetchone()
        return None if row is None else {"version": row[0], "ts": row[1], "trained_ids": set(orjson.loads(row[2]))}

    def record_rejection(self, reason: str, *, record_id: str | None = None, label: str | None = None,
                         value: Any = None, how: str | None = None, ts: float | None = None) -> None:
        """Keep a refused feedback item with its reason, so refusals are counted, not lost."""
        self._exec("INSERT INTO feedback_rejections (ts, record_id, label, value, reason, how) VALUES (?, ?, ?, ?, ?, ?)",
                   (self._clock() if ts is None else ts, record_id, label, _dumps(value), reason, how))

    def validate_feedback(self, record_id: str, label: str, value: Any) -> Any:
        """The value as it will be stored, or FeedbackError saying why it is refused."""
        if not self.has_record(record_id):
            raise FeedbackError(f"unknown id {record_id!r}: no recorded decision has it")
        registry = self.registry()
        if registry is not None:
            value = registry.check(label, value)
            info = registry.labels[label]
            if info.max_cardinality is not None and info.learns_values:
                # The policy's cardinality guard, at the door: a new value past the limit is refused
                # here instead of being learned and then folded into the overflow value at labeling.
                known = {_dumps(v) for v in info.values or ()} | {
                    r[0] for r in self._exec("SELECT value FROM label_values WHERE label = ?", (label,)).fetchall()}
                if _dumps(value) not in known and len(known) >= info.max_cardinality:
                    raise FeedbackError(
                        f"label {label!r} already has {len(known)} values, its max_cardinality; a new value "
                        f"{value!r} would be folded into the overflow value: use an existing value, or raise "
                        "max_cardinality in the policy and import again")
            return value
        if label not in self.known_labels():
            raise FeedbackError(f"unknown label {label!r}; known: {', '.join(sorted(self.known_labels())) or 'none'}")
        return value

    def ground_truth(self, label: str | None = None) -> list[GroundTruth]:
        sql = "SELECT * FROM ground_truth" + (" WHERE label = ?" if label else "") + " ORDER BY ts, rowid"
        rows = self._exec(sql, (label,) if label else ()).fetchall()
        return [GroundTruth(r[0], r[1], orjson.loads(r[2]), r[3], r[4], r[5]) for r in rows]

    def ground_truth_cursor(self) -> tuple[int, float]:
        """A position after every ground-truth row written so far (for ``ground_truth_since``)."""
        row = self._exec("SELECT rowid, ts FROM ground_truth ORDER BY rowid DESC LIMIT 1").fetchone()
        return (int(row[0]), float(row[1])) if row else (0, 0.0)

    def ground_truth_since(self, cursor: tuple[int, float]) -> tuple[list[GroundTruth], tuple[int, float]]:
        """Ground truth written (or replaced) after ``cursor``, and the new cursor: how live SLIs follow the table.

        A replaced row gets a new rowid, except when it was the last row; the
        ``ts`` half of the cursor catches that case.
        """
        rowid, ts = cursor
        rows = self._exec("SELECT rowid, * FROM ground_truth WHERE rowid > ? OR (rowid = ? AND ts > ?) ORDER BY rowid",
                          (rowid, rowid, ts)).fetchall()
        if not rows:
            return [], cursor
        truths = [GroundTruth(r[1], r[2], orjson.loads(r[3]), r[4], r[5], r[6]) for r in rows]
        return truths, (int(rows[-1][0]), float(rows[-1][5]))

    def truth_map(self, label: str | None = None) -> dict[tuple[str, str], Any]:
        """{(record_id, label): true value}."""
        return {(g.record_id, g.label): g.value for g in self.ground_truth(label)}

    def rejections(self) -> list[dict[str, Any]]:
        rows = self._exec("SELECT ts, record_id, label, value, reason, how FROM feedback_rejections ORDER BY id").fetchall()
        return [{"ts": r[0], "record_id": r[1], "label": r[2], "value": orjson.loads(r[3]) if r[3] else None,
                 "reason": r[4], "how": r[5]} for r in rows]

    def counts(self) -> dict[str, int]:
        """How many decisions, ground-truth items and refused feedback items the store holds."""
        def q(table: str) -> int:
            return int(self._exec(f"SELECT COUNT(*) FROM {table}").fetchone()[0])

        return {"decisions": q("decisions"), "ground_truth": q("ground_truth"), "rejected_feedback": q("feedback_rejections")}
