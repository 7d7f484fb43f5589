"""A decision store filled from tests/fixtures/loop, shared by the feedback and review CLI tests."""

from __future__ import annotations

from pathlib import Path

import orjson

from activelabel.quality.store import DecisionStore

FIXTURES = Path(__file__).parent / "fixtures" / "loop"


def recorded_store(tmp_path: Path) -> Path:
    """A real SQLite store at tmp_path holding the fixture decisions (no ground truth yet)."""
    path = tmp_path / "decisions.db"
    with DecisionStore(path) as store:
        rows = [orjson.loads(line) for line in (FIXTURES / "decisions.jsonl").read_bytes().splitlines()]
        store.record_many((r["id"], r["event"], r["decision"]) for r in rows)
    return path
