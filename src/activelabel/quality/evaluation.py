"""Which ground truth a score is honest on: the holdout, the model's own training data, or
feedback that arrived after the model was built.

A model scored on the items it was trained on looks perfect whatever it does
elsewhere (the loop's `report --store` showed accuracy 1.000 on the reviewed items).
The store knows which records are held out (``holdout`` table, set by
``activelabel loop``) and which ground truth each model build was trained on
(``model_builds``), so the report can split its scores three ways and say which
one to believe.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from activelabel.quality.metrics import classification_summary
from activelabel.quality.store import DecisionStore, StoredDecision

SPLITS = ("holdout", "trained_on", "after_build")
NOTES = {
    "holdout": "held out before review; never reviewed or trained on: the honest score",
    "trained_on": "feedback the model was trained on: optimistic, not a measure of quality",
    "after_build": "feedback that arrived after the model was built (not trained on yet)",
}


def evaluation_split(store: DecisionStore, decisions: Sequence[StoredDecision],
                     labels: Sequence[str] | None = None) -> dict[str, Any]:
    """Per label, accuracy and macro-F1 on each split that has items (empty splits are left out)."""
    by_id = {d.record_id: d for d in decisions}
    hold_truth = store.holdout_truth()
    truths = store.ground_truth()
    names = sorted(set(labels or ()) | {lab for _, lab in hold_truth} | {g.label for g in truths})
    out: dict[str, Any] = {}
    for label in names:
        build = store.latest_model_build(label)
        groups: dict[str, list[tuple[Any, Any]]] = {k: [] for k in SPLITS}
        for (rid, lab), value in hold_truth.items():
            if lab == label and rid in by_id:
                groups["holdout"].append((value, by_id[rid].labels.get(label)))
        if build is not None:
            for g in truths:
                if g.label != label or g.record_id not in by_id:
                    continue
                pair = (g.value, by_id[g.record_id].labels.get(label))
                if g.record_id in build["trained_ids"]:
                    groups["trained_on"].append(pair)
                elif g.ts > build["ts"]:
                    groups["after_build"].append(pair)
        splits = {}
        for name, pairs in groups.items():
            if not pairs:
                continue
            s = classification_summary([t for t, _ in pairs], [p for _, p in pairs])
            splits[name] = {"n": len(pairs), "accuracy": s["accuracy"], "macro_f1": s["macro_f1"],
                            "values_total": s["values_total"],
                            "optimistic": name == "trained_on", "note": NOTES[name]}
        if splits:
            out[label] = {"model_version": build["version"] if build else None, "splits": splits}
    return out
