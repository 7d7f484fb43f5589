"""The audit log on disk: its layout, its keys, and reading and verifying it (``audit verify``, ``show``, ``search``).

Apart from the writer (``audit.py``) because none of this is on the labeling path, and
verification must stand on its own: it trusts nothing the writer keeps for itself
(``checkpoints/state.json``), only the records, the signed notes and the public key.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from activelabel.errors import AuditError
from activelabel.governance._merkle import Checkpoint, MerkleFrontier, b64, canonical_json, leaf_hash, open_note, unb64

KEY_NAME_DEFAULT = "activelabel-audit"
SEGMENT_DIGITS = 12


# --- keys ------------------------------------------------------------------------------------


def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ModuleNotFoundError as exc:
        from activelabel._extras import missing_extra

        raise (missing_extra(exc) or exc) from exc
    return serialization, ed25519


def load_or_create_key(directory: Path, key_file: Path | None = None) -> Any:
    """The Ed25519 signing key: ``key_file`` if given, else ``DIR/keys/audit.key`` (created once)."""
    serialization, ed25519 = _crypto()
    path = key_file or directory / "keys" / "audit.key"
    if path.exists():
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (ValueError, TypeError) as exc:
            raise AuditError(f"{path}: not a PEM Ed25519 private key ({exc}); give --audit-key a key made by "
                             "`openssl genpkey -algorithm ed25519`") from exc
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise AuditError(f"{path}: the audit key must be Ed25519")
        _write_public(directory, key)
        return key
    if key_file is not None:
        raise AuditError(f"{key_file}: audit key file not found; leave out --audit-key to generate one in {directory}/keys/")
    key = ed25519.Ed25519PrivateKey.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    _write_public(directory, key)
    return key


def _write_public(directory: Path, key: Any) -> None:
    serialization, _ = _crypto()
    pub = directory / "keys" / "audit.pub"
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    if not pub.exists() or pub.read_bytes() != pem:
        pub.parent.mkdir(parents=True, exist_ok=True)
        pub.write_bytes(pem)


def load_public_key(path: Path) -> Any:
    serialization, ed25519 = _crypto()
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise AuditError(f"{path}: cannot read the audit public key ({exc})") from exc
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise AuditError(f"{path}: the audit public key must be Ed25519")
    return key


def segment_name(first_index: int) -> str:
    """The file name of a segment whose first record is ``first_index``."""
    return f"{first_index:0{SEGMENT_DIGITS}d}.jsonl"


def segment_files(directory: Path) -> list[Path]:
    """The segments of a log, oldest first."""
    seg_dir = directory / "segments"
    return sorted(seg_dir.glob("*.jsonl")) if seg_dir.is_dir() else []


def checkpoint_files(directory: Path) -> list[Path]:
    """The signed notes of a log, by tree size."""
    cp_dir = directory / "checkpoints"
    return sorted(cp_dir.glob("*.note")) if cp_dir.is_dir() else []


def parse_ts(text: Any) -> float | None:
    """A record's RFC 3339 ``timestamp`` as epoch seconds (None when it is not one)."""
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@dataclass(frozen=True)
class Retention:
    """What ``retention.json`` says: where the kept records start, and the frontier of the removed ones."""

    next_index: int
    prev: bytes
    frontier: MerkleFrontier
    removed: list[dict[str, Any]]


def read_retention(directory: Path) -> Retention | None:
    """The log's retention record, or None when nothing was ever removed."""
    path = directory / "retention.json"
    if not path.exists():
        return None
    data = orjson.loads(path.read_bytes())
    return Retention(int(data["next_index"]), unb64(data["prev"]), MerkleFrontier.from_json(data["frontier"]),
                     list(data.get("removed") or []))


def iter_lines(directory: Path, start_index: int = 0) -> Iterator[tuple[Path, int, bytes]]:
    """(segment, byte offset, raw line with its newline if any) from ``start_index`` on."""
    segments = segment_files(directory)
    firsts = [int(p.stem) for p in segments]
    for path, first in zip(segments, firsts, strict=True):
        following = [f for f in firsts if f > first]
        if following and following[0] <= start_index:
            continue
        index = first
        offset = 0
        with path.open("rb") as fh:
            for raw in fh:
                if index >= start_index:
                    yield path, offset, raw
                offset += len(raw)
                index += 1


# --- verification ----------------------------------------------------------------------------


@dataclass
class VerifyResult:
    """What ``audit verify`` found; ``ok`` is False on the first break, which ``problem`` names."""

    ok: bool
    records: int
    checkpoints: int
    first_bad_index: int | None = None
    problem: str = ""
    torn_tail: str = ""
    retained_from: int = 0
    unverifiable_checkpoints: int = 0
    unsigned: int = 0  # records after the newest signed checkpoint

    def summary(self) -> str:
        if self.ok:
            text = (f"intact: {self.records} records from index {self.retained_from}, "
                    f"{self.checkpoints} signed checkpoints verified")
            if self.unverifiable_checkpoints:
                text += f" ({self.unverifiable_checkpoints} older checkpoints cover removed segments)"
            if self.unsigned:
                # No signature covers them yet (a writer still running, or killed): a cut or an edit of these
                # records, or of them together with the newest checkpoints, is not detectable from this copy.
                text += (f"; the last {self.unsigned} records are after the newest signed checkpoint: compare with a "
                         "checkpoint kept elsewhere, or verify again once the writer has closed the log")
            if self.torn_tail:
                text += f"; {self.torn_tail}"
            return text
        return f"BROKEN at record {self.first_bad_index}: {self.problem}"


def verify_log(directory: str | Path, *, public_key_file: str | Path | None = None,
               key_name: str = KEY_NAME_DEFAULT) -> VerifyResult:
    """Check every record, the chain, every signed checkpoint, and that nothing is missing."""
    directory = Path(directory)
    pub_path = Path(public_key_file) if public_key_file else directory / "keys" / "audit.pub"
    public_key = load_public_key(pub_path)
    checkpoints: dict[int, Checkpoint] = {}
    for path in checkpoint_files(directory):
        try:
            cp = open_note(path.read_bytes(), key_name, public_key)
        except AuditError as exc:
            return VerifyResult(False, 0, 0, int(path.stem), f"checkpoint {path.name}: {exc}")
        checkpoints[cp.size] = cp
    retention = read_retention(directory)
    expected = retention.next_index if retention else 0
    frontier = retention.frontier if retention else MerkleFrontier()
    prev = retention.prev if retention else b""
    result = VerifyResult(True, 0, 0, retained_from=expected)
    if retention is not None:
        cut = checkpoints.get(expected)
        if cut is None or cut.root != frontier.root():
            return VerifyResult(False, 0, 0, expected,
                                "retention.json's frontier does not match the signed checkpoint at the cut")
        result.unverifiable_checkpoints = sum(1 for size in checkpoints if size < expected)
    if expected in checkpoints and expected > 0:
        result.checkpoints += 1
    segments = segment_files(directory)
    for seg_no, path in enumerate(segments):
        data = path.read_bytes()
        lines = data.split(b"\n")
        complete, torn = lines[:-1], lines[-1]
        first = int(path.stem)
        if first != expected:
            return _broken(result, expected, f"segment {path.name} starts at index {first}; records "
                                             f"{expected}..{first - 1} are missing")
        for line_no, line in enumerate(complete, 1):
            where = f"{path.name} line {line_no}"
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                return _broken(result, expected, f"{where} is not valid JSON (edited?)")
            if not isinstance(record, dict):
                return _broken(result, expected, f"{where} is not a JSON object")
            index = record.get("index")
            if index != expected:
                if isinstance(index, int) and index > expected:
                    return _broken(result, expected, f"{where} has index {index}: record {expected} is missing "
                                                     "(deleted or reordered)")
                return _broken(result, max(0, expected - 1) if isinstance(index, int) and index == expected - 1
                               else expected, f"{where} has index {index}, expected {expected} (inserted or reordered)")
            if record.get("prev") != b64(prev):
                return _broken(result, expected - 1, f"record {expected - 1} does not hash to what record "
                                                     f"{expected} recorded (edited)")
            if canonical_json(record) != line:
                return _broken(result, expected, f"{where} is not in canonical form (edited)")
            leaf = leaf_hash(line)
            frontier.append(leaf)
            prev = leaf
            expected += 1
            result.records += 1
            signed = checkpoints.get(expected)
            if signed is not None:
                if signed.extension("last-leaf") not in (None, b64(prev)):
                    return _broken(result, expected - 1, f"record {expected - 1} differs from the one the "
                                                         f"checkpoint at size {expected} signed (edited)")
                if signed.root != frontier.root():
                    return _broken(result, expected - 1, f"the Merkle root of the first {expected} records does "
                                                         "not match its signed checkpoint (records rewritten)")
                result.checkpoints += 1
        if torn:
            if seg_no != len(segments) - 1:
                return _broken(result, expected, f"{path.name} ends in a partial record inside the log")
            result.torn_tail = (f"torn tail of {len(torn)} bytes begins at byte {len(data) - len(torn)} of "
                                f"{path.name}, after record {expected - 1} (an interrupted write)")
    newest = max(checkpoints, default=0)
    if newest > expected:
        return _broken(result, expected, f"truncated: a signed checkpoint covers {newest} records but only "
                                         f"{expected} are present; record {expected} onwards is missing")
    result.unsigned = expected - max(newest, result.retained_from)
    return result


def _broken(result: VerifyResult, index: int, problem: str) -> VerifyResult:
    result.ok = False
    result.first_bad_index = index
    result.problem = problem
    return result


def read_records(directory: str | Path) -> Iterator[dict[str, Any]]:
    """Every complete record of the log, in index order (for ``audit show`` / ``search``)."""
    for _, _, raw in iter_lines(Path(directory)):
        if raw.endswith(b"\n"):
            try:
                record = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            if isinstance(record, dict):
                yield record


def record_versions(record: dict[str, Any]) -> list[str]:
    """The policy versions a record names (its bundles' revisions)."""
    return [b["revision"] for b in (record.get("bundles") or {}).values()
            if isinstance(b, dict) and isinstance(b.get("revision"), str)]


def log_versions(directory: str | Path) -> set[str]:
    """Every policy version the records of the log name (to resolve a version prefix against)."""
    return {v for record in read_records(directory) for v in record_versions(record)}


def search_records(
    directory: str | Path,
    *,
    decision_id: str | None = None,
    version: str | None = None,
    label: tuple[str, str] | None = None,
    since: float | None = None,
    until: float | None = None,
    kind: str | None = None,
) -> Iterator[dict[str, Any]]:
    """Records matching every given criterion (label values only where the level wrote them)."""
    for record in read_records(directory):
        if kind is not None and record.get("kind") != kind:
            continue
        if decision_id is not None and record.get("decision_id") != decision_id:
            continue
        if version is not None and version not in record_versions(record):
            continue
        if label is not None:
            result = record.get("result") or {}
            if str(result.get(label[0])) != label[1]:
                continue
        ts = parse_ts(record.get("timestamp"))
        if since is not None and (ts is None or ts < since):
            continue
        if until is not None and (ts is None or ts > until):
            continue
        yield record
