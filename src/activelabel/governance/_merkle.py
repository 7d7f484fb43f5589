"""Tamper evidence for the audit log: RFC 8785 canonical JSON, an RFC 9162 Merkle tree
and C2SP signed-note checkpoints (Ed25519).

Kept free of any I/O so each piece can be tested against its specification alone.

- ``canonical_json(obj)``: the JSON Canonicalization Scheme (RFC 8785): keys sorted by
  UTF-16 code units, no whitespace, numbers in ECMAScript form (``1.0`` is ``1``).
- ``MerkleFrontier``: the tree of RFC 9162 §2.1 (leaf ``H(0x00‖d)``, node
  ``H(0x01‖l‖r)``) kept as its perfect subtrees, so appending is O(1) amortised and
  the root of any prefix size is known when that size is reached.
- ``sign_note`` / ``open_note``: the C2SP signed-note format used by Go's sumdb,
  Tessera and Rekor: ``<origin>\\n<size>\\n<base64 root>\\n[extensions]\\n\\n— <key> <sig>``.
"""

from __future__ import annotations

import base64
import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson

from activelabel.errors import AuditError

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    """RFC 9162 leaf hash: SHA-256 of 0x00 followed by the leaf bytes."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 interior node hash: SHA-256 of 0x01, the left and the right child."""
    return hashlib.sha256(b"\x01" + left + right).digest()


class MerkleFrontier:
    """The perfect subtrees of a Merkle tree, left to right, largest first.

    A tree of size n keeps one subtree per set bit of n; appending a leaf merges equal
    sizes like a binary counter. The root folds the subtrees right to left, which is
    exactly RFC 9162's MTH (the left subtree is always the largest power of two).
    """

    __slots__ = ("size", "subtrees")

    def __init__(self, subtrees: Iterable[tuple[int, bytes]] = ()) -> None:
        self.subtrees: list[tuple[int, bytes]] = list(subtrees)
        self.size = sum(s for s, _ in self.subtrees)

    def append(self, leaf: bytes) -> None:
        subtrees = self.subtrees
        subtrees.append((1, leaf))
        while len(subtrees) >= 2 and subtrees[-1][0] == subtrees[-2][0]:
            (size, right), (_, left) = subtrees.pop(), subtrees.pop()
            subtrees.append((size * 2, node_hash(left, right)))
        self.size += 1

    def extend(self, leaves: Sequence[bytes]) -> None:
        """Append many leaves at once: the same tree as ``append`` on each, with far fewer Python steps.

        Leaves go in as whole perfect subtrees (the largest power of two that the current
        size is a multiple of and that is left), each hashed level by level, so the cost is
        one SHA-256 per interior node and a few list operations per level.
        """
        sha = hashlib.sha256
        subtrees = self.subtrees
        i, n = 0, len(leaves)
        while i < n:
            size = self.size
            span = 1 << ((n - i).bit_length() - 1)
            if size:
                span = min(span, size & -size)  # keep the frontier's subtrees aligned
            level = list(leaves[i:i + span])
            while len(level) > 1:
                level = [sha(b"\x01" + level[k] + level[k + 1]).digest() for k in range(0, len(level), 2)]
            subtrees.append((span, level[0]))
            while len(subtrees) >= 2 and subtrees[-1][0] == subtrees[-2][0]:
                (merged, right), (_, left) = subtrees.pop(), subtrees.pop()
                subtrees.append((merged * 2, node_hash(left, right)))
            self.size += span
            i += span

    def root(self) -> bytes:
        if not self.subtrees:
            return EMPTY_ROOT
        h = self.subtrees[-1][1]
        for _, left in reversed(self.subtrees[:-1]):
            h = node_hash(left, h)
        return h

    def to_json(self) -> list[list[Any]]:
        return [[size, b64(h)] for size, h in self.subtrees]

    @classmethod
    def from_json(cls, data: list[list[Any]]) -> MerkleFrontier:
        return cls((int(size), unb64(h)) for size, h in data)


def merkle_root(leaves: Iterable[bytes]) -> bytes:
    """The RFC 9162 root of already-hashed leaves (a reference for tests and verification)."""
    frontier = MerkleFrontier()
    for leaf in leaves:
        frontier.append(leaf)
    return frontier.root()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


# --- RFC 8785 canonical JSON -------------------------------------------------------------


def _es_number(value: float) -> str:
    """ECMAScript Number::toString, which RFC 8785 prescribes for every number."""
    if math.isnan(value) or math.isinf(value):
        raise AuditError("RFC 8785 has no form for NaN or Infinity")
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    # repr gives the shortest digits that round-trip, as ECMAScript requires.
    _, digit_tuple, exp = Decimal(repr(abs(value))).as_tuple()
    digits = "".join(map(str, digit_tuple)).lstrip("0")
    assert isinstance(exp, int)
    stripped = digits.rstrip("0")
    exp += len(digits) - len(stripped)
    digits = stripped
    k = len(digits)
    n = exp + k  # value = 0.d1d2…dk × 10^n
    if k <= n <= 21:
        return sign + digits + "0" * (n - k)
    if 0 < n <= 21:
        return sign + digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return sign + "0." + "0" * (-n) + digits
    exponent = n - 1
    head = digits[0] + ("." + digits[1:] if k > 1 else "")
    return f"{sign}{head}e{'+' if exponent > 0 else '-'}{abs(exponent)}"


def _utf16_key(key: str) -> list[int]:
    return list(key.encode("utf-16-be"))


def _write(value: Any, out: list[str]) -> None:
    if value is None or value is True or value is False or isinstance(value, str):
        out.append(orjson.dumps(value).decode())
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, float):
        out.append(_es_number(value))
    elif isinstance(value, dict):
        out.append("{")
        for i, key in enumerate(sorted(value, key=_utf16_key)):
            if not isinstance(key, str):
                raise AuditError(f"JSON object keys must be strings, not {type(key).__name__}")
            if i:
                out.append(",")
            out.append(orjson.dumps(key).decode())
            out.append(":")
            _write(value[key], out)
        out.append("}")
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _write(item, out)
        out.append("]")
    else:
        raise AuditError(f"cannot canonicalise a {type(value).__name__} as JSON")


def _plain(value: Any) -> bool:
    """True when orjson's sorted output is already RFC 8785: no floats, string keys in the BMP."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and (k.isascii() or max(k) < "\ud800") and _plain(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    return not isinstance(value, float)


def canonical_json(value: Any) -> bytes:
    """RFC 8785 bytes of a JSON value; the fast path is orjson with sorted keys."""
    if _plain(value):
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    out: list[str] = []
    _write(value, out)
    return "".join(out).encode()


# --- C2SP signed notes ------------------------------------------------------------------


def key_hash(name: str, public_key: bytes) -> bytes:
    """C2SP key hash of an Ed25519 key: the first 4 bytes of SHA-256(name ‖ \\n ‖ 0x01 ‖ key)."""
    return hashlib.sha256(name.encode() + b"\n\x01" + public_key).digest()[:4]


@dataclass(frozen=True)
class Checkpoint:
    """A signed statement: the log named ``origin`` had ``size`` records with this root."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def body(self) -> bytes:
        lines = [self.origin, str(self.size), b64(self.root), *self.extensions]
        return ("\n".join(lines) + "\n").encode()

    def extension(self, name: str) -> str | None:
        for line in self.extensions:
            key, _, value = line.partition(" ")
            if key == name:
                return value
        return None


def sign_note(checkpoint: Checkpoint, key_name: str, private_key: Any) -> bytes:
    """The checkpoint as a C2SP signed note, signed with an Ed25519 private key."""
    public = private_key.public_key().public_bytes_raw()
    body = checkpoint.body()
    signature = private_key.sign(body)
    line = f"\u2014 {key_name} {b64(key_hash(key_name, public) + signature)}\n"
    return body + b"\n" + line.encode()


def open_note(note: bytes, key_name: str, public_key: Any) -> Checkpoint:
    """Parse a signed note and check its signature; AuditError when it does not verify."""
    body, sep, signatures = note.partition(b"\n\n")
    if not sep:
        raise AuditError("not a signed note: no blank line before the signatures")
    body += b"\n"
    public = public_key.public_bytes_raw()
    wanted = key_hash(key_name, public)
    for raw in signatures.decode("utf-8", "replace").splitlines():
        parts = raw.split(" ")
        if len(parts) != 3 or parts[0] != "\u2014" or parts[1] != key_name:
            continue
        try:
            blob = unb64(parts[2])
        except ValueError:
            continue
        if blob[:4] != wanted:
            continue
        from cryptography.exceptions import InvalidSignature

        try:
            public_key.verify(blob[4:], body)
        except InvalidSignature as exc:
            raise AuditError("checkpoint signature does not verify") from exc
        break
    else:
        raise AuditError(f"checkpoint carries no signature by key {key_name!r}")
    lines = body.decode().rstrip("\n").split("\n")
    if len(lines) < 3:
        raise AuditError("checkpoint body needs origin, size and root")
    try:
        return Checkpoint(lines[0], int(lines[1]), unb64(lines[2]), tuple(lines[3:]))
    except ValueError as exc:
        raise AuditError(f"checkpoint body is malformed: {exc}") from exc
