"""``activelabel pii audit``: the three M9 numbers, measured on replayed traffic.

1. Honeytokens (Luhn-valid test card numbers, unique e-mail addresses under
   the reserved ``.invalid`` domain, mod-97-valid IBANs) are generated for this
   run and injected into a free-text field of replayed events.
2. The events go through the doors - the real ``activelabel label`` command with
   file output (``label-file``), the function its record loop calls
   (`OutputGuard.record`, ``record-loop``), and ``POST /v1/label`` on a real
   server on a loopback port (``v1-label``) - and every output line is searched
   for the exact canary strings. A canary not found in clear was *caught*.
3. Declared leaks: a label above the output's clearance whose clear value
   appears as that label's value in the output. Undeclared PII: a validated
   detector firing on a label value or event field left in clear (canaries
   excluded).

Only counts are reported; no value is ever printed.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from activelabel.governance.m9 import PrivacyCounters
from activelabel.governance.output import OutputGuard
from activelabel.governance.pii import VALIDATED, PiiScanner, walk_strings
from activelabel.governance.protect import Protector, text_of
from activelabel.governance.sensitivity import Clearance, SensitivityRegistry

CANARY_KINDS = ("CREDIT_CARD", "EMAIL_ADDRESS", "IBAN_CODE")
_TEXT_FIELDS = ("message", "msg", "body", "log", "request", "text", "content")


def _luhn_digit(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


def make_card(rng: random.Random) -> str:
    """A Luhn-valid 16-digit number on the 4111 11 test prefix (never a real card)."""
    body = "411111" + "".join(rng.choice("0123456789") for _ in range(9))
    return body + _luhn_digit(body)


def make_iban(rng: random.Random) -> str:
    """A mod-97-valid GB IBAN with a made-up bank code ``ZZCN`` (no such bank)."""
    bban = "ZZCN" + "".join(rng.choice("0123456789") for _ in range(14))
    moved = bban + "GB00"
    check = 98 - int("".join(str(int(ch, 36)) for ch in moved)) % 97
    return f"GB{check:02d}{bban}"


def make_email(rng: random.Random, run: str) -> str:
    return f"canary.{rng.getrandbits(40):010x}@canary-{run}.invalid"


@dataclass
class Canary:
    kind: str
    value: str


def make_canaries(n: int, rng: random.Random) -> list[Canary]:
    run = f"{rng.getrandbits(24):06x}"
    makers = {"CREDIT_CARD": make_card, "IBAN_CODE": make_iban}
    out = []
    for i in range(n):
        kind = CANARY_KINDS[i % len(CANARY_KINDS)]
        value = make_email(rng, run) if kind == "EMAIL_ADDRESS" else makers[kind](rng)
        out.append(Canary(kind, value))
    return out


def inject(events: list[Any], canaries: Sequence[Canary], rng: random.Random, fields: Sequence[str] = ()) -> list[Any]:
    """Copies of ``events`` with each canary appended to a free-text field of one event (spread evenly)."""
    out = [orjson.loads(orjson.dumps(e)) for e in events]
    objects = [i for i, e in enumerate(out) if isinstance(e, dict)]
    if not objects:
        raise ValueError("no JSON object among the replayed events to inject canaries into")
    for n, canary in enumerate(canaries):
        event = out[objects[(n * 7919) % len(objects)]]
        names = [f for f in (*fields, *_TEXT_FIELDS) if isinstance(event.get(f), str)]
        name = names[0] if names else (fields[0] if fields else "message")
        event[name] = f"{event.get(name, '')} contact {canary.value} ok".strip()
    return out


@dataclass
class DoorResult:
    door: str
    records_out: int = 0
    caught: dict[str, int] = field(default_factory=dict)
    injected: dict[str, int] = field(default_factory=dict)
    counters: PrivacyCounters = field(default_factory=PrivacyCounters)

    def as_json(self) -> dict[str, Any]:
        m9 = self.counters.snapshot()
        injected = sum(self.injected.values())
        caught = sum(self.caught.values())
        return {
            "door": self.door,
            "records_out": self.records_out,
            "declared_leaks": m9["declared_leaks"],
            "undeclared_pii": m9["undeclared_pii"],
            "undeclared_pii_by_field": m9["undeclared_pii_by_field"],
            "canaries_injected": injected,
            "canaries_caught": caught,
            "canary_recall": caught / injected if injected else None,
            "by_kind": {k: {"injected": self.injected[k], "caught": self.caught.get(k, 0)} for k in sorted(self.injected)},
        }


def _score(door: str, lines: Iterable[bytes], canaries: Sequence[Canary], sensitive: dict[str, set[str]],
           labels_field: str, scanner: PiiScanner, registry: SensitivityRegistry, clearance: Clearance) -> DoorResult:  # fmt: skip
    result = DoorResult(door)
    hidden = registry.above(clearance)
    blob_parts = []
    canary_values = {c.value for c in canaries}
    for raw in lines:
        if not raw.strip():
            continue
        result.records_out += 1
        blob_parts.append(raw)
        try:
            record = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(record, dict):
            continue
        labels = record.get(labels_field)
        labels = labels if isinstance(labels, dict) else {}
        for name, value in labels.items():
            if name in hidden and text_of(value) in sensitive.get(name, ()):
                result.counters.add("declared", (door, name))
        scanned = 0
        for path, text in walk_strings(record):
            label_name = path[len(labels_field) + 1:] if path.startswith(labels_field + ".") else None
            if label_name is not None and label_name in hidden:
                continue
            scanned += 1
            for r in scanner.analyze(text):
                if text[r.start:r.end] in canary_values or any(c in text[r.start:r.end] for c in canary_values):
                    continue
                result.counters.add("undeclared", (door, path, r.entity_type))
        result.counters.add_scan(scanned, 0)
    blob = b"\n".join(blob_parts).decode("utf-8", "replace")
    for canary in canaries:
        result.injected[canary.kind] = result.injected.get(canary.kind, 0) + 1
        if canary.value not in blob:
            result.caught[canary.kind] = result.caught.get(canary.kind, 0) + 1
    return result


def _v1_label_lines(policy_path: Path, replay: Sequence[Any], key_file: Path | None, batch: int = 100) -> list[bytes]:
    """Each result ``POST /v1/label`` answers for the replayed events, from a real server on a free loopback port.

    The caller has no token clearance (``internal``), as an application's token would.
    """
    import httpx

    from activelabel.service import ServiceConfig, create_app
    from activelabel.service.testing import serve_in_thread

    app = create_app(policy_path, no_auth=True, config=ServiceConfig(pseudonym_key_file=key_file))
    objects = [e for e in replay if isinstance(e, dict)]
    lines: list[bytes] = []
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=120) as client:
        for start in range(0, len(objects), batch):
            answer = client.post("/v1/label", json={"events": objects[start:start + batch]})
            if answer.status_code != 200:
                raise RuntimeError(f"POST /v1/label answered {answer.status_code} during the audit")
            lines.extend(orjson.dumps(result) for result in answer.json()["results"])
    return lines


def run_audit(
    policy_path: Path,
    events: list[Any],
    *,
    canaries: int = 30,
    seed: int | None = None,
    fields: Sequence[str] = (),
    clearance: str | None = None,
    key_file: Path | None = None,
    doors: Sequence[str] = ("label-file", "record-loop", "v1-label"),
) -> dict[str, Any]:
    """Inject canaries into ``events``, run them through ``doors``, return the M9 numbers per door."""
    from activelabel.engine import Labeler
    from activelabel.policy import load_policy

    rng = random.Random(seed)
    tokens = make_canaries(canaries, rng)
    replay = inject(events, tokens, rng, fields)
    policy = load_policy(policy_path)
    labeler = Labeler(policy)
    protector = Protector.configured(key_file, warn=lambda _m: None)
    registry = SensitivityRegistry.of(policy)
    level = Clearance.parse(clearance) if clearance else Clearance.parse(policy.outputs.clearance)
    hidden = registry.above(level)
    # Clear values of labels the output may not show: what a declared leak would look like.
    sensitive: dict[str, set[str]] = {}
    decisions = []
    for event in replay:
        decision = labeler.label(event) if isinstance(event, dict) else None
        decisions.append(decision)
        for name, value in (decision.labels.items() if decision is not None else ()):
            if name in hidden:
                sensitive.setdefault(name, set()).add(text_of(value))
    scanner = PiiScanner(policy.pii.detectors, max_scan_chars=policy.pii.max_scan_chars, entities=VALIDATED)
    results = []
    with tempfile.TemporaryDirectory(prefix="activelabel-pii-audit-") as tmp:
        src = Path(tmp) / "replay.jsonl"
        src.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in replay))
        if "label-file" in doors:
            out = Path(tmp) / "out.jsonl"
            cmd = [sys.executable, "-m", "activelabel", "label", str(src), "--policy", str(policy_path), "-o", str(out), "--quiet",
                   "--clearance", str(level)]
            env = dict(os.environ)
            if key_file is not None:
                cmd += ["--pseudonym-key-file", str(key_file)]
            done = subprocess.run(cmd, capture_output=True, env=env, timeout=600, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"`activelabel label` failed with exit code {done.returncode} (run it on the input to see why)")
            lines = out.read_bytes().splitlines()
            dlq = Path(str(out) + ".dlq.jsonl")
            if dlq.exists():
                lines += dlq.read_bytes().splitlines()
            results.append(_score("label-file", lines, tokens, sensitive, "labels", scanner, registry, level))
        if "record-loop" in doors:
            guard = OutputGuard.of(policy, door="record-loop", protector=protector, clearance=level)
            lines = []
            for event, decision in zip(replay, decisions, strict=True):
                if decision is None:
                    continue
                rec = guard.record(event, decision.labels)
                body = event if rec.event is None else rec.event
                lines.append(orjson.dumps({**body, **rec.fields} if isinstance(body, dict) else {"body": body, **rec.fields}))
            results.append(_score("record-loop", lines, tokens, sensitive, "labels", scanner, registry, level))
        if "v1-label" in doors:
            results.append(_score("v1-label", _v1_label_lines(policy_path, replay, key_file), tokens, sensitive, "labels",
                                  scanner, registry, Clearance()))
    # Would the detectors have seen them? Separates a detector gap from a policy (redact:) gap.
    finder = PiiScanner(policy.pii.detectors, max_scan_chars=policy.pii.max_scan_chars)
    found = 0
    for canary in tokens:
        text = f"contact {canary.value} ok"
        found += any(r.entity_type == canary.kind and text[r.start:r.end] == canary.value for r in finder.analyze(text))
    return {
        "detector_recall": found / len(tokens),
        "policy_version": policy.version,
        "clearance": str(level),
        "events": len(replay),
        "redaction": policy.redact is not None,
        "pseudonym_key": protector.key_id is not None,
        "doors": [r.as_json() for r in results],
    }
