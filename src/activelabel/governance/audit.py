"""The decision audit log: append-only, tamper-evident, verifiable.

Layout of an audit directory::

    DIR/segments/000000000000.jsonl   records, one canonical JSON object a line; the
                                      name is the index of the segment's first record
    DIR/checkpoints/000000001000.note C2SP signed notes: tree size, RFC 9162 root,
                                      and the last leaf hash as an extension line
    DIR/keys/audit.key, audit.pub     Ed25519 signing key (generated on first use)
    DIR/retention.json                what retention removed, with the Merkle frontier
                                      of the removed prefix so the rest still verifies

Each record carries its ``index`` and the base64 leaf hash of the record before it
(``prev``), so an edit, a deletion, an insertion or a reorder is pinned to one record;
checkpoints sign the Merkle root, so a rewritten chain or a truncated tail is caught
too. Field names follow OPA's decision log where they fit (``decision_id``,
``timestamp``, ``bundles``, ``input``, ``result``, ``erased``, ``masked``); ours are
``arm``, ``confidence``, ``sources``, ``door`` and ``labels_set``.

What is written per decision is chosen by a level policy in the Kubernetes audit
style (``None | Metadata | Request | Full``, first matching rule wins). The caller's
thread renders, chains and hashes a chunk of records at a time; one writer thread
writes each run of records (one ``write``) and makes checkpoints durable and signed,
in order (``_audit_write.py``). Its queue is short, so it cannot fall behind by more
than a few runs: a full queue slows the caller down. A record that cannot be written
(disk full, closed log) is counted in ``activelabel_audit_dropped_total{reason}`` and
never vanishes unseen. Reading and verifying a log is ``audit_files.py``.
"""

from __future__ import annotations

import binascii
import itertools
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import IntEnum
from pathlib import Path
from typing import Any, cast, overload

import orjson

from activelabel.errors import AuditError
from activelabel.governance._audit_write import (
    SPILL_DIR,
    SPILL_FILE,
    Chunk,
    Outcome,
    SegmentWriter,
    WriterProcess,
    WriterState,
    chain_lines,
    door_piece,
    lock_directory,
    record_prefix,
    replace_file,
    stamp_piece,
    unlock_directory,
    write_all,
)
from activelabel.governance._merkle import Checkpoint, MerkleFrontier, b64, leaf_hash, unb64
from activelabel.governance.audit_files import (
    KEY_NAME_DEFAULT,
    SEGMENT_DIGITS,
    VerifyResult,
    checkpoint_files,
    iter_lines,
    load_or_create_key,
    load_public_key,
    parse_ts,
    read_records,
    read_retention,
    search_records,
    segment_files,
    segment_name,
    verify_log,
)

_CACHE_LIMIT = 100_000  # distinct outcomes / level choices remembered before the caches start over
_SKIP, _UNENCODABLE = -1, -2  # kinds of records that are not written (level None; no JSON form)


class AuditLevel(IntEnum):
    """How much of a decision is written (Kubernetes audit levels, RequestResponse = Full)."""

    NONE = 0
    METADATA = 1  # ids, time, policy, door, arm, which labels were set and by what source
    REQUEST = 2  # + the event fields the rules read (sensitive ones masked or erased)
    FULL = 3  # + label values and confidences (sensitive ones masked or erased)

    @classmethod
    def parse(cls, text: str) -> AuditLevel:
        try:
            return {"none": cls.NONE, "metadata": cls.METADATA, "request": cls.REQUEST, "full": cls.FULL,
                    "requestresponse": cls.FULL}[text.strip().lower()]
        except KeyError:
            raise AuditError(f"unknown audit level {text!r}: use None, Metadata, Request or Full") from None


@dataclass(frozen=True)
class LevelRule:
    """One rule of the level policy; an empty matcher matches everything."""

    level: AuditLevel
    doors: frozenset[str] = frozenset()
    labels: frozenset[str] = frozenset()
    sensitivities: frozenset[str] = frozenset()

    def matches(self, door: str, labels_set: Sequence[str], sensitivity_of: Mapping[str, str]) -> bool:
        if self.doors and door not in self.doors:
            return False
        if self.labels and not self.labels.intersection(labels_set):
            return False
        return not self.sensitivities or any(sensitivity_of.get(n, "internal") in self.sensitivities for n in labels_set)


@dataclass(frozen=True)
class LevelPolicy:
    """First matching rule wins; no match means ``None`` (as in Kubernetes), no rules means Metadata."""

    rules: tuple[LevelRule, ...] = ()

    def level_for(self, door: str, labels_set: Sequence[str], sensitivity_of: Mapping[str, str]) -> AuditLevel:
        if not self.rules:
            return AuditLevel.METADATA
        for rule in self.rules:
            if rule.matches(door, labels_set, sensitivity_of):
                return rule.level
        return AuditLevel.NONE

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> LevelPolicy:
        """Read ``{rules: [{level, doors, labels, sensitivities}]}`` (the YAML of ``--audit-policy``)."""
        rules = []
        for i, raw in enumerate(data.get("rules") or []):
            if not isinstance(raw, Mapping) or "level" not in raw:
                raise AuditError(f"audit policy rule {i + 1}: needs a `level` (None, Metadata, Request or Full)")
            unknown = set(raw) - {"level", "doors", "labels", "sensitivities"}
            if unknown:
                raise AuditError(f"audit policy rule {i + 1}: unknown keys {sorted(unknown)}")
            rules.append(LevelRule(
                AuditLevel.parse(str(raw["level"])),
                frozenset(map(str, raw.get("doors") or ())),
                frozenset(map(str, raw.get("labels") or ())),
                frozenset(map(str, raw.get("sensitivities") or ())),
            ))
        return cls(tuple(rules))


# A protector turns a sensitive value into what may be written (a pseudonym or a mask),
# or None to leave it out. The privacy mechanism provides one; without it, sensitive
# values are erased.
Protector = Callable[[str, Any], Any]


def _now_rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass
class _Tail:
    """Where the writer stands: next index, last leaf, the frontier."""

    index: int = 0
    prev: bytes = b""
    frontier: MerkleFrontier = field(default_factory=MerkleFrontier)


class NumberedIds(Sequence[str]):
    """Record ids that are one prefix and a decimal number each (``FILE:LINE``, ``topic/partition/offset``).

    ``AuditLog.log_outcomes`` renders them as JSON in one step each, without making the strings.
    """

    __slots__ = ("numbers", "prefix")

    def __init__(self, prefix: str, numbers: Sequence[int]) -> None:
        self.prefix = prefix
        self.numbers = numbers

    def __len__(self) -> int:
        return len(self.numbers)

    @overload
    def __getitem__(self, j: int) -> str: ...

    @overload
    def __getitem__(self, j: slice) -> list[str]: ...

    def __getitem__(self, j: int | slice) -> str | list[str]:
        if isinstance(j, slice):
            return [f"{self.prefix}{n}" for n in self.numbers[j]]
        return f"{self.prefix}{self.numbers[j]}"

    def json_head(self) -> bytes:
        """The canonical JSON of every id up to its number: the opening quote and the escaped prefix.

        TypeError: a prefix with no JSON form (a lone surrogate).
        """
        return orjson.dumps(self.prefix)[:-1]

    def json(self) -> list[bytes]:
        """Each id as its canonical JSON string (TypeError: a prefix with no JSON form)."""
        head = self.json_head()
        return [b'%s%d"' % (head, n) for n in self.numbers]


class AuditLog:
    """Append decisions and administrative actions; checkpoint and rotate as configured.

        log = AuditLog("audit/")                       # key generated into audit/keys/
        log.log_decision(decision, door="cli", policy_name="edge", record_id="r1")
        log.log_admin("reload", actor="ana", version="sha256:…")
        log.close()                                    # writes a final checkpoint
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        key_file: str | Path | None = None,
        key_name: str = KEY_NAME_DEFAULT,
        origin: str | None = None,
        level_policy: LevelPolicy | None = None,
        sensitivity_of: Mapping[str, str] | None = None,
        sensitive_inputs: Sequence[str] = (),
        protector: Protector | None = None,
        input_fields: Sequence[str] | None = None,
        redact: Callable[[dict[str, Any]], tuple[dict[str, Any], list[str], list[str]]] | None = None,
        privacy_for: Callable[[Any], Mapping[str, Any]] | None = None,
        checkpoint_every: int = 10_000,
        checkpoint_interval_s: float = 1.0,
        segment_max_bytes: int = 64 << 20,
        segment_max_age_s: float = 86400.0,
        clock: Callable[[], float] = time.time,
        registry: Any = None,
        lock_wait_s: float = 30.0,
        writer_memory_bytes: int = 32 << 20,
    ) -> None:
        self.directory = Path(directory)
        for sub in ("segments", "checkpoints"):
            (self.directory / sub).mkdir(parents=True, exist_ok=True)
        self._key = load_or_create_key(self.directory, Path(key_file) if key_file else None)
        self.key_name = key_name
        self.origin = origin or f"activelabel.audit/{self.directory.resolve().name}"
        self.level_policy = level_policy or LevelPolicy()
        # The privacy of decisions whose policy version was not registered (see register_policy).
        self._privacy = _Privacy(dict(sensitivity_of or {}), frozenset(sensitive_inputs), protector,
                                 list(input_fields) if input_fields is not None else None, redact)
        # Every sensitivity seen in any registered policy, for the level policy's `sensitivities` matcher.
        self.sensitivity_of = dict(self._privacy.sensitivity_of)
        # A reload, a rollout's candidate or a promote brings another policy: its decisions are
        # written with its own privacy (``privacy_for(policy)``: ``audit_privacy``'s keyword arguments).
        self._privacy_for = privacy_for
        self._privacy_by_version: dict[str, _Privacy] = {}
        self.checkpoint_every = max(1, checkpoint_every)
        self.checkpoint_interval_s = checkpoint_interval_s
        self.segment_max_bytes = segment_max_bytes
        self.segment_max_age_s = segment_max_age_s
        self._clock = clock
        self._lock = threading.Lock()
        self._closed = False
        self.dropped: dict[str, int] = {}
        self._dropped_metric = _dropped_counter(registry)
        self._spilled_metric = _spilled_counter(registry)
        self._dir_lock = lock_directory(self.directory, lock_wait_s)  # one writer per log, from recovery on
        self._remote: WriterProcess | None = None
        try:
            self._tail = self._recover()
        except BaseException:
            unlock_directory(self._dir_lock)  # a log this process cannot write is not held against the next one
            raise
        self._prev64 = binascii.b2a_base64(self._tail.prev, newline=False)
        self._levels: dict[tuple[str, tuple[str, ...]], AuditLevel] = {}
        self._outcomes: dict[tuple[tuple[str, ...], tuple[str, ...]], Outcome] = {}
        # Per door, per Outcome: its level and, at Metadata, its rendered pieces (an Outcome never changes).
        self._rendered: dict[str, dict[Outcome, tuple[AuditLevel, int]]] = {}
        # Rendered (mid, sources) pieces by kind (Chunk.kinds); in a writer process, the child's
        # copy is kept in step by the definitions each chunk carries (Chunk.fresh).
        self._pieces: list[tuple[bytes, bytes] | None] = [None]
        self._writer_memory = writer_memory_bytes  # queued runs held in memory; beyond, they spill to DIR/spill/
        self._writer = SegmentWriter(self.directory, key_name, self._key, memory_bytes=writer_memory_bytes,
                                     on_spill=self._spilled)
        self._fd: int | None = None
        self._segment_bytes = 0
        self._segment_opened = 0.0
        self._since_checkpoint = 0
        self._last_checkpoint_at = clock()
        self._open_segment()

    # -- privacy ----------------------------------------------------------------------------

    def register_policy(self, policy: Any) -> None:
        """Write the decisions of ``policy``'s version with that policy's privacy (its pii/secret labels, redact, inputs).

        Called for every policy whose decisions reach the log (the serving one, a reloaded
        one, a rollout's candidate); ``log_decisions`` does it from each decision's policy.
        A label sensitive in any registered policy counts as sensitive for the level policy.
        """
        version = str(policy.version)
        if self._privacy_for is None or version in self._privacy_by_version:
            return
        got = self._privacy_for(policy)
        fields = got.get("input_fields")
        self._privacy_by_version[version] = _Privacy(dict(got.get("sensitivity_of") or {}),
                                                     frozenset(got.get("sensitive_inputs") or ()), got.get("protector"),
                                                     list(fields) if fields is not None else None, got.get("redact"))
        merged = dict(self.sensitivity_of)
        for name, level in self._privacy_by_version[version].sensitivity_of.items():
            if merged.get(name, "internal") not in ("pii", "secret") or level == "secret":
                merged[name] = level
        if merged != self.sensitivity_of:
            self.sensitivity_of = merged
            self._levels.clear()  # levels chosen by sensitivity are chosen again

    # -- writing ----------------------------------------------------------------------------

    def level_of(self, door: str, names: Sequence[str]) -> AuditLevel:
        """The level the level policy picks for a decision at ``door`` that set the labels ``names``."""
        key = (door, tuple(names))
        level = self._levels.get(key)
        if level is None:
            if len(self._levels) > _CACHE_LIMIT:
                self._levels.clear()
            level = self._levels[key] = self.level_policy.level_for(door, key[1], self.sensitivity_of)
        return level

    @property
    def highest_level(self) -> AuditLevel:
        """The most the level policy ever writes (Metadata or less: no event field and no label value)."""
        if not self.level_policy.rules:
            return AuditLevel.METADATA
        return max(rule.level for rule in self.level_policy.rules)

    def log_decision(
        self,
        decision: Any,
        *,
        door: str,
        policy_name: str,
        record_id: str | None = None,
        event: Mapping[str, Any] | None = None,
        input_fields: Sequence[str] | None = None,
        arm: str = "stable",
    ) -> AuditLevel:
        """Write one decision at the level the policy picks; returns that level."""
        level = self.level_of(door, tuple(decision.labels))
        if level is not AuditLevel.NONE:
            self._log_decisions([(decision, record_id, event, arm)], door, policy_name, input_fields)
        return level

    def log_admin(self, action: str, *, actor: str, **details: Any) -> None:
        """Write an administrative action (reload, rollout step, promote, rollback, feedback import, key rotation)."""
        ts = self._clock()
        self._append(Chunk.of_records([{"kind": "admin", "action": action, "actor": actor,
                                        "timestamp": _now_rfc3339(ts), "details": details}]), ts)

    def log_decisions(self, items: Sequence[tuple[Any, str | None, Mapping[str, Any] | None, str]], *, door: str,
                      policy_name: str) -> int:
        """Write a chunk of ``(decision, record_id, event, arm)``; returns how many records were written.

        The records are those ``log_decision`` writes one by one, in order, with one clock
        reading for the chunk (its decisions were made within the same few milliseconds)
        and one write for the chunk's lines.
        """
        return self._log_decisions(items, door, policy_name, None)

    def _log_decisions(self, items: Sequence[tuple[Any, str | None, Mapping[str, Any] | None, str]], door: str,
                       policy_name: str, input_fields: Sequence[str] | None) -> int:
        if self._privacy_for is not None:
            for version, policy in {str(d.policy_version): getattr(d, "policy", None) for d, _, _, _ in items}.items():
                if version not in self._privacy_by_version and policy is not None:
                    self.register_policy(policy)
        outcomes: list[Outcome] = []
        index_of: dict[int, int] = {}
        outcome_of: list[int] = []
        for decision, _record_id, _event, _arm in items:
            names = tuple(decision.labels)
            # A decision the policy does not log costs no source lookup.
            outcome = (self._outcome(names, decision.sources) if self.level_of(door, names) is not AuditLevel.NONE
                       else Outcome(names, {}))
            k = index_of.get(id(outcome))
            if k is None:
                k = index_of[id(outcome)] = len(outcomes)
                outcomes.append(outcome)
            outcome_of.append(k)

        def values(j: int) -> tuple[Mapping[str, Any] | None, Mapping[str, Any], Mapping[str, float]]:
            decision, _, event, _ = items[j]
            return event, decision.labels, decision.confidences

        return self._log_outcomes(self._clock(), [item[1] for item in items], outcome_of, outcomes, door=door,
                                  policy_name=policy_name, version=[item[0].policy_version for item in items],
                                  arm=[item[3] for item in items], values=values, input_fields=input_fields)

    def log_outcomes(
        self,
        record_ids: Sequence[str | None],
        outcome_of: Sequence[int],
        outcomes: Sequence[Outcome],
        *,
        door: str,
        policy_name: str,
        version: str,
        arm: str | Sequence[str] = "stable",
        values: Callable[[int], tuple[Mapping[str, Any] | None, Mapping[str, Any], Mapping[str, float]]] | None = None,
    ) -> int:
        """Write a chunk of decisions given by outcome: record ``j`` is ``record_ids[j]``, decided as ``outcomes[outcome_of[j]]``.

        The bulk path's form (``AuditObserver.observe_codes``): decisions that came out
        alike share one ``Outcome``, whose JSON is rendered once per chunk. A record the
        level policy writes above Metadata needs ``values(j) -> (event, labels,
        confidences)``; without it such a record is refused (AuditError) rather than
        written with less. Returns how many records were written.
        """
        return self._log_outcomes(self._clock(), record_ids, outcome_of, outcomes, door=door, policy_name=policy_name,
                                  version=version, arm=arm, values=values)

    def _log_outcomes(
        self,
        ts: float,
        record_ids: Sequence[str | None],
        outcome_of: Sequence[int],
        outcomes: Sequence[Outcome],
        *,
        door: str,
        policy_name: str,
        version: str | Sequence[str],
        arm: str | Sequence[str],
        values: Callable[[int], tuple[Mapping[str, Any] | None, Mapping[str, Any], Mapping[str, float]]] | None,
        input_fields: Sequence[str] | None = None,
    ) -> int:
        stamp = _now_rfc3339(ts)
        stamp_bytes = stamp_piece(stamp)
        # Per distinct outcome: its level and the index of its rendered pieces in the log's table
        # (0: a whole record; _SKIP: level None; _UNENCODABLE: a label name with no JSON form).
        # An outcome's pieces go to the writer once, with the first chunk that uses them.
        levels: list[AuditLevel] = []
        kind_of: list[int] = []
        table = self._pieces
        fresh: dict[int, tuple[bytes, bytes]] = {}
        reset = False
        rendered = self._rendered.get(door)
        if len(table) > _CACHE_LIMIT or (rendered is not None and len(rendered) > _CACHE_LIMIT):
            self._rendered.clear()
            del table[1:]
            reset, rendered = True, None
        if rendered is None:
            rendered = self._rendered[door] = {}
        for outcome in outcomes:
            known = rendered.get(outcome)
            if known is None:
                level = self.level_of(door, outcome.names)
                if level is AuditLevel.METADATA:
                    try:
                        fresh[len(table)] = piece = outcome.pieces()
                    except TypeError:
                        known = (level, _UNENCODABLE)
                    else:
                        known = (level, len(table))
                        table.append(piece)
                else:
                    known = (level, _SKIP if level is AuditLevel.NONE else 0)
                rendered[outcome] = known
            levels.append(known[0])
            kind_of.append(known[1])
        kinds = [kind_of[k] for k in outcome_of]
        positions: Sequence[int] = range(len(kinds))
        unencodable = 0
        if kinds and min(kinds) < 0:
            unencodable = kinds.count(_UNENCODABLE)
            positions = [j for j, kind in enumerate(kinds) if kind >= 0]
            kinds = [kinds[j] for j in positions]
        all_of_them = positions == range(len(record_ids))
        ids: Sequence[str]
        if isinstance(record_ids, NumberedIds):
            ids = record_ids if all_of_them else NumberedIds(record_ids.prefix, [record_ids.numbers[j] for j in positions])
        else:
            chosen = list(record_ids) if all_of_them else [record_ids[j] for j in positions]
            ids = ([_fresh_id(ts) if rid is None else rid for rid in chosen] if None in chosen
                   else cast("list[str]", chosen))
        prefix = b""
        door_bytes = door_piece(door)
        heads: list[bytes | None]
        numbers: Sequence[int] | None = None
        id_head = _numbered_head(ids) if isinstance(arm, str) and isinstance(version, str) else None
        if id_head is not None:  # FILE:LINE ids: the writer renders each line number as it chains
            assert isinstance(ids, NumberedIds)
            prefix = record_prefix(cast("str", arm), policy_name, cast("str", version)) + id_head
            door_bytes = b'"' + door_bytes
            numbers, heads = ids.numbers, []
        elif isinstance(arm, str) and isinstance(version, str):
            prefix = record_prefix(arm, policy_name, version)
            try:
                as_json = ids.json() if isinstance(ids, NumberedIds) else [orjson.dumps(rid) for rid in ids]
                heads = cast("list[bytes | None]", as_json)
            except TypeError:  # an id with no JSON form (a lone surrogate): that record alone is left out
                heads = [_json_or_none(rid) for rid in ids]
        else:  # per-record arms or versions (a rollout): each head starts with its own prefix
            prefixes: dict[tuple[str, str], bytes] = {}
            heads = []
            for j, rid in zip(positions, ids, strict=True):
                key = (arm if isinstance(arm, str) else arm[j], version if isinstance(version, str) else version[j])
                head = _json_or_none(rid)
                if head is not None:
                    record_head = prefixes.get(key)
                    if record_head is None:
                        record_head = prefixes[key] = record_prefix(key[0], policy_name, key[1])
                    head = record_head + head
                heads.append(head)
        general: dict[int, dict[str, Any]] = {}
        for at, (j, kind) in enumerate(zip(positions, kinds, strict=True)) if 0 in kinds else ():
            if kind:
                continue
            if values is None:
                raise AuditError(f"level {levels[outcome_of[j]].name.title()} writes event fields and label values, "
                                 "which this caller did not give: log these decisions with log_decisions")
            event, labels, confidences = values(j)
            outcome = outcomes[outcome_of[j]]
            general[at] = self._full_record(
                levels[outcome_of[j]], door, policy_name, version if isinstance(version, str) else version[j],
                arm if isinstance(arm, str) else arm[j], ids[at], stamp, outcome.names, outcome.sources, labels,
                confidences, event, input_fields)
        if None in heads:  # ids with no JSON form: those records are left out (a whole record fails on its own)
            keep = [at for at, head in enumerate(heads) if head is not None or at in general]
            unencodable += len(heads) - len(keep)
            general = {new: general[old] for new, old in enumerate(keep) if old in general}
            heads = [heads[at] for at in keep]
            kinds = [kinds[at] for at in keep]
        chunk = Chunk(prefix, door_bytes, [head or b"" for head in heads] if None in heads
                      else cast("list[bytes]", heads), kinds, None, general, numbers, stamp_bytes, fresh, reset)
        return self._append(chunk, ts, unencodable=unencodable)

    def _outcome(self, names: tuple[str, ...], sources: Mapping[str, str]) -> Outcome:
        """The shared ``Outcome`` of decisions that set ``names`` from these sources."""
        key = (names, tuple(sources.values()))
        outcome = self._outcomes.get(key)
        if outcome is None:
            if len(self._outcomes) > _CACHE_LIMIT:
                self._outcomes.clear()
            outcome = self._outcomes[key] = Outcome(names, sources)
        return outcome

    def _full_record(self, level: AuditLevel, door: str, policy_name: str, version: str, arm: str,
                     record_id: str, stamp: str, names: Sequence[str], sources: Mapping[str, str],
                     labels: Mapping[str, Any], confidences: Mapping[str, float], event: Mapping[str, Any] | None,
                     input_fields: Sequence[str] | None) -> dict[str, Any]:
        """A record above Metadata, as a dict for the general RFC 8785 path (sensitive values protected)."""
        record: dict[str, Any] = {
            "kind": "decision",
            "decision_id": record_id,
            "timestamp": stamp,
            "door": door,
            "bundles": {policy_name: {"revision": version}},
            "arm": arm,
            "labels_set": list(names),
            "sources": dict(sources),
            "level": level.name.title(),
        }
        privacy = self._privacy_by_version.get(version, self._privacy)
        erased: list[str] = []
        masked: list[str] = []
        if level >= AuditLevel.REQUEST and event is not None:
            keys = input_fields if input_fields is not None else (
                privacy.input_fields if privacy.input_fields is not None else list(event))
            written: dict[str, Any] = {}
            for key in keys:
                if key not in event:
                    continue
                value = event[key]
                if key in privacy.sensitive_inputs:
                    protected = privacy.protector(key, value) if privacy.protector else None
                    if protected is None:
                        erased.append(f"/input/{key}")
                        continue
                    masked.append(f"/input/{key}")
                    value = protected
                written[key] = value
            if privacy.redact is not None:  # the policy's redact: what the labeled output gets, the log gets
                written, by_redaction, removed = privacy.redact(written)
                masked += by_redaction
                erased += removed
            record["input"] = written
        if level >= AuditLevel.FULL:
            result: dict[str, Any] = {}
            for name, value in labels.items():
                if privacy.sensitivity_of.get(name, "internal") in ("pii", "secret"):
                    protected = privacy.protector(name, value) if privacy.protector else None
                    if protected is None:
                        erased.append(f"/result/{name}")
                        continue
                    masked.append(f"/result/{name}")
                    value = protected
                result[name] = value
            record["result"] = result
            record["confidence"] = dict(confidences)
        if erased:
            record["erased"] = erased
        if masked:
            record["masked"] = masked
        return record

    def start_writer_process(self) -> None:
        """From now on, chain, hash and write in a forked child process (``activelabel label`` does).

        The labeling thread then only renders each chunk's pieces and hands them over, so
        the sequential work runs on another core; records, order, checkpoints and
        ``close()`` are as before (``close`` returns once the child has written
        everything, and ``dropped`` gets the child's counts then). For a process that
        forks only labeling workers after this; a threaded server keeps the in-process
        writer thread. Linux only (elsewhere the writer thread stays).
        """
        if not sys.platform.startswith("linux"):
            return  # fork is the safe default only there (macOS spawns; Windows has none): keep the thread
        with self._lock:
            if self._remote is not None or self._closed:
                return
            self._writer.wait()  # nothing of this process's writer thread may be in flight
            remote = WriterProcess(self._serve, self._finish_child, self._after_fork)
            self._remote = remote

    def _after_fork(self) -> None:
        """In the writer process: a lock and a writer thread of its own (the fork copied this one's, held)."""
        self._lock = threading.Lock()
        self._writer = SegmentWriter(self.directory, self.key_name, self._key, memory_bytes=self._writer_memory,
                                     on_spill=self._spilled)
        self._remote = None

    def _serve(self, message: tuple[Any, ...]) -> Any:
        """What the writer process does with a message from the labeling process."""
        kind = message[0]
        if kind == "append":
            return self._append(message[1], message[2], unencodable=message[3])
        if kind == "checkpoint":
            return self.checkpoint()
        if kind == "retention":
            return self.apply_retention(message[1], actor=message[2])
        if kind == "size":
            return self.size
        if kind == "close":
            self.close()
            return dict(self.dropped), self.size
        raise AuditError(f"the audit writer process got an unknown message {kind!r}")

    def _finish_child(self) -> None:
        self.close()

    def _append(self, chunk: Chunk, ts: float, *, unencodable: int = 0) -> int:
        """Append ``chunk``'s records in order under the lock; returns how many were handed to the writer."""
        if self._remote is not None:
            with self._lock:
                if self._closed:
                    self._drop("closed", len(chunk) + unencodable)
                    return 0
                self._remote.send(("append", chunk, ts, unencodable))
                return len(chunk)
        with self._lock:
            chunk.pieces = self._take_pieces(chunk)  # before anything is refused: later chunks use them
            if self._writer.failure is not None:
                self._drop("checkpoint_error", len(chunk) + unencodable)
                self._writer.raise_failure()
            if unencodable:
                self._drop("unencodable", unencodable)
            self._rewind_if_failed()
            return self._append_locked(chunk, ts)

    def _take_pieces(self, chunk: Chunk) -> list[tuple[bytes, bytes] | None]:
        """The pieces table ``chunk``'s kinds index, with the definitions it brings (a writer process's copy)."""
        if chunk.pieces is not None:  # a chunk that brings its own (whole records only)
            return chunk.pieces
        table = self._pieces
        if chunk.reset:
            del table[1:]
        for kind, piece in chunk.fresh.items():
            if kind < len(table):
                table[kind] = piece  # the labeling process's own table: already there
            else:
                table.extend([None] * (kind - len(table)))
                table.append(piece)
        return table

    def _append_locked(self, chunk: Chunk, ts: float) -> int:
        """Chain and hash ``chunk`` a run at a time, and hand each run to the writer thread as one write.

        A run ends where a checkpoint is due (every ``checkpoint_every`` records) or the
        segment is full, so checkpoints and rotation fall on the same records as when
        records were written one by one. The log's state moves on as each run is handed
        over; a run the disk refuses is cut back off the file by the writer, and the next
        call goes back to where the log stood before it (``_rewind_if_failed``).
        """
        written = 0
        i, n = 0, len(chunk)
        tail = self._tail
        while i < n:
            fd = self._fd
            if self._closed or fd is None:
                self._drop("closed", n - i)
                break
            stop = min(n, i + max(1, self.checkpoint_every - self._since_checkpoint))
            lines, leaves, i, nbytes, prev64, unencodable = chain_lines(
                chunk, i, stop, tail.index, self._prev64, self.segment_max_bytes - self._segment_bytes)
            if unencodable:
                self._drop("unencodable", unencodable)
            if lines:
                before = WriterState(tail.index, tail.prev, self._prev64, tuple(tail.frontier.subtrees),
                                     self._segment_bytes, self._since_checkpoint)
                lines.append(b"")
                self._writer.write(fd, b"\n".join(lines), len(leaves), before)
                tail.frontier.extend(leaves)
                tail.prev = leaves[-1]
                tail.index += len(leaves)
                self._prev64 = prev64
                self._segment_bytes += nbytes
                self._since_checkpoint += len(leaves)
                written += len(leaves)
            if (self._since_checkpoint >= self.checkpoint_every
                    or (self._since_checkpoint and ts - self._last_checkpoint_at >= self.checkpoint_interval_s)):
                self._checkpoint_locked(ts)
            if (self._segment_bytes >= self.segment_max_bytes
                    or ts - self._segment_opened >= self.segment_max_age_s):
                self._rotate_locked(ts)
        return written

    def _rewind_if_failed(self, wait: bool = False) -> bool:
        """After a write the disk refused: go back to the state before it, and count what was lost."""
        if self._writer.write_failure is None and not wait:
            return False
        self._writer.wait()  # every run queued after the failed one is skipped (it chains onto it)
        failed = self._writer.take_write_failure()
        if failed is None:
            return False
        _exc, state, lost = failed
        tail = self._tail
        tail.index, tail.prev, tail.frontier = state.index, state.prev, MerkleFrontier(state.subtrees)
        self._prev64, self._segment_bytes, self._since_checkpoint = state.prev64, state.segment_bytes, state.since_checkpoint
        self._drop("write_error", lost)
        return True

    def _spilled(self, nbytes: int) -> None:
        if self._spilled_metric is not None:
            self._spilled_metric.inc(nbytes)

    def _drop(self, reason: str, count: int = 1) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + count
        if self._dropped_metric is not None:
            self._dropped_metric.labels(reason=reason).inc(count)

    def checkpoint(self) -> Checkpoint:
        """Sign the current tree, and return once it and every record it covers are on disk.

        Also done every N records / T seconds (then off the labeling thread), at rotation and at close.
        """
        if self._remote is not None:
            with self._lock:
                cp: Checkpoint = self._remote.call(("checkpoint",))
                return cp
        with self._lock:
            return self._sync_locked(self._clock())

    def _sync_locked(self, ts: float) -> Checkpoint:
        """A checkpoint of everything handed over so far, waited for until it is on disk."""
        self._rewind_if_failed(wait=True)
        cp = self._checkpoint_locked(ts)
        if self._rewind_if_failed(wait=True):  # a write failed after all: sign what is on disk instead
            cp = self._checkpoint_locked(ts)
            self._writer.wait()
        self._writer.raise_failure()
        return cp

    def _checkpoint_locked(self, ts: float) -> Checkpoint:
        """Queue a signed checkpoint of every record handed to the writer so far (written before it, in order)."""
        tail = self._tail
        cp = Checkpoint(self.origin, tail.index, tail.frontier.root(), (f"last-leaf {self._prev64.decode()}",))
        note = self.directory / "checkpoints" / f"{tail.index:0{SEGMENT_DIGITS}d}.note"
        state = orjson.dumps({"size": tail.index, "prev": self._prev64.decode(), "frontier": tail.frontier.to_json()})
        self._writer.checkpoint(self._fd, cp, note, state)
        self._since_checkpoint = 0
        self._last_checkpoint_at = ts
        return cp

    def _rotate_locked(self, ts: float) -> None:
        self._checkpoint_locked(ts)
        if self._rewind_if_failed(wait=True):
            return  # the segment is where it was before the refused run: not full after all
        if self._fd is not None:
            self._writer.close_fd(self._fd)
        self._open_segment(new=True)

    def _open_segment(self, new: bool = False) -> None:
        segments = segment_files(self.directory)
        if segments and not new:
            path = segments[-1]
        else:
            path = self.directory / "segments" / segment_name(self._tail.index)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._segment_bytes = os.fstat(self._fd).st_size
        self._segment_opened = self._clock()

    def close(self) -> None:
        """Write a final checkpoint, wait until everything is on disk, and close; later writes are counted as dropped.

        Raises AuditError when a checkpoint could not be written (the records are on disk;
        `audit verify` says how far the signatures reach).
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                if self._remote is not None:
                    self._close_remote(self._remote)
                else:
                    self._sync_locked(self._clock())
            finally:
                if self._fd is not None:
                    if self._remote is not None:
                        os.close(self._fd)  # the writer process wrote it, this process never did
                    else:
                        self._writer.close_fd(self._fd)
                self._fd = None
                self._writer.close()
                unlock_directory(self._dir_lock)

    def _close_remote(self, remote: WriterProcess) -> None:
        """Tell the writer process to finish, take its counts, and wait for it to exit."""
        try:
            dropped, size = remote.call(("close",))
        finally:
            remote.wait()
        for reason, count in dropped.items():
            self._drop(reason, count)
        self._tail.index = size

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def size(self) -> int:
        """Records in the log (handed to the writer and not dropped, once the writer has caught up)."""
        if self._remote is not None and not self._closed:
            with self._lock:
                size: int = self._remote.call(("size",))
                return size
        return self._tail.index

    # -- recovery ------------------------------------------------------------------------------

    def _recover(self) -> _Tail:
        """Resume after the last complete record; a torn tail (kill -9) is moved aside."""
        tail = _Tail()
        retention = read_retention(self.directory)
        if retention is not None:
            tail = _Tail(retention.next_index, retention.prev, retention.frontier)
        state_path = self.directory / "checkpoints" / "state.json"
        if state_path.exists():
            state = orjson.loads(state_path.read_bytes())
            if int(state["size"]) >= tail.index:
                tail = _Tail(int(state["size"]), unb64(state["prev"]), MerkleFrontier.from_json(state["frontier"]))
        on_disk = _complete_records(self.directory, retention.next_index if retention is not None else 0)
        # The newest signed note counts too: state.json is a cache anyone who can cut the log can delete.
        signed = max([tail.index, *(int(p.stem) for p in checkpoint_files(self.directory) if p.stem.isdigit())])
        if on_disk < signed:  # a checkpoint signed records that are no longer there: never write after a cut
            raise AuditError(
                f"the audit log {self.directory} was cut: its segments hold {on_disk} complete records but a signed "
                f"checkpoint covers {signed}; run `activelabel audit verify {self.directory}`, keep that directory "
                "as it is (it is the evidence) and give --audit a new one")
        leaves: list[bytes] = []
        for path, offset, raw in iter_lines(self.directory, start_index=tail.index):
            if not raw.endswith(b"\n"):
                torn = path.with_name(path.name + f".torn-{int(time.time())}")
                torn.write_bytes(raw)
                with path.open("r+b") as fh:
                    fh.truncate(offset)
                break
            leaves.append(leaf_hash(raw[:-1]))
        if leaves:
            tail.frontier.extend(leaves)
            tail.prev = leaves[-1]
            tail.index += len(leaves)
        self._replay_spill(tail)
        return tail

    def _replay_spill(self, tail: _Tail) -> None:
        """Write the runs a killed writer had spilled and not yet written, where they chain on to the log.

        Spilled records already in a segment (written before the kill) are skipped; the
        rest are appended while each one's ``index`` and ``prev`` follow the log's last
        record. Records after a gap (a run that was still in memory) cannot chain on: the
        file is kept beside as ``runs.spill.orphan-<time>`` and its records are counted
        as dropped (``lost_in_crash``).
        """
        path = self.directory / SPILL_DIR / SPILL_FILE
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return
        complete = raw[:raw.rfind(b"\n") + 1]  # a line cut by the kill has no newline: never written
        lines = complete.split(b"\n")[:-1]
        replay: list[bytes] = []
        prev64 = b64(tail.prev)
        left = 0
        for k, line in enumerate(lines):
            try:
                record = orjson.loads(line)
                index, prev = int(record["index"]), record["prev"]
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                left = len(lines) - k
                break
            if index < tail.index:
                continue
            if index != tail.index or prev != prev64:
                left = len(lines) - k
                break
            leaf = leaf_hash(line)
            replay.append(line)
            tail.frontier.append(leaf)
            tail.prev, tail.index, prev64 = leaf, tail.index + 1, b64(leaf)
        if replay:
            segments = segment_files(self.directory)
            target = segments[-1] if segments else self.directory / "segments" / segment_name(tail.index - len(replay))
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                write_all(fd, b"\n".join(replay) + b"\n")
                os.fsync(fd)
            finally:
                os.close(fd)
        if left:
            path.rename(path.with_name(f"{SPILL_FILE}.orphan-{int(time.time())}"))
            self._drop("lost_in_crash", left)
        else:
            path.unlink()

    # -- retention -----------------------------------------------------------------------------

    def apply_retention(self, max_age_s: float, *, actor: str = "retention") -> int:
        """Remove whole segments whose newest record is older than ``max_age_s``; returns records removed.

        Only the oldest segments go (a prefix), never the one being written. What was
        removed is itself logged, and the frontier of the removed prefix is kept, so
        ``audit verify`` still checks every remaining record and checkpoint.
        """
        if self._remote is not None:
            with self._lock:
                count_removed: int = self._remote.call(("retention", max_age_s, actor))
                return count_removed
        with self._lock:
            self._sync_locked(self._clock())
            segments = segment_files(self.directory)[:-1]
            cutoff = self._clock() - max_age_s
            previous = read_retention(self.directory)
            frontier = previous.frontier if previous else MerkleFrontier()
            prev = previous.prev if previous else b""
            next_index = previous.next_index if previous else 0
            removed: list[dict[str, Any]] = []
            for path in segments:
                lines = path.read_bytes().splitlines()
                if not lines:
                    continue
                newest = parse_ts(orjson.loads(lines[-1]).get("timestamp"))
                if newest is None or newest >= cutoff:
                    break
                for line in lines:
                    leaf = leaf_hash(line)
                    frontier.append(leaf)
                    prev = leaf
                removed.append({"segment": path.name, "first_index": next_index, "records": len(lines)})
                next_index += len(lines)
            if not removed:
                return 0
            state = {"next_index": next_index, "prev": b64(prev), "frontier": frontier.to_json(),
                     "removed": [*(previous.removed if previous else []), *removed]}
            replace_file(self.directory / "retention.json", orjson.dumps(state))
            for item in removed:
                (self.directory / "segments" / item["segment"]).unlink()
        count = sum(int(item["records"]) for item in removed)
        self.log_admin("retention", actor=actor, removed_records=count, through_index=next_index - 1,
                       prefix_root=b64(frontier.root()), segments=[item["segment"] for item in removed])
        self.checkpoint()
        return count


@dataclass(frozen=True)
class _Privacy:
    """How one policy's decisions are written above Metadata (``governance.output.audit_privacy``)."""

    sensitivity_of: dict[str, str]
    sensitive_inputs: frozenset[str]
    protector: Protector | None
    input_fields: list[str] | None  # None: every event field
    redact: Callable[[dict[str, Any]], tuple[dict[str, Any], list[str], list[str]]] | None


def _complete_records(directory: Path, first_kept: int) -> int:
    """How many records the segments hold whole (newline-terminated), counting those retention removed.

    Only the last segment is counted line by line; each earlier one must end with a whole
    record whose ``index`` is one before the next segment's first (its name), so a cut
    inside the log is found by reading a few KiB per segment. AuditError when one does not.
    """
    segments = segment_files(directory)
    if not segments:
        return first_kept
    written = list(segments)
    while len(written) > 1 and written[-1].stat().st_size == 0:
        written.pop()  # a segment opened at rotation before a kill: the one before may end torn
    for path, following in itertools.pairwise(written):
        if not _ends_before(path, int(following.stem)):
            raise AuditError(
                f"the audit log {directory} was cut inside: {path.name} does not end with record "
                f"{int(following.stem) - 1}, the one before {following.name}; run `activelabel audit verify "
                f"{directory}`, keep that directory as it is (it is the evidence) and give --audit a new one")
    lines = 0
    with segments[-1].open("rb") as fh:
        while block := fh.read(1 << 20):
            lines += block.count(b"\n")
    return int(segments[-1].stem) + lines


def _ends_before(path: Path, next_first: int) -> bool:
    """Whether segment ``path`` ends with a whole record whose index is ``next_first - 1``."""
    with path.open("rb") as fh:
        size = fh.seek(0, os.SEEK_END)
        fh.seek(max(0, size - (256 << 10)))
        tail = fh.read()
    if not tail.endswith(b"\n"):
        return False
    last = tail[:-1].rsplit(b"\n", 1)[-1]
    try:
        record = orjson.loads(last)
        return isinstance(record, dict) and record.get("index") == next_first - 1
    except orjson.JSONDecodeError:
        return False


def _numbered_head(ids: Sequence[str]) -> bytes | None:
    """``ids.json_head()`` when ``ids`` are numbered ids that all have a JSON form, else None."""
    if not isinstance(ids, NumberedIds):
        return None
    try:
        return ids.json_head()
    except TypeError:
        return None


def _json_or_none(text: str) -> bytes | None:
    try:
        return orjson.dumps(text)
    except TypeError:
        return None


def _fresh_id(ts: float) -> str:
    return f"{int(ts * 1e6):x}-{os.urandom(4).hex()}"


def _spilled_counter(registry: Any) -> Any:
    if registry is None:
        return None
    from prometheus_client import Counter

    return Counter("activelabel_audit_spilled_bytes", "Audit record bytes queued on disk because the writer was behind "
                   "(written later, in order; not lost).", registry=registry)


def _dropped_counter(registry: Any) -> Any:
    if registry is None:
        return None
    from prometheus_client import Counter

    return Counter("activelabel_audit_dropped_total",
                   "Audit records that could not be written, by reason (never silent: the audit log's loss count).",
                   ["reason"], registry=registry)


__all__ = [
    "KEY_NAME_DEFAULT", "AuditLevel", "AuditLog", "LevelPolicy", "LevelRule", "NumberedIds", "Outcome", "Protector",
    "VerifyResult", "load_or_create_key", "load_public_key", "read_records", "search_records", "verify_log",
]
