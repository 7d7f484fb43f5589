"""Cardinality guard, enrichment lookups and paths relative to the policy file."""

from __future__ import annotations

import sqlite3

from activelabel import Labeler, load_policy

HEADER = "apiVersion: activelabel/v1\nkind: Policy\nmetadata: {name: t}\n"


def test_cardinality_guard_keeps_the_first_n_values_then_overflows(write_policy):
    """Beyond max_cardinality distinct values, new values become the overflow value and are counted."""
    lab = Labeler(load_policy(write_policy(HEADER + """
labels:
  customer: {type: string, max_cardinality: 3, overflow: __other__}
rules:
  - {id: c, label: customer, value_expr: event.customer}
""")))
    got = [lab.label({"customer": c}).labels["customer"] for c in ["a", "b", "a", "c", "d", "e", "b", "d"]]
    assert got == ["a", "b", "a", "c", "__other__", "__other__", "b", "__other__"]
    stats = lab.stats()
    assert stats.overflow == {"customer": 3}
    assert stats.distinct == {"customer": 3}


def test_cardinality_window_forgets_admitted_values_when_it_elapses(write_policy):
    """With `window`, the admitted set resets every window seconds (clock injected)."""
    now = [1000.0]
    lab = Labeler(load_policy(write_policy(HEADER + """
labels:
  customer: {type: string, max_cardinality: 1, overflow: other, window: 60}
rules:
  - {id: c, label: customer, value_expr: event.customer}
""")), clock=lambda: now[0])
    assert lab.label({"customer": "a"}).labels == {"customer": "a"}
    assert lab.label({"customer": "b"}).labels == {"customer": "other"}
    now[0] += 61
    assert lab.label({"customer": "b"}).labels == {"customer": "b"}
    assert lab.label({"customer": "a"}).labels == {"customer": "other"}


def test_csv_lookup_hit_binds_the_row_and_a_miss_binds_an_empty_map(write_policy, tmp_path):
    """A lookup miss makes `has(tenant.tier)` false instead of an error."""
    (tmp_path / "tenants.csv").write_text("tenant_id,tier\nt1,gold\nt2,silver\n")
    lab = Labeler(load_policy(write_policy(HEADER + """
labels:
  tenant_tier: {type: enum, values: [gold, silver, bronze], default: bronze}
enrichers:
  - {name: tenant, type: lookup, file: tenants.csv, key: event.tenant_id}
rules:
  - {id: tier-from-table, label: tenant_tier, value_expr: tenant.tier, when: has(tenant.tier)}
""")))
    assert lab.label({"tenant_id": "t1"}).labels == {"tenant_tier": "gold"}
    assert lab.label({"tenant_id": "t9"}).labels == {"tenant_tier": "bronze"}
    assert lab.label({}).labels == {"tenant_tier": "bronze"}
    assert lab.stats().rule_errors["tier-from-table"] == 0


def test_sqlite_and_json_lookups_feed_rules(write_policy, tmp_path):
    """Lookup tables can be a real SQLite file or a JSON object keyed by the key."""
    db = tmp_path / "asn.sqlite"
    con = sqlite3.connect(db)
    con.execute("create table asn (ip text primary key, org text)")
    con.execute("insert into asn values ('10.0.0.1', 'acme')")
    con.commit()
    con.close()
    (tmp_path / "paths.json").write_text('{"/pay": {"team": "payments"}}')
    lab = Labeler(load_policy(write_policy(HEADER + """
labels:
  org: {type: string}
  team: {type: string}
enrichers:
  - {name: asn, type: lookup, file: asn.sqlite, table: asn, key_column: ip, key: event.ip}
  - {name: route, type: lookup, file: paths.json, key: event.path}
rules:
  - {id: org, label: org, value_expr: asn.org, when: has(asn.org)}
  - {id: team, label: team, value_expr: route.team, when: has(route.team)}
""")))
    assert lab.label({"ip": "10.0.0.1", "path": "/pay"}).labels == {"org": "acme", "team": "payments"}
    assert lab.label({"ip": "10.0.0.2", "path": "/x"}).labels == {}


def test_paths_in_a_policy_are_relative_to_the_policy_file(tmp_path, monkeypatch):
    """Enricher files and includes resolve next to the policy, whatever the working directory."""
    pdir = tmp_path / "conf"
    pdir.mkdir()
    (pdir / "t.csv").write_text("k,v\na,yes\n")
    (pdir / "base.yaml").write_text(HEADER + "labels:\n  flag: {type: bool, default: false}\n")
    (pdir / "main.yaml").write_text(HEADER + """include: [base.yaml]
labels:
  v: {type: string}
enrichers:
  - {name: t, type: lookup, file: t.csv, key: event.k}
rules:
  - {id: v, label: v, value_expr: t.v, when: has(t.v)}
  - {id: f, label: flag, value: true, when: 'has(t.v)'}
""")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    lab = Labeler.from_file(pdir / "main.yaml")
    assert set(lab.policy.labels) == {"flag", "v"}
    assert lab.label({"k": "a"}).labels == {"flag": True, "v": "yes"}
    assert lab.label({"k": "b"}).labels == {"flag": False}
