"""Treatments of a value above its reader's clearance: pseudonymize, mask, drop, keep.

``pseudonymize`` is a keyed HMAC-SHA-256 of the value's text, written
``hm1:<key id>:<base64url, no padding>``: deterministic (joins and cardinality
still work), not reversible without the key (an unkeyed hash of an IPv4
address is: 2^32 values), and tagged with the key id so keys can rotate.

Keys come from ``ACTIVELABEL_PSEUDONYM_KEY`` or a key file
(``--pseudonym-key-file``, the service config). Both hold one key per line,
``<key id>=<secret>`` (or a bare secret, whose id is derived from it); the
first key pseudonymizes, the others are kept for readers of older output. A
secret is at least 32 bytes, as the OTel Collector's HMAC redaction requires.
A key that is named but missing, unreadable or short stops the command at
start (`PseudonymKeyError`). With no key configured at all, ``pseudonymize``
falls back to ``mask`` - never to clear text or an unkeyed hash - and says so
once on stderr.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import os
import re
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from activelabel.errors import PseudonymKeyError
from activelabel.governance.sensitivity import DROPPED, Treatment

KEY_ENV = "ACTIVELABEL_PSEUDONYM_KEY"
PREFIX = "hm1"
MIN_KEY_BYTES = 32
_KEY_ID = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")


@dataclass(frozen=True)
class PseudonymKey:
    """One HMAC key and the id written into every pseudonym made with it."""

    key_id: str
    secret: bytes

    def __repr__(self) -> str:  # never print the secret
        return f"PseudonymKey({self.key_id!r})"


def text_of(value: Any) -> str:
    """The text a value is pseudonymized or masked from: ``true``/``false`` for booleans."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parse_keys(text: str, origin: str) -> list[PseudonymKey]:
    """Keys from ``<id>=<secret>`` lines (``#`` comments and blank lines skipped); errors name ``origin``:line."""
    keys: list[PseudonymKey] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key_id, sep, secret = line.partition("=")
        if not sep or not _KEY_ID.match(key_id.strip()):
            key_id, secret = "", line
        secret_bytes = secret.strip().encode("utf-8")
        if len(secret_bytes) < MIN_KEY_BYTES:
            raise PseudonymKeyError(
                f"{origin}:{number}: pseudonym key is {len(secret_bytes)} bytes; use at least {MIN_KEY_BYTES} "
                "(e.g. `python -c \"import secrets; print('k1=' + secrets.token_urlsafe(32))\"`)"
            )
        kid = key_id.strip() or "k" + hashlib.sha256(b"activelabel-key-id\0" + secret_bytes).hexdigest()[:8]
        if any(k.key_id == kid for k in keys):
            raise PseudonymKeyError(f"{origin}:{number}: key id {kid!r} appears twice; give each key its own id")
        keys.append(PseudonymKey(kid, secret_bytes))
    if not keys:
        raise PseudonymKeyError(f"{origin}: no pseudonym key in it; write one line `<key id>=<secret of {MIN_KEY_BYTES}+ bytes>`")
    return keys


def load_keys(key_file: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> list[PseudonymKey]:
    """The configured keys: the key file when named, else ``$ACTIVELABEL_PSEUDONYM_KEY``, else none."""
    if key_file is not None:
        path = Path(key_file)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise PseudonymKeyError(
                f"cannot read pseudonym key file {path}: {exc.strerror or exc}; fix the path or its permissions "
                "(nothing is written in clear instead)"
            ) from None
        except UnicodeDecodeError:
            raise PseudonymKeyError(f"pseudonym key file {path} is not UTF-8 text") from None
        return parse_keys(text, str(path))
    environ = os.environ if env is None else env
    value = environ.get(KEY_ENV)
    if value is None or not value.strip():
        return []
    return parse_keys(value.replace(",", "\n"), f"${KEY_ENV}")


def _warn_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Protector:
    """Applies treatments; holds the pseudonym keys (the first one is active)."""

    def __init__(self, keys: Sequence[PseudonymKey] = (), *, warn: Callable[[str], None] = _warn_stderr) -> None:
        self.keys = tuple(keys)
        self._active = self.keys[0] if self.keys else None
        self._warn = warn
        self._warned = False
        self._lock = threading.Lock()

    @classmethod
    def configured(
        cls, key_file: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None, **kw: Any
    ) -> Protector:
        """The protector of a command or service: keys from ``key_file`` or the environment (see module doc)."""
        return cls(load_keys(key_file, env), **kw)

    @property
    def key_id(self) -> str | None:
        """The id of the key pseudonyms are made with; ``None`` when pseudonymize falls back to mask."""
        return self._active.key_id if self._active is not None else None

    def apply(self, treatment: Treatment, value: Any) -> Any:
        """The treated value, or `DROPPED`. ``keep`` here means the reader is not cleared: drop (fail closed)."""
        kind = treatment.kind
        if kind == "pseudonymize":
            return self.pseudonymize(value, treatment)
        if kind == "mask":
            return mask(value, treatment)
        return DROPPED

    def pseudonymize(self, value: Any, treatment: Treatment | None = None) -> str:
        """``hm1:<key id>:<base64url(HMAC-SHA-256(key, text))>``; masked when no key is configured."""
        key = self._active
        if key is None:
            self._fallback_notice()
            return mask(value, treatment or Treatment("mask"))
        return pseudonym(key, text_of(value))

    def _fallback_notice(self) -> None:
        with self._lock:
            if self._warned:
                return
            self._warned = True
        self._warn(
            f"activelabel: no pseudonym key configured (${KEY_ENV} or --pseudonym-key-file): "
            "values to pseudonymize are masked instead"
        )


@functools.lru_cache(maxsize=8192)
def pseudonym(key: PseudonymKey, text: str) -> str:
    """``hm1:<key id>:<base64url(HMAC-SHA-256(key, text))>``; remembered, since labels repeat (clients, users)."""
    digest = hmac.digest(key.secret, text.encode("utf-8"), "sha256")
    return f"{PREFIX}:{key.key_id}:{base64.urlsafe_b64encode(digest).rstrip(b'=').decode('ascii')}"


def mask(value: Any, treatment: Treatment) -> str:
    """The marker, keeping ``keep_prefix``/``keep_suffix`` characters only when fewer than half the text remains shown."""
    text = text_of(value)
    head, tail = treatment.keep_prefix, treatment.keep_suffix
    # Keeping most of a short value would be no mask at all: keep nothing then.
    if head + tail and (head + tail) * 2 <= len(text):
        return text[:head] + treatment.marker + (text[len(text) - tail:] if tail else "")
    return treatment.marker


def is_pseudonym(text: str) -> bool:
    """Whether ``text`` looks like a pseudonym this module wrote."""
    return text.startswith(PREFIX + ":") and text.count(":") >= 2
