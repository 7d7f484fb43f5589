"""`activelabel pii audit` on the shipped edge example's real requests, as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson

from activelabel.governance.pii import iban_ok, luhn_ok
from activelabel.governance.pii_audit import make_canaries, make_card, make_iban

REPO = Path(__file__).resolve().parents[1]
EDGE = REPO / "examples" / "edge"


def _audit(policy: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "activelabel", "pii", "audit", str(EDGE / "requests.jsonl"), "--policy", str(policy), "--seed", "7", *extra]
    env = {k: v for k, v in os.environ.items() if k != "ACTIVELABEL_PSEUDONYM_KEY"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, check=False)


def test_canaries_are_valid_for_their_validators():
    """Generated cards pass Luhn on the 4111 test prefix and IBANs pass mod-97, so a detector miss is a real miss."""
    import random

    rng = random.Random(3)
    assert all(luhn_ok(make_card(rng)) for _ in range(50))
    assert all(iban_ok(make_iban(rng)) for _ in range(50))
    values = [c.value for c in make_canaries(30, rng)]
    assert len(set(values)) == 30


def test_audit_reports_the_three_numbers_and_never_the_values(tmp_path: Path):
    """With redact: covering the canary kinds the record loop catches every canary with zero declared leaks; no value is printed."""
    policy = tmp_path / "policy.yaml"
    text = (EDGE / "policy.yaml").read_text(encoding="utf-8").replace(
        "entities: [IP_ADDRESS]", "entities: [IP_ADDRESS, EMAIL_ADDRESS, CREDIT_CARD, IBAN_CODE]"
    )
    policy.write_text(text, encoding="utf-8")
    (tmp_path / "known_clients.csv").write_bytes((EDGE / "known_clients.csv").read_bytes())
    done = _audit(policy, "--json", "--canaries", "24")
    assert done.returncode == 0, done.stderr
    result = orjson.loads(done.stdout)
    loop = next(d for d in result["doors"] if d["door"] == "record-loop")
    assert loop["declared_leaks"] == 0
    # The real doors: `activelabel label` file output and POST /v1/label on a real server.
    doors = {d["door"]: d for d in result["doors"]}
    assert set(doors) == {"label-file", "record-loop", "v1-label"}
    assert all(d["declared_leaks"] == 0 for d in doors.values())
    assert (doors["label-file"]["canaries_caught"], doors["v1-label"]["canaries_caught"]) == (24, 24)
    assert (loop["canaries_caught"], loop["canaries_injected"]) == (24, 24)
    assert result["detector_recall"] == 1.0
    assert set(loop["by_kind"]) == {"CREDIT_CARD", "EMAIL_ADDRESS", "IBAN_CODE"}
    first_ip = orjson.loads((EDGE / "requests.jsonl").read_bytes().splitlines()[0])["client_ip"]
    assert "@canary-" not in done.stdout and "411111" not in done.stdout and first_ip not in done.stdout


def test_audit_table_names_the_doors_and_the_gap(tmp_path: Path):
    """The plain table lists each door with records, leaks, undeclared PII and recall, on one line each."""
    done = _audit(EDGE / "policy.yaml", "--canaries", "6")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[1].split()[:2] == ["door", "records"]
    assert any(line.startswith("record-loop") and line.split()[2] == "0" for line in lines)
    assert "detectors find 1.00 of the canaries" in done.stdout


def test_audit_without_events_says_what_to_do(tmp_path: Path):
    """An input with no JSON events is refused with a message, not a traceback."""
    empty = tmp_path / "empty.jsonl"
    empty.write_text("not json\n", encoding="utf-8")
    cmd = [sys.executable, "-m", "activelabel", "pii", "audit", str(empty), "--policy", str(EDGE / "policy.yaml")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1 and "no JSON events" in done.stderr
