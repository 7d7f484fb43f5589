"""The active loop on real logs: BGL alert categories, rules → review → retrain → relabel.

    .venv/bin/python bench/bgl_active_loop.py            # 5 seeds, 5 rounds of 30 reviews
    .venv/bin/python bench/bgl_active_loop.py --seeds 2 --rounds 3 --budget 20   # quicker

Starts from the rules-only example policy (examples/bgl/policy.yaml). Each round:
label every line with the current policy (the real engine), record the decisions in
a real SQLite store, pick `budget` lines for review with the strategy (the real
review queue), write them as Label Studio tasks, answer them from the data set's
ground truth in Label Studio's export shape, import that as ground truth, train a
model from it (the real `train` path) and put it in the policy's `models:` section.

Scores are macro-F1 and accuracy of `alert_category` on the lines *not* sent to
review, for rules only, model only and rules + model. Arms (see ARMS): `uncertainty`
(lowest confidence first, one line per template; the model also learns from what
the rules assert with confidence >= 0.9) against `random` (the same loop with
uniform random review) and `random-plain` (the plain baseline: TF-IDF + logistic
regression on randomly reviewed lines only); two ablations separate what template
suppression and rule labels each buy.

The labeler never sees the label: events carry only content, level, component,
type, node, timestamp and line number (not `raw`, which starts with the label).
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from statistics import mean, pstdev
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from activelabel.engine import Labeler  # noqa: E402
from activelabel.models import compile_features, load_model_labeler  # noqa: E402
from activelabel.quality.features import feature_rows, training_pairs  # noqa: E402
from activelabel.quality.feedback import apply_feedback, read_label_studio_export  # noqa: E402
from activelabel.quality.metrics import classification_summary  # noqa: E402
from activelabel.quality.review import dedup_key_for, label_studio_tasks, select_for_review  # noqa: E402
from activelabel.quality.store import DecisionStore, StoredDecision, record_id_for  # noqa: E402
from activelabel.quality.training import train_model  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "loghub" / "BGL" / "BGL_2k.labeled.jsonl"
POLICY = REPO / "examples" / "bgl" / "policy.yaml"
LABEL = "alert_category"
EVENT_FIELDS = ("line_no", "timestamp", "node", "type", "component", "level", "content")
FEATURES = {"msg": "event.content", "level": "event.level", "component": "event.component"}
MIN_CONFIDENCE = 0.5
#: arm → (review strategy, one line per template?, train also on rule labels with confidence ≥ this)
ARMS = {
    "uncertainty": ("uncertainty", True, 0.9),          # the loop as shipped
    "random": ("random", False, 0.9),                   # same loop, uniform random review
    "random-plain": ("random", False, None),            # the plain baseline: TF-IDF + LR on random reviews only
    "uncertainty-no-rule-labels": ("uncertainty", True, None),   # ablation: reviews only
    "random-dedup": ("random", True, 0.9),              # ablation: template suppression without uncertainty
    "margin": ("margin", True, 0.9),                    # other strategies, on the model's full distribution
    "entropy": ("entropy", True, 0.9),
    "disagreement": ("disagreement", True, 0.9),
}


def load_bgl(path: Path) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Events without the label (or `raw`, which embeds it), and the truth by record id."""
    events, truth = [], {}
    for line in path.read_bytes().splitlines():
        row = orjson.loads(line)
        event = {k: row[k] for k in EVENT_FIELDS}
        rid = record_id_for(event, "line_no")
        events.append(event)
        truth[rid] = row[LABEL]
    return events, truth


def policy_with_model(base: Path, artifact: Path | None, out: Path) -> Path:
    """The rules-only policy, plus a `models:` entry for the latest artifact."""
    text = base.read_text()
    if artifact is not None:
        features = "".join(f"\n      {k}: {v}" for k, v in FEATURES.items())
        text += (f"\nmodels:\n  - name: alert_model\n    label: {LABEL}\n    type: sklearn\n    path: {artifact}\n"
                 f"    features:{features}\n    min_confidence: {MIN_CONFIDENCE}\n    timeout_ms: 5000\n")
    out.write_text(text)
    return out


def decide(labeler: Labeler, events: list[dict[str, Any]]) -> list[StoredDecision]:
    decisions = labeler.label_batch(events)
    return [StoredDecision(record_id_for(e, "line_no"), 0.0, d.policy_version, dict(d.labels), dict(d.confidences),
                           dict(d.sources), {}, e) for e, d in zip(events, decisions, strict=True)]


def score(decided: list[StoredDecision] | list[Any], truth: dict[str, str], ids: list[str], *, values: bool = False) -> dict[str, float]:
    """Macro-F1 and accuracy on ``ids`` (the unreviewed lines)."""
    if values:
        pred = dict(zip([d[0] for d in decided], [d[1] for d in decided], strict=True))
    else:
        pred = {d.record_id: d.labels.get(LABEL) for d in decided}
    s = classification_summary([truth[i] for i in ids], [pred.get(i) for i in ids])
    return {"macro_f1": s["macro_f1"], "accuracy": s["accuracy"]}


def annotate_like_label_studio(tasks: list[dict[str, Any]], truth: dict[str, str], seed: int) -> list[dict[str, Any]]:
    """What Label Studio exports after a person answered every task (the answer is the data set's label)."""
    for n, task in enumerate(tasks):
        task["id"] = seed * 100_000 + n
        task["annotations"] = [{
            "id": n, "completed_by": {"id": 1, "email": "simulated@bench"}, "was_cancelled": False,
            "created_at": datetime.now(UTC).isoformat(),
            "result": [{"from_name": LABEL, "to_name": "text", "type": "choices",
                        "value": {"choices": [truth[task["data"]["activelabel_id"]]]}}],
        }]
    return tasks


def run_one(strategy: str, seed: int, *, budget: int, rounds: int, events: list[dict[str, Any]],
            truth: dict[str, str], rules_only: list[StoredDecision], work: Path) -> list[dict[str, Any]]:
    """One strategy, one seed: round 0 is rules only, then `rounds` of review → train → relabel."""
    select_as, dedup, rule_labels = ARMS[strategy]
    store = DecisionStore(work / f"{strategy}-{seed}.db")
    all_ids = [d.record_id for d in rules_only]
    current = rules_only
    model_only: list[tuple[str, Any]] | None = None
    distributions: dict[str, dict[Any, float]] | None = None
    history = []
    programs = compile_features(FEATURES)
    for rnd in range(rounds + 1):
        store.record_many((d.record_id, d.event, {"labels": d.labels, "confidences": d.confidences,
                                                  "sources": d.sources, "policy_version": d.policy_version})
                          for d in current)
        reviewed = {g.record_id for g in store.ground_truth(LABEL)}
        unreviewed = [i for i in all_ids if i not in reviewed]
        history.append({
            "round": rnd, "reviewed": len(reviewed),
            # Rare categories can be reviewed away entirely; say how many are left to score on.
            "alert_lines_unreviewed": sum(truth[i] != "-" for i in unreviewed),
            "categories_unreviewed": len({truth[i] for i in unreviewed}),
            "rules_only": score(rules_only, truth, unreviewed),
            "model_only": score(model_only, truth, unreviewed, values=True) if model_only else None,
            "rules_plus_model": score(current, truth, unreviewed),
        })
        if rnd == rounds:
            break
        # Review: pick, export as Label Studio tasks, answer, import the export as ground truth.
        picked = select_for_review(list(store.decisions()), label=LABEL, budget=budget, strategy=select_as,
                                   dedup=dedup_key_for("content") if dedup else None, exclude=reviewed,
                                   model_distributions=distributions, seed=seed * 1000 + rnd)
        export = annotate_like_label_studio(label_studio_tasks(picked, text_field="content"), truth, seed)
        items, _ = read_label_studio_export(orjson.loads(orjson.dumps(export)), source=f"round {rnd}")
        result = apply_feedback(store, items)
        assert not result.rejected, result.rejected
        # Retrain from every ground-truth item so far (plus, optionally, what the rules asserted), relabel.
        truth_now = {t.record_id: t.value for t in store.ground_truth(LABEL)}
        by_id = {d.record_id: d for d in store.decisions()}
        pairs = training_pairs(by_id, truth_now, LABEL, rule_labels_min_confidence=rule_labels)
        rows = feature_rows([d for d, _, _ in pairs], programs, hide_label=LABEL)
        values = [v for _, v, _ in pairs]
        if len(set(values)) < 2:
            continue  # one class of truth cannot train a classifier yet; rules carry on alone
        trained = train_model(rows, values, label=LABEL, features=FEATURES, out_dir=work / "models",
                              name=f"alert_{strategy}_{seed}_{rnd}", holdout=0.0, seed=seed)
        policy = policy_with_model(POLICY, trained.artifact, work / f"policy-{strategy}-{seed}.yaml")
        current = decide(Labeler.from_file(policy), events)
        spec = Labeler.from_file(policy).policy.models[0]
        bare = load_model_labeler(spec, feature_programs=programs)
        bare.min_confidence = 0.0  # model only: every line gets the model's best guess
        feats = feature_rows(current, programs, hide_label=LABEL)
        model_only = [(d.record_id, p[0] if p else None) for d, p in zip(current, bare.predict_batch(feats), strict=True)]
        dists = bare.distributions(feats)
        distributions = None if dists is None else {d.record_id: p for d, p in zip(current, dists, strict=True)}
    store.close()
    return history


def summarise(runs: dict[str, list[list[dict[str, Any]]]]) -> dict[str, Any]:
    """Mean and spread over seeds per strategy, round and scorer."""
    out: dict[str, Any] = {}
    for strategy, seeds in runs.items():
        rows = []
        for rnd in range(len(seeds[0])):
            at = [s[rnd] for s in seeds]
            row: dict[str, Any] = {"round": rnd, "reviewed": at[0]["reviewed"],
                                   "categories_unreviewed": mean(a["categories_unreviewed"] for a in at),
                                   "alert_lines_unreviewed": mean(a["alert_lines_unreviewed"] for a in at)}
            for scorer in ("rules_only", "model_only", "rules_plus_model"):
                for metric in ("macro_f1", "accuracy"):
                    vals = [a[scorer][metric] for a in at if a[scorer] is not None]
                    row[f"{scorer}.{metric}"] = {"mean": mean(vals), "std": pstdev(vals), "n": len(vals)} if vals else None
            rows.append(row)
        out[strategy] = rows
    return out


def print_tables(summary: dict[str, Any], console: Console) -> None:
    for strategy, rows in summary.items():
        t = Table(title=f"BGL alert_category · {strategy} · mean ± std over seeds, on unreviewed lines")
        for col in ("round", "reviewed", "categories left", "rules F1", "model F1", "rules+model F1", "rules acc", "model acc", "rules+model acc"):
            t.add_column(col, justify="right")

        def cell(v: Any) -> str:
            return "–" if v is None else f"{v['mean']:.3f} ± {v['std']:.3f}"

        for r in rows:
            t.add_row(str(r["round"]), str(r["reviewed"]), f"{r['categories_unreviewed']:.1f}", cell(r["rules_only.macro_f1"]), cell(r["model_only.macro_f1"]),
                      cell(r["rules_plus_model.macro_f1"]), cell(r["rules_only.accuracy"]),
                      cell(r["model_only.accuracy"]), cell(r["rules_plus_model.accuracy"]))
        console.print(t)


def _final(summary: dict[str, Any], arm: str, key: str) -> float | None:
    cell = summary.get(arm, [{}])[-1].get(key)
    return None if cell is None else cell["mean"]


def check_targets(summary: dict[str, Any], runs: dict[str, Any], *, budget: int) -> dict[str, Any]:
    """The issue's targets at the final budget: rules + model ≥ 0.95 macro-F1; uncertainty ≥ 2 × random."""
    out: dict[str, Any] = {"reviewed": budget}
    if "uncertainty" in runs:
        finals = [seed[-1]["rules_plus_model"]["macro_f1"] for seed in runs["uncertainty"]]
        out["uncertainty_rules_plus_model_f1"] = {"mean": mean(finals), "min": min(finals), "per_seed": finals}
        out["target_f1_0.95_met"] = mean(finals) >= 0.95
        ours = mean(finals)
        for arm, key in (("random-plain", "model_only.macro_f1"), ("random", "rules_plus_model.macro_f1"),
                         ("random", "model_only.macro_f1")):
            theirs = _final(summary, arm, key)
            if theirs:
                out[f"ratio_vs_{arm}_{key.split('.')[0]}"] = ours / theirs
    return out


def print_targets(targets: dict[str, Any], console: Console) -> None:
    t = Table(title=f"Targets at {targets['reviewed']} reviewed lines")
    t.add_column("check")
    t.add_column("value", justify="right")
    for k, v in targets.items():
        if k == "reviewed":
            continue
        if isinstance(v, dict):
            v = f"mean {v['mean']:.3f}, min {v['min']:.3f}"
        elif isinstance(v, float):
            v = f"{v:.2f}×"
        t.add_row(k, str(v))
    console.print(t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--budget", type=int, default=30, help="reviews per round")
    ap.add_argument("--arms", default=",".join(ARMS), help="comma-separated, from: " + ", ".join(ARMS))
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "bgl_active_loop.json")
    args = ap.parse_args()
    console = Console(width=150)
    events, truth = load_bgl(DATA)
    started = time.perf_counter()
    runs: dict[str, list[list[dict[str, Any]]]] = {}
    with tempfile.TemporaryDirectory(prefix="bgl-loop-") as tmp:
        work = Path(tmp)
        rules_only = decide(Labeler.from_file(POLICY), events)
        for strategy in args.arms.split(","):
            for seed in range(args.seeds):
                console.print(f"[dim]{strategy} seed {seed}…[/]")
                runs.setdefault(strategy, []).append(run_one(
                    strategy, seed, budget=args.budget, rounds=args.rounds, events=events, truth=truth,
                    rules_only=rules_only, work=work))
    summary = summarise(runs)
    print_tables(summary, console)
    targets = check_targets(summary, runs, budget=args.budget * args.rounds)
    print_targets(targets, console)
    result = {
        "experiment": "bgl_active_loop", "data": str(DATA.relative_to(REPO.parent)), "lines": len(events),
        "label": LABEL, "policy": str(POLICY.relative_to(REPO)), "features": FEATURES, "min_confidence": MIN_CONFIDENCE,
        "arms": {k: {"strategy": v[0], "dedup": v[1], "rule_labels_min_confidence": v[2]} for k, v in ARMS.items()},
        "seeds": args.seeds, "rounds": args.rounds, "budget_per_round": args.budget,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "processor": _cpu()},
        "elapsed_s": round(time.perf_counter() - started, 1),
        "targets": targets, "summary": summary, "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    console.print(f"wrote {args.out} in {result['elapsed_s']} s")


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    main()
