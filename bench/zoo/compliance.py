"""Compliance / PII flags (seed: "compliance/PII flags"): regex detectors, SQLite dataset registry.

Synthetic sampled records. Messy shares: dataset not in the registry 20% or
missing 5% (miss), registry retention NULL in 1 of 8 rows and classification
outside the enum ("secret") in 1 of 10 rows (value_expr does not fit: the rule
does not match), sample missing 5% / not a string 3%, region missing 10%.
"""

from __future__ import annotations

import random
import re
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.zoo._common import key

HERE = Path(__file__).resolve().parent
EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+[.][A-Za-z]{2,}").search
CARD = re.compile(r"(^|[^0-9])[0-9]{4}[ -]?[0-9]{4}[ -]?[0-9]{4}[ -]?[0-9]{4}($|[^0-9])").search
SSN = re.compile(r"(^|[^0-9])[0-9]{3}-[0-9]{2}-[0-9]{4}($|[^0-9])").search
EU = frozenset(("eu-west-1", "eu-central-1"))
CLASSES = frozenset(("restricted", "confidential", "internal", "public"))
SAMPLES = ("contact: jane.doe@example.com", "card 4111 1111 1111 1111 exp 12/29", "ssn 123-45-6789",
           "order 12345678 shipped", "hello world", "call 555-123-4567", "id 4111-1111-1111-1111 and bob@x.io",
           "", "lorem ipsum dolor sit amet " * 3)


def materialize(d: Path) -> Path:
    db = d / "datasets.db"
    db.unlink(missing_ok=True)
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE datasets (dataset_id TEXT PRIMARY KEY, owner_team TEXT, retention_days INTEGER,"
                " classification TEXT)")
    for i in range(80):
        con.execute("INSERT INTO datasets VALUES (?, ?, ?, ?)",
                    (f"ds{i:03d}", f"team-{i % 6}", None if i % 8 == 0 else 30 * (1 + i % 12),
                     "secret" if i % 10 == 0 else ("public", "internal", "confidential")[i % 3]))
    con.commit()
    con.close()
    shutil.copy(HERE / "compliance.yaml", d / "policy.yaml")
    return d / "policy.yaml"


def make_labeler(d: Path, **_: Any) -> Callable[[dict], dict]:
    con = sqlite3.connect(f"file:{d / 'datasets.db'}?mode=ro", uri=True)
    con.row_factory = sqlite3.Row
    table = {r["dataset_id"]: dict(r) for r in con.execute("SELECT * FROM datasets")}
    con.close()
    empty: dict = {}

    def label(e: dict) -> dict:
        out: dict = {}
        s = e.get("sample")
        text = s.__class__ is str
        email = bool(text and EMAIL(s))
        card = bool(text and CARD(s))
        ssn = bool(text and SSN(s))
        out["has_email"] = email
        out["has_card"] = card
        out["has_ssn"] = ssn
        if email or card or ssn:
            out["pii_kinds"] = ("email," if email else "") + ("card," if card else "") + ("ssn," if ssn else "")
        ds = table.get(key(e.get("dataset")), empty)
        declared = ds.get("classification")
        if card or ssn:
            cls = "restricted"
        elif email:
            cls = "confidential"
        elif declared.__class__ is str and declared in CLASSES:
            cls = declared
        else:
            cls = "internal"
        out["classification"] = cls
        ret = ds.get("retention_days")
        out["retention_days"] = ret if ret.__class__ is int else 365
        owner = ds.get("owner_team")
        out["owner"] = owner if owner.__class__ is str else "unowned"
        region = e.get("region")
        out["eu_restricted"] = region.__class__ is str and region in EU and cls == "restricted"
        return out

    return label


def events(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        e: dict = {}
        r = rng.random()
        if r < 0.05:
            pass
        elif r < 0.25:
            e["dataset"] = f"ds{rng.randrange(80, 200):03d}"
        else:
            e["dataset"] = f"ds{rng.randrange(80):03d}"
        r = rng.random()
        if r < 0.05:
            pass
        elif r < 0.08:
            e["sample"] = rng.choice((12345, None, {"a": 1}))
        else:
            e["sample"] = rng.choice(SAMPLES)
        if rng.random() > 0.10:
            e["region"] = rng.choice(("eu-west-1", "us-east-1", "eu-central-1", "ap-south-1"))
        out.append(e)
    return out
