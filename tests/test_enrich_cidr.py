"""CIDR enrichers answer with the row of the most specific network containing an address."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from activelabel.enrich import EMPTY
from activelabel.errors import PolicyError
from activelabel.policy import load_policy

HEADER = "apiVersion: activelabel/v1\nkind: Policy\n"

NETWORKS = """network,zone,owner
10.0.0.0/8,corp,it
10.1.0.0/16,lab,research
10.1.2.3,printer,it
2001:db8::/32,v6-corp,it
"""


def cidr_policy(tmp_path: Path, fields: str) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(HEADER + f"enrichers:\n  - {{name: net, type: cidr, key: event.ip, {fields}}}\n")
    return path


def test_longest_prefix_wins(tmp_path: Path) -> None:
    """An address gets the row of the most specific network that contains it."""
    (tmp_path / "nets.csv").write_text(NETWORKS)
    net = load_policy(cidr_policy(tmp_path, "file: nets.csv")).enrichers[0].build()
    assert net.lookup("10.9.9.9")["zone"] == "corp"
    assert net.lookup("10.1.200.1")["zone"] == "lab"
    assert net.lookup("10.1.2.3")["zone"] == "printer"
    assert net.lookup("2001:db8::1")["zone"] == "v6-corp"


def test_ipv4_mapped_ipv6_addresses_match_ipv4_networks(tmp_path: Path) -> None:
    """`::ffff:10.1.2.4` is looked up as the IPv4 address it carries."""
    (tmp_path / "nets.csv").write_text(NETWORKS)
    net = load_policy(cidr_policy(tmp_path, "file: nets.csv")).enrichers[0].build()
    assert net.lookup("::ffff:10.1.2.4")["zone"] == "lab"


def test_misses_and_non_addresses_give_the_empty_map(tmp_path: Path) -> None:
    """An address outside every network, or a value that is not an address, gives the shared empty map."""
    (tmp_path / "nets.csv").write_text(NETWORKS)
    net = load_policy(cidr_policy(tmp_path, "file: nets.csv")).enrichers[0].build()
    assert net.lookup("8.8.8.8") is EMPTY
    assert net.lookup("not-an-ip") is EMPTY
    assert net.lookup(None) is EMPTY
    assert net.lookup({"ip": "10.0.0.1"}) is EMPTY


def test_sqlite_network_table(tmp_path: Path) -> None:
    """Networks can come from a SQLite table, keyed by `key_column`."""
    with sqlite3.connect(tmp_path / "nets.db") as conn:
        conn.execute("CREATE TABLE nets (cidr TEXT, zone TEXT)")
        conn.executemany("INSERT INTO nets VALUES (?, ?)", [("192.168.0.0/16", "home"), ("192.168.1.0/24", "desk")])
    conn.close()
    net = load_policy(cidr_policy(tmp_path, "file: nets.db, table: nets, key_column: cidr")).enrichers[0].build()
    assert net.lookup("192.168.1.7") == {"cidr": "192.168.1.0/24", "zone": "desk"}


def test_a_key_that_is_not_a_network_is_a_policy_error(tmp_path: Path) -> None:
    """A table row whose key is not an IP network is refused when the policy loads, naming the enricher."""
    (tmp_path / "nets.csv").write_text("network,zone\n10.0.0.0/8,corp\nten-dot-oh,bad\n")
    path = cidr_policy(tmp_path, "file: nets.csv")
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    (issue,) = info.value.issues
    assert (issue.file, issue.line) == (str(path), 4)
    assert issue.message.startswith("enricher `net`: `ten-dot-oh` is not an IP network")


def test_rules_read_cidr_rows_by_the_enricher_name(tmp_path: Path) -> None:
    """Rules see a cidr enricher under its name, like a lookup enricher."""
    (tmp_path / "nets.csv").write_text(NETWORKS)
    path = tmp_path / "p.yaml"
    path.write_text(
        HEADER
        + "enrichers:\n  - {name: net, type: cidr, file: nets.csv, key: event.ip}\n"
        + "labels:\n  zone: {type: string}\n"
        + "rules:\n  - {id: z, label: zone, value_expr: net.zone, when: has(net.zone)}\n"
    )
    assert load_policy(path).rules[0].value_expr is not None
