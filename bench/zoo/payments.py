"""Payments routing (seed: "payments routing"): merchant tier from a CSV, risk by max_confidence, fee.

Events are synthetic card/wallet/bank payments. Messy shares (per event, independent):
merchant id not in the table ~20% (enrichment miss), tier not in the enum ~4% of rows,
amount missing 5% / an int 25% / a string 5% (so `amount * 0.029` errors on ints,
as it does in CEL), attempt missing 10% / a string 5%, either country missing 10%,
currency missing 5%, method missing 5%.
"""

from __future__ import annotations

import random
import shutil
from bisect import bisect_right
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.zoo._common import is_num, key, max_confidence, read_csv, write_csv

HERE = Path(__file__).resolve().parent
TIERS = ("gold", "silver", "bronze")
BOUNDS = (10, 100, 1000, 1e4)
BANDS = ("<10", "10-100", "100-1000", "1000-1e4", ">=1e4")
EUR_GBP = frozenset(("EUR", "GBP"))


def materialize(d: Path) -> Path:
    rng = random.Random(7)
    rows = []
    for i in range(400):
        tier = TIERS[i % 3] if i % 25 else "platinum"  # a value outside the enum
        rows.append((f"m{i:04d}", tier, rng.choice(("retail", "travel", "gaming")),
                     "elevated" if i % 7 == 0 else "normal"))
    write_csv(d / "merchants.csv", ["merchant_id", "tier", "category", "risk"], rows)
    shutil.copy(HERE / "payments.yaml", d / "policy.yaml")
    return d / "policy.yaml"


def make_labeler(d: Path, **_: Any) -> Callable[[dict], dict]:
    merchants = read_csv(d / "merchants.csv")
    empty: dict = {}

    def label(e: dict) -> dict:
        out: dict = {}
        m = merchants.get(key(e.get("merchant_id")), empty)
        amount = e.get("amount")
        num = is_num(amount)
        tier = m.get("tier")
        tier = tier if tier in ("gold", "silver", "bronze", "unknown") else "unknown"
        out["merchant_tier"] = tier
        if num:
            out["amount_band"] = BANDS[bisect_right(BOUNDS, amount)]
        cc, ic = e.get("card_country", e), e.get("ip_country", e)
        # `!=` in CEL is false only for equal values of comparable types; 1 != "1" is true, as in Python.
        xb = cc is not e and ic is not e and cc != ic
        out["cross_border"] = xb
        cands = []
        if tier == "bronze" and num and amount > 1000:
            cands.append(("high", 0.7))
        if xb and num and amount >= 500:
            cands.append(("high", 0.8))
        attempt = e.get("attempt")
        if is_num(attempt) and attempt >= 3:
            cands.append(("medium", 0.9))
        if m.get("risk") == "elevated":
            cands.append(("medium", 0.6))
        if tier == "gold":
            cands.append(("low", 0.95))
        risk = max_confidence(cands) or "low"
        out["risk"] = risk
        cur = e.get("currency", e)
        if risk == "high":
            out["route"] = "manual_review"
        elif (cur is not e and cur in EUR_GBP and cur.__class__ is str and tier != "gold") or e.get("method") == "bank":
            out["route"] = "secondary"
        else:
            out["route"] = "primary"
        method = e.get("method")
        if method == "card" and amount.__class__ is float:
            out["fee"] = amount * 0.029 + 0.3
        elif method == "wallet" and amount.__class__ is float and amount > 0.0:
            out["fee"] = amount * 0.019
        return out

    return label


def events(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        e: dict = {"txn_id": f"t{seed}-{i}", "merchant_id": f"m{rng.randrange(500):04d}"}
        r = rng.random()
        if r < 0.05:
            pass
        elif r < 0.30:
            e["amount"] = rng.choice((5, 50, 700, 2500, 20000))
        elif r < 0.35:
            e["amount"] = f"{rng.uniform(1, 3000):.2f}"
        else:
            e["amount"] = round(rng.lognormvariate(4, 1.6), 2)
        r = rng.random()
        if r < 0.10:
            pass
        elif r < 0.15:
            e["attempt"] = "2"
        else:
            e["attempt"] = rng.choice((1, 1, 1, 2, 3, 4))
        countries = ("US", "DE", "GB", "FR", "BR")
        if rng.random() > 0.10:
            e["card_country"] = rng.choice(countries)
        if rng.random() > 0.10:
            e["ip_country"] = e.get("card_country", "US") if rng.random() < 0.8 else rng.choice(countries)
        if rng.random() > 0.05:
            e["currency"] = rng.choice(("USD", "EUR", "GBP", "BRL"))
        if rng.random() > 0.05:
            e["method"] = rng.choice(("card", "card", "wallet", "bank"))
        out.append(e)
    return out
