"""Bearer tokens with scopes and clearances.

A token table maps each token to what it may do::

    tokens:
      s3cr3t-envoy:      {scopes: [label]}
      sha256:9f86d0...:  {scopes: [label, admin], clearances: [secret], name: ops}

Keys are either the token itself or ``sha256:<hex digest of the token>`` so the
file need not hold usable secrets. Scopes: ``label`` (label endpoints and every
front door), ``feedback``, ``admin`` (policy reload). Clearance ``pii`` lets a
caller see labels declared ``sensitivity: pii`` in clear, ``secret`` those and
``secret`` ones; without a clearance they get the label's ``protect:`` treatment.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from activelabel.errors import AuthConfigError as AuthConfigError
from activelabel.governance.sensitivity import LEVELS, is_sensitive

SCOPES = frozenset({"label", "feedback", "admin"})
# The grants a token can carry: every level a default reader may not see.
CLEARANCES = frozenset(level for level in LEVELS if is_sensitive(level))


@dataclass(frozen=True)
class Caller:
    """Who made a request and what they may see."""

    name: str
    scopes: frozenset[str] = frozenset()
    clearances: frozenset[str] = frozenset()

    def may(self, scope: str) -> bool:
        return scope in self.scopes


# Used with --no-auth: may call everything, but is not cleared for secret labels,
# so turning auth off never widens what leaves the process.
ANONYMOUS = Caller(name="anonymous", scopes=SCOPES, clearances=frozenset())


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class TokenTable:
    """Looks callers up by token; keyed by digest so lookups never compare raw secrets."""

    by_digest: dict[str, Caller] = field(default_factory=dict)

    def caller_for(self, token: str) -> Caller | None:
        return self.by_digest.get(_digest(token))

    def __len__(self) -> int:
        return len(self.by_digest)


def parse_token_table(raw: Any, *, origin: str) -> TokenTable:
    """Build a table from decoded YAML/JSON (``{tokens: {...}}`` or the mapping itself)."""
    if isinstance(raw, dict) and set(raw) == {"tokens"}:
        raw = raw["tokens"]
    if not isinstance(raw, dict) or not raw:
        raise AuthConfigError(f"{origin}: expected a non-empty mapping of token -> {{scopes, clearances}}")
    problems: list[str] = []
    table: dict[str, Caller] = {}
    for index, (key, grant) in enumerate(raw.items(), start=1):
        # Never echo the key: it may be a live token.
        where = f"{origin}: token #{index}"
        if not isinstance(key, str) or not key:
            problems.append(f"{where}: token must be a non-empty string")
            continue
        if grant is None:
            grant = {}
        if not isinstance(grant, dict):
            problems.append(f"{where}: expected a mapping with scopes / clearances")
            continue
        unknown_fields = set(grant) - {"scopes", "clearances", "name"}
        if unknown_fields:
            problems.append(f"{where}: unknown field(s) {sorted(unknown_fields)}")
        scopes = frozenset(grant.get("scopes") or ())
        clearances = frozenset(grant.get("clearances") or ())
        if scopes - SCOPES:
            problems.append(f"{where}: unknown scope(s) {sorted(scopes - SCOPES)}; known: {sorted(SCOPES)}")
        if clearances - CLEARANCES:
            problems.append(
                f"{where}: unknown clearance(s) {sorted(clearances - CLEARANCES)}; known: {sorted(CLEARANCES)}"
            )
        digest = key[len("sha256:"):].lower() if key.startswith("sha256:") else _digest(key)
        table[digest] = Caller(name=str(grant.get("name") or f"token#{index}"), scopes=scopes, clearances=clearances)
    if problems:
        raise AuthConfigError("; ".join(problems))
    return TokenTable(by_digest=table)


def load_token_table(path: Path | str | None, *, env_var: str = "ACTIVELABEL_TOKENS") -> TokenTable | None:
    """Read ``--tokens FILE``, else the environment variable; ``None`` when neither is set."""
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise AuthConfigError(f"cannot read token file {path}: {exc.strerror}") from exc
        origin = str(path)
    else:
        text = os.environ.get(env_var, "")
        if not text.strip():
            return None
        origin = f"${env_var}"
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        # The YAML error would quote the offending line, which may hold a token.
        raise AuthConfigError(f"{origin}: not valid YAML/JSON (line {_yaml_line(exc)})") from None
    return parse_token_table(raw, origin=origin)


def _yaml_line(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    return str(mark.line + 1) if mark is not None else "?"


def bearer_token(header_value: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else ``None``."""
    if not header_value:
        return None
    scheme, _, token = header_value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
