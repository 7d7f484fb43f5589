"""PII detectors for telemetry text: RE2 patterns plus validators, results in Presidio's shape.

Entities (Presidio's names where Presidio has one)::

    EMAIL_ADDRESS  PHONE_NUMBER  IP_ADDRESS  CREDIT_CARD  IBAN_CODE  US_SSN  JWT  API_KEY

Every pattern is RE2, so scanning is linear in the text whatever it holds (no
catastrophic backtracking); a candidate is then *validated* where the entity
allows it (Luhn for cards, ISO 13616 mod-97 for IBANs, `ipaddress` for IPs,
the SSA's never-issued ranges for SSNs, a JSON header for JWTs). Validated
detectors score 0.85-1.0, bare patterns 0.3-0.8: `VALIDATED` lists the entities
whose findings count as *undeclared PII* (M9). A text longer than the scanner's
``max_scan_chars`` is scanned up to the limit and the truncation counted.

    scanner = PiiScanner()
    scanner.analyze("mail bob@example.com")  # [RecognizerResult('EMAIL_ADDRESS', 5, 20, 0.85)]

No spaCy, no Presidio: users who want Presidio's NER recognizers can run it
beside this; the default install stays small.
"""

from __future__ import annotations

import base64
import ipaddress
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import re2

BUILTIN_ENTITIES = (
    "EMAIL_ADDRESS", "PHONE_NUMBER", "IP_ADDRESS", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "JWT", "API_KEY",
)  # fmt: skip
VALIDATED = frozenset({"EMAIL_ADDRESS", "IP_ADDRESS", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "JWT"})
# Short names users reach for first (`pii.contains(x, "EMAIL")`).
ALIASES = {"EMAIL": "EMAIL_ADDRESS", "PHONE": "PHONE_NUMBER", "IP": "IP_ADDRESS", "IPV4": "IP_ADDRESS",
           "IPV6": "IP_ADDRESS", "CARD": "CREDIT_CARD", "IBAN": "IBAN_CODE", "SSN": "US_SSN"}  # fmt: skip
DEFAULT_MAX_SCAN_CHARS = 65536


def entity_name(name: str) -> str:
    """``"email"`` → ``"EMAIL_ADDRESS"``: upper case, aliases resolved."""
    upper = name.strip().upper()
    return ALIASES.get(upper, upper)


@dataclass(frozen=True)
class RecognizerResult:
    """One finding, as Presidio reports it: ``text[start:end]`` is an ``entity_type`` with ``score``."""

    entity_type: str
    start: int
    end: int
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"entity_type": self.entity_type, "start": self.start, "end": self.end, "score": self.score}


_OPTIONS = re2.Options()
_OPTIONS.log_errors = False


def compile_re2(pattern: str) -> Any:
    """An RE2 regex; ValueError with RE2's reason when ``pattern`` is not valid RE2."""
    try:
        return re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise ValueError(f"not a valid RE2 pattern ({reason})") from None


# ---- validators ------------------------------------------------------------


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


_CARD_PREFIXES = ("4", "51", "52", "53", "54", "55", "22", "23", "24", "25", "26", "27", "34", "37", "6011", "65", "35", "30", "36", "38", "62")


def _card(text: str) -> float | None:
    digits = "".join(ch for ch in text if ch.isdigit())
    if not 13 <= len(digits) <= 19 or not digits.startswith(_CARD_PREFIXES) or len(set(digits)) == 1:
        return None
    return 1.0 if luhn_ok(digits) else None


# ISO 13616 lengths for the countries most seen in practice (others: 15-34 accepted).
_IBAN_LENGTHS = {
    "AD": 24, "AT": 20, "BE": 16, "BG": 22, "CH": 21, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "EE": 20,
    "ES": 24, "FI": 18, "FR": 27, "GB": 22, "GR": 27, "HR": 21, "HU": 28, "IE": 22, "IS": 26, "IT": 27,
    "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MT": 31, "NL": 18, "NO": 15, "PL": 28, "PT": 25,
    "RO": 24, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "TR": 26,
}  # fmt: skip


def iban_ok(text: str) -> bool:
    code = text.replace(" ", "").upper()
    want = _IBAN_LENGTHS.get(code[:2])
    if (want is not None and len(code) != want) or not 15 <= len(code) <= 34:
        return False
    moved = code[4:] + code[:4]
    number = "".join(str(int(ch, 36)) for ch in moved)
    return int(number) % 97 == 1


def _iban(text: str) -> float | None:
    return 1.0 if iban_ok(text) else None


def _ipv4(text: str) -> float | None:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return None
    return 0.95


def _ipv6(text: str) -> float | None:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return None
    return 0.95


def _ssn(text: str) -> float | None:
    area, group, serial = text.split("-")
    if area in ("000", "666") or area.startswith("9") or group == "00" or serial == "0000":
        return None
    if len(set(area + group + serial)) == 1:
        return None
    return 0.85


def _jwt(text: str) -> float | None:
    header = text.split(".", 1)[0]
    try:
        decoded = orjson.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    except (ValueError, orjson.JSONDecodeError):
        return None
    return 0.95 if isinstance(decoded, dict) and "alg" in decoded else None


def _email(text: str) -> float | None:
    local, _, domain = text.rpartition("@")
    labels = domain.split(".")
    if len(local) > 64 or any(not 0 < len(lab) <= 63 or lab.startswith("-") or lab.endswith("-") for lab in labels):
        return None
    return 0.85 if labels[-1].isalpha() else None


def _phone(text: str) -> float | None:
    digits = sum(ch.isdigit() for ch in text)
    return 0.4 if 8 <= digits <= 15 else None


@dataclass(frozen=True)
class _Detector:
    entity: str
    regex: Any
    check: Callable[[str], float | None] | None
    score: float = 0.5


def _d(entity: str, pattern: str, check: Callable[[str], float | None] | None = None, score: float = 0.5) -> _Detector:
    return _Detector(entity, compile_re2(pattern), check, score)


_BUILTIN = (
    _d("EMAIL_ADDRESS", r"\b[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}\.)+[A-Za-z]{2,24}\b", _email),
    # Group 1 is the finding: a digit run glued to a word by - or _ (HDFS's blk_-160899...) is an id, not a card.
    _d("CREDIT_CARD", r"(?:^|[^\w-])(\d(?:[ -]?\d){12,18})\b", _card),
    _d("IBAN_CODE", r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b", _iban),
    _d("US_SSN", r"\b\d{3}-\d{2}-\d{4}\b", _ssn),
    _d("JWT", r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{8,}", _jwt),
    _d("IP_ADDRESS", r"\b(?:\d{1,3}\.){3}\d{1,3}\b", _ipv4),
    _d("IP_ADDRESS", r"(?i)(?:\b[0-9a-f]{1,4}|:)(?::[0-9a-f]{0,4}){2,7}(?:\b|::)", _ipv6),
    # International numbers need their "+"; national ones the NANP shape (a bare run of digit groups is too often an id).
    _d("PHONE_NUMBER", r"\+\d{1,3}[ .-]?\(?\d{1,4}\)?(?:[ .-]?\d{2,4}){2,4}\b|\(\d{3}\) ?\d{3}[-.]\d{4}\b|\b\d{3}[-.]\d{3}[-.]\d{4}\b", _phone),
    _d("API_KEY", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b", None, 0.8),
    _d("API_KEY", r"\bgh[pousr]_[A-Za-z0-9]{36}\b", None, 0.8),
    _d("API_KEY", r"\bxox[baprs]-[A-Za-z0-9-]{10,}\b", None, 0.8),
    _d("API_KEY", r"\b[sr]k_(?:live|test)_[A-Za-z0-9]{16,}\b", None, 0.8),
    _d("API_KEY", r"\bAIza[0-9A-Za-z_-]{35}\b", None, 0.8),
    _d("API_KEY", r"(?i)\b(?:api[_-]?key|secret|token|passw(?:or)?d)\b[\"']?\s*[:=]\s*[\"']?[A-Za-z0-9_\-./+=]{12,}", None, 0.5),
)


class PiiScanner:
    """Runs the built-in detectors (and user-defined ones) over text.

    ``custom``: ``(entity, RE2 pattern, score)`` triples or `DetectorSpec`s.
    ``entities`` limits the scan to some entity types. Thread-safe; the
    truncation counter is shared.
    """

    def __init__(
        self,
        custom: Iterable[Any] = (),
        *,
        max_scan_chars: int = DEFAULT_MAX_SCAN_CHARS,
        entities: Iterable[str] | None = None,
    ) -> None:
        detectors = list(_BUILTIN)
        for item in custom:
            entity, pattern, score = (item.entity, item.pattern, item.score) if hasattr(item, "pattern") else item
            detectors.append(_d(entity_name(entity), pattern, None, float(score)))
        if entities is not None:
            wanted = {entity_name(e) for e in entities}
            detectors = [d for d in detectors if d.entity in wanted]
        self._detectors: Sequence[_Detector] = tuple(detectors)
        self.max_scan_chars = max_scan_chars
        self.truncated = 0
        self.scanned = 0
        self._lock = threading.Lock()

    @property
    def entity_types(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(d.entity for d in self._detectors))

    def analyze(self, text: str) -> list[RecognizerResult]:
        """Every finding in ``text`` (overlaps resolved: the higher score wins), in text order."""
        if len(text) > self.max_scan_chars:
            with self._lock:
                self.truncated += 1
            text = text[: self.max_scan_chars]
        with self._lock:
            self.scanned += 1
        found: list[RecognizerResult] = []
        for det in self._detectors:
            group = 1 if det.regex.groups else 0
            for m in det.regex.finditer(text):
                start, end = m.start(group), m.end(group)
                score = det.check(m.group(group)) if det.check is not None else det.score
                if score is not None:
                    found.append(RecognizerResult(det.entity, start, end, score))
        return _resolve(found)

    def entities(self, text: str) -> list[str]:
        """The entity types found in ``text``, each once, in order of first appearance."""
        return list(dict.fromkeys(r.entity_type for r in self.analyze(text)))

    def contains(self, text: str, entity: str) -> bool:
        want = entity_name(entity)
        return any(r.entity_type == want for r in self.analyze(text))


def _resolve(found: list[RecognizerResult]) -> list[RecognizerResult]:
    if len(found) < 2:
        return found
    # Highest score first, longer spans break ties; keep a finding only if it overlaps no kept one.
    kept: list[RecognizerResult] = []
    for r in sorted(found, key=lambda r: (-r.score, r.start - r.end, r.start)):
        if all(r.end <= k.start or r.start >= k.end for k in kept):
            kept.append(r)
    return sorted(kept, key=lambda r: r.start)


_default: PiiScanner | None = None


def default_scanner() -> PiiScanner:
    """The process-wide scanner of the built-in detectors (what the CEL functions use)."""
    global _default
    if _default is None:
        _default = PiiScanner()
    return _default


def walk_strings(value: Any, path: str = "") -> Iterable[tuple[str, str]]:
    """``(dotted path, text)`` for every string inside ``value`` (maps and lists recursed; list items as ``path.0``)."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from walk_strings(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from walk_strings(v, f"{path}.{i}" if path else str(i))
