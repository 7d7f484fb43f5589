"""Support-ticket routing (seed: "support-ticket routing"): regex rules, an sklearn model, a vote.

Synthetic tickets. Messy shares: subject missing 4% / not a string 2% (rules
error, the model sees length 0), no keyword rule matches ~45% (the model decides,
or abstains below 0.5 and the default applies), customer_plan missing 15% / not
in the enum 5% (so `plan` stays unset), attachments missing 30% / a string 5%,
channel missing 10%, language missing 30%.

The model (logistic regression on three numeric features) is trained at
materialize time, deterministically, into the policy's directory.
"""

from __future__ import annotations

import random
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.zoo._common import is_num, vote

HERE = Path(__file__).resolve().parent
BILLING = re.compile(r"(?i)(invoice|refund|charge[ds]?)").search
OUTAGE = re.compile(r"(?i)\b(down|outage|5[0-9][0-9])\b", re.ASCII).search
ACCOUNT = re.compile(r"(?i)(password|login|2fa|locked)").search
PLANS = frozenset(("enterprise", "pro", "free"))
SUBJECTS = ("Refund for invoice {n}", "You charged me twice", "Site down again", "Error 503 on checkout",
            "Password reset not working", "Account locked after 2fa", "Question about the API",
            "Feature request: dark mode", "How do I export data?", "outage in eu region",
            "Can't login", "Billing address change", "Is there an on-prem version", "help")


def _train(path: Path) -> None:
    import joblib
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    rng = np.random.RandomState(0)
    n = 2000
    length = rng.uniform(0, 60, n)
    att = rng.poisson(1.0, n).astype(float)
    ent = (rng.uniform(0, 1, n) < 0.3).astype(float)
    y = np.where(length < 15, "account", np.where(att > 2, "billing", np.where(ent > 0, "outage", "general")))
    model = LogisticRegression(max_iter=500, random_state=0).fit(np.column_stack([length, att, ent]), y)
    joblib.dump(model, path)


def materialize(d: Path) -> Path:
    _train(d / "queue_model.joblib")
    shutil.copy(HERE / "support.yaml", d / "policy.yaml")
    return d / "policy.yaml"


def make_labeler(d: Path, **_: Any) -> Callable[[dict], dict]:
    import joblib
    import numpy as np

    model = joblib.load(d / "queue_model.joblib")
    classes = [str(c) for c in model.classes_]
    predict_proba, array = model.predict_proba, np.array

    def label(e: dict) -> dict:
        out: dict = {}
        subj = e.get("subject")
        s = subj.__class__ is str
        plan = e.get("customer_plan", e)
        att = e.get("attachments")
        if s and BILLING(subj):
            queue = "billing"
        elif s and OUTAGE(subj):
            queue = "outage"
        elif s and ACCOUNT(subj):
            queue = "account"
        else:
            x = [float(len(subj)) if s else 0.0, float(att) if att.__class__ is int else 0.0,
                 1.0 if plan == "enterprise" else 0.0]
            p = predict_proba(array([x], dtype=float))[0]
            best = max(range(len(p)), key=p.__getitem__)
            queue = classes[best] if float(p[best]) >= 0.5 else "general"
        out["queue"] = queue
        channel = e.get("channel")
        cands = []
        if queue == "outage" and plan is not e and plan == "enterprise":
            cands.append(("p1", 0.9))
        if queue == "outage":
            cands.append(("p2", 0.6))
        if channel == "phone":
            cands.append(("p2", 0.5))
        if is_num(att) and att > 3:
            cands.append(("p2", 0.2))
        if plan == "free":
            cands.append(("p3", 0.8))
        prio = vote(cands) or "p3"
        out["priority"] = prio
        out["sla_hours"] = 4 if prio == "p1" else 24 if prio == "p2" else 72
        lang = e.get("language", e)
        out["needs_translation"] = lang is not e and lang != "en"
        if plan.__class__ is str and plan in PLANS:
            out["plan"] = plan
        return out

    return label


def events(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        e: dict = {"ticket_id": i}
        r = rng.random()
        if r < 0.04:
            pass
        elif r < 0.06:
            e["subject"] = rng.choice((404, None, ["a"]))
        else:
            e["subject"] = rng.choice(SUBJECTS).format(n=rng.randrange(1000)) + " " * rng.randrange(0, 40)
        r = rng.random()
        if r < 0.15:
            pass
        elif r < 0.20:
            e["customer_plan"] = rng.choice(("trial", "Enterprise"))
        else:
            e["customer_plan"] = rng.choice(("enterprise", "pro", "free", "free"))
        r = rng.random()
        if r < 0.30:
            pass
        elif r < 0.35:
            e["attachments"] = "2"
        else:
            e["attachments"] = rng.choice((0, 0, 1, 2, 4, 7))
        if rng.random() > 0.10:
            e["channel"] = rng.choice(("email", "chat", "phone", "web"))
        if rng.random() > 0.30:
            e["language"] = rng.choice(("en", "en", "de", "ja", "pt"))
        out.append(e)
    return out
