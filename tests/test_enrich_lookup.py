"""Lookup enrichers read whole CSV / JSON / SQLite tables and answer lookups from memory."""

from __future__ import annotations

import json
import sqlite3
import textwrap
from pathlib import Path

import pytest

from activelabel import cel
from activelabel.enrich import EMPTY, LookupEnricher
from activelabel.errors import PolicyError
from activelabel.policy import load_policy

HEADER = "apiVersion: activelabel/v1\nkind: Policy\n"


def enricher_policy(tmp_path: Path, enricher: str) -> Path:
    """A policy with one enricher (given as YAML flow mapping fields) in tmp_path/policy/."""
    path = tmp_path / "policy" / "p.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + f"enrichers:\n  - {{name: tenant, type: lookup, key: event.tenant_id, {enricher}}}\n")
    return path


def build(tmp_path: Path, enricher: str) -> LookupEnricher:
    return load_policy(enricher_policy(tmp_path, enricher)).enrichers[0].build()


def only_issue(path: Path) -> str:
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    (issue,) = info.value.issues
    assert issue.file == str(path)
    return issue.message + " | " + (issue.suggestion or "")


def test_csv_rows_are_keyed_by_the_first_column_with_string_values(tmp_path: Path) -> None:
    """A CSV table is keyed by its first column, and every value is a string."""
    (tmp_path / "policy").mkdir()
    (tmp_path / "policy" / "tenants.csv").write_text("tenant_id,tier,seats\nt1,gold,40\nt2,silver,3\n")
    tenants = build(tmp_path, "file: tenants.csv")
    assert tenants.lookup("t1") == {"tenant_id": "t1", "tier": "gold", "seats": "40"}
    assert len(tenants) == 2


def test_csv_key_field_picks_the_key_column(tmp_path: Path) -> None:
    """`key_field` chooses which CSV column is the key."""
    (tmp_path / "policy").mkdir()
    (tmp_path / "policy" / "tenants.csv").write_text("tier,tenant_id\ngold,t1\n")
    assert build(tmp_path, "file: tenants.csv, key_field: tenant_id").lookup("t1")["tier"] == "gold"


def test_a_miss_returns_the_shared_empty_map(tmp_path: Path) -> None:
    """A key that is not in the table (or cannot be a key) gives the one shared empty map."""
    (tmp_path / "policy").mkdir()
    (tmp_path / "policy" / "t.csv").write_text("id,tier\nt1,gold\n")
    tenants = build(tmp_path, "file: t.csv")
    assert tenants.lookup("nobody") is EMPTY
    assert tenants.lookup(None) is EMPTY
    assert tenants.lookup(["t1"]) is EMPTY
    assert tenants.lookup("other") is tenants.lookup("nobody")


def test_a_miss_makes_has_false_in_cel(tmp_path: Path) -> None:
    """With a missed lookup bound to the enricher's name, `has(tenant.tier)` is false."""
    (tmp_path / "policy").mkdir()
    (tmp_path / "policy" / "t.csv").write_text("id,tier\nt1,gold\n")
    tenants = build(tmp_path, "file: t.csv")
    program = cel.compile("has(tenant.tier)")
    assert program.evaluate({"tenant": tenants.lookup("t1")}) is True
    assert program.evaluate({"tenant": tenants.lookup("t9")}) is False


def test_numeric_keys_find_text_keys(tmp_path: Path) -> None:
    """An integer event field finds the row whose key text is that number."""
    (tmp_path / "policy").mkdir()
    (tmp_path / "policy" / "t.csv").write_text("id,tier\n42,gold\n")
    tenants = build(tmp_path, "file: t.csv")
    assert tenants.lookup(42)["tier"] == "gold"
    assert tenants.lookup(42.0)["tier"] == "gold"


def test_json_object_keyed_by_key(tmp_path: Path) -> None:
    """A JSON object maps each key to its row, values keeping their JSON types."""
    (tmp_path / "policy").mkdir()
    (tmp_path / "policy" / "t.json").write_text(json.dumps({"t1": {"tier": "gold", "seats": 40, "eu": True}}))
    assert build(tmp_path, "file: t.json").lookup("t1") == {"tier": "gold", "seats": 40, "eu": True}


def test_json_list_with_key_field(tmp_path: Path) -> None:
    """A JSON list of objects is keyed by `key_field`, or by each object's first field by default."""
    (tmp_path / "policy").mkdir()
    rows = [{"id": 1, "name": "t1", "tier": "gold"}, {"id": 2, "name": "t2", "tier": "silver"}]
    (tmp_path / "policy" / "t.json").write_text(json.dumps(rows))
    assert build(tmp_path, "file: t.json, key_field: name").lookup("t2")["tier"] == "silver"
    assert build(tmp_path, "file: t.json").lookup(1)["name"] == "t1"


def test_sqlite_table_by_key_column(tmp_path: Path) -> None:
    """A SQLite table is read whole, keyed by `key_column`, with SQLite's value types."""
    (tmp_path / "policy").mkdir()
    db = tmp_path / "policy" / "tenants.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE tenants (tenant_id TEXT PRIMARY KEY, tier TEXT, seats INTEGER)")
        conn.executemany("INSERT INTO tenants VALUES (?, ?, ?)", [("t1", "gold", 40), ("t2", "silver", 3)])
    conn.close()
    tenants = build(tmp_path, "file: tenants.db, table: tenants, key_column: tenant_id")
    assert tenants.lookup("t2") == {"tenant_id": "t2", "tier": "silver", "seats": 3}


def test_sqlite_missing_table_is_a_policy_error(tmp_path: Path) -> None:
    """A SQLite table that does not exist is reported with the closest table name."""
    (tmp_path / "policy").mkdir()
    with sqlite3.connect(tmp_path / "policy" / "t.db") as conn:
        conn.execute("CREATE TABLE tenants (id TEXT)")
    conn.close()
    text = only_issue(enricher_policy(tmp_path, "file: t.db, table: tenant, key_column: id"))
    assert text == "enricher `tenant`: no table `tenant` in the database | did you mean `tenants`?"


def test_csv_without_the_key_field_is_a_policy_error(tmp_path: Path) -> None:
    """A `key_field` the CSV does not have is reported with the closest column."""
    (tmp_path / "policy").mkdir()
    (tmp_path / "policy" / "t.csv").write_text("tenant_id,tier\nt1,gold\n")
    text = only_issue(enricher_policy(tmp_path, "file: t.csv, key_field: tenantid"))
    assert text == "enricher `tenant`: CSV has no column `tenantid` | did you mean `tenant_id`?"


def test_duplicate_keys_are_a_policy_error(tmp_path: Path) -> None:
    """Two rows with the same key are refused rather than one silently winning."""
    (tmp_path / "policy").mkdir()
    (tmp_path / "policy" / "t.csv").write_text("id,tier\nt1,gold\nt1,silver\n")
    text = only_issue(enricher_policy(tmp_path, "file: t.csv"))
    assert "CSV line 3 repeats the `id` of an earlier row" in text
    assert "t1" not in text  # table values (often personal data) stay out of messages


def test_invalid_json_is_a_policy_error(tmp_path: Path) -> None:
    """A JSON file that does not parse is reported naming the enricher."""
    (tmp_path / "policy").mkdir()
    (tmp_path / "policy" / "t.json").write_text("{not json")
    assert only_issue(enricher_policy(tmp_path, "file: t.json")).startswith("enricher `tenant`: invalid JSON")


def test_file_path_is_relative_to_the_policy_not_the_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The enricher file is found next to the policy even when the working directory is elsewhere."""
    (tmp_path / "policy").mkdir()
    (tmp_path / "policy" / "t.csv").write_text("id,tier\nt1,gold\n")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert build(tmp_path, "file: t.csv").lookup("t1")["tier"] == "gold"


def test_build_reuses_the_table_read_at_load_unless_reloaded(tmp_path: Path) -> None:
    """`build()` serves the table the policy version was computed from; `build(reload=True)` re-reads it."""
    (tmp_path / "policy").mkdir()
    csv_path = tmp_path / "policy" / "t.csv"
    csv_path.write_text("id,tier\nt1,gold\n")
    spec = load_policy(enricher_policy(tmp_path, "file: t.csv")).enrichers[0]
    csv_path.write_text("id,tier\nt1,silver\n")
    assert spec.build().lookup("t1")["tier"] == "gold"
    assert spec.build(reload=True).lookup("t1")["tier"] == "silver"


def test_unknown_extension_needs_a_format(tmp_path: Path) -> None:
    """A file whose extension does not tell the format asks for `format:`; with it, the file loads."""
    (tmp_path / "policy").mkdir()
    (tmp_path / "policy" / "t.txt").write_text("id,tier\nt1,gold\n")
    assert "add `format: csv`" in only_issue(enricher_policy(tmp_path, "file: t.txt"))
    assert build(tmp_path, "file: t.txt, format: csv").lookup("t1")["tier"] == "gold"


def test_lookup_enricher_can_be_built_directly() -> None:
    """`LookupEnricher` works on any mapping of rows, for tests and embedding."""
    enricher = LookupEnricher("geo", {"10": {"country": "FR"}})
    assert enricher.lookup(10) == {"country": "FR"} and "10" in enricher
    assert textwrap.shorten(repr(enricher), 40) == "LookupEnricher('geo', 1 rows)"


def test_json_lines_table(tmp_path: Path) -> None:
    """A JSON Lines file is keyed like a JSON list; a bad line is reported by number."""
    (tmp_path / "policy").mkdir()
    jsonl = tmp_path / "policy" / "t.jsonl"
    jsonl.write_text('{"id": "t1", "tier": "gold"}\n\n{"id": "t2", "tier": "silver"}\n')
    assert build(tmp_path, "file: t.jsonl").lookup("t2")["tier"] == "silver"
    jsonl.write_text('{"id": "t1"}\n{oops\n')
    assert only_issue(enricher_policy(tmp_path, "file: t.jsonl")).startswith("enricher `tenant`: invalid JSON on line 2")


def test_csv_spaces_after_commas_are_layout(tmp_path: Path) -> None:
    """`id, tier` names the column `tier`, and `t1, gold` holds `gold`; quoted spaces are kept."""
    (tmp_path / "policy").mkdir()
    (tmp_path / "policy" / "t.csv").write_text('id, tier, note\nt1, gold, " padded"\n')
    assert build(tmp_path, "file: t.csv").lookup("t1") == {"id": "t1", "tier": "gold", "note": " padded"}
