"""The active loop on loghub data, scored on a holdout: one command per dataset.

    nice -n 10 .venv/bin/python bench/loop_experiment.py --dataset HDFS
    nice -n 10 .venv/bin/python bench/loop_experiment.py --dataset Thunderbird
    nice -n 10 .venv/bin/python bench/loop_experiment.py --dataset BGL
    .venv/bin/python bench/loop_experiment.py --dataset BGL --seeds 1 --arms novelty   # quicker

For each seed and arm it runs the real command,

    activelabel loop --policy P --data D --label L --id-field line_no --answers TRUTH.jsonl \\
        --holdout 0.5 --rounds 5 --budget 30 --strategy S --seed N --dedup-field content --json -o DIR

in a subprocess (so what is measured is what a user runs), then reads its per-round
JSON. Data: the loghub 2k samples in ../shared/data/loghub/. Events carry only the
fields a log shipper would send (never the label column, the template text or
`raw`); the truth file holds the label: the loghub template id (`event_id`) for
HDFS and Thunderbird, the alert category for BGL. HDFS and Thunderbird start from a
policy with the label and no rules (type string: an open label set); BGL from the
rules-only examples/bgl/policy.yaml (a copy: the loop edits its policy in place).

Arms: `novelty` (uncertainty with novelty first, the loop's default), `random`
(uniform random lines: the issue's baseline, `--strategy random --no-dedup`) and
`random-dedup` (random with one line per template: an ablation, and a stronger baseline).
After the runs, drift is checked with each seed's final policy and novelty index:
on two random halves of the log (must stay quiet) and on the second half with 30 %
of its lines replaced by a template the log never had (must fire). The drift checks
are computed in-process with the library (`quality.drift.decision_drift`), from the
same policy and model the loop left.

Writes bench/results/loop_<dataset>.json and .txt (the tables).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from statistics import mean, pstdev
from typing import Any

import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from activelabel.quality import drift as drift_mod  # noqa: E402

LOGHUB = REPO.parent / "shared" / "data" / "loghub"
DATASETS: dict[str, dict[str, Any]] = {
    "HDFS": {"file": "HDFS/HDFS_2k.parsed.jsonl", "label": "template", "truth": "event_id",
             "fields": ("line_no", "date", "time", "pid", "level", "component", "content"),
             "features": {"msg": "event.content", "level": "event.level", "component": "event.component"},
             "policy": None},
    "Thunderbird": {"file": "Thunderbird/Thunderbird_2k.labeled.jsonl", "label": "template", "truth": "event_id",
                    "fields": ("line_no", "timestamp", "location", "user", "pid", "component", "content"),
                    "features": {"msg": "event.content", "component": "event.component"},
                    "policy": None},
    "BGL": {"file": "BGL/BGL_2k.labeled.jsonl", "label": "alert_category", "truth": "alert_category",
            "fields": ("line_no", "timestamp", "node", "type", "component", "level", "content"),
            "features": {"msg": "event.content", "level": "event.level", "component": "event.component"},
            "policy": REPO / "examples" / "bgl" / "policy.yaml"},
}
OPEN_POLICY = """# {name}: the loghub template id of each line, learned from review (no rules).
apiVersion: activelabel/v1
kind: Policy
metadata:
  name: {slug}-templates
  version: "1"
labels:
  template:
    type: string   # an open label set: values are learned from reviewers
    description: loghub template id (E1, E2, ...)
"""
# A template none of the three logs has (checked below), injected for the drift check.
INJECTED = "rdma: link retrain on port {n} lane {m} after {k} CRC errors, queue pair {qp} reset"
#: arm -> (strategy, extra flags). `random` is the issue's baseline (uniform random lines, as the old
#: protocol's random arm); `random-dedup` is the same with one line per template (an ablation).
ARMS = {"novelty": ("novelty", []), "random": ("random", ["--no-dedup"]), "random-dedup": ("random", [])}


def prepare(name: str, work: Path) -> tuple[Path, Path, Path, list[dict[str, Any]], dict[str, Any]]:
    spec = DATASETS[name]
    rows = [orjson.loads(line) for line in (LOGHUB / spec["file"]).read_bytes().splitlines() if line.strip()]
    events = [{k: r[k] for k in spec["fields"] if k in r} for r in rows]
    assert not any("rdma: link retrain" in e["content"] for e in events)
    data = work / "data.jsonl"
    data.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    answers = work / "answers.jsonl"
    truth = {str(r["line_no"]): r[spec["truth"]] for r in rows}
    answers.write_bytes(b"".join(orjson.dumps({"id": k, "label": spec["label"], "value": v}) + b"\n"
                                 for k, v in truth.items()))
    policy_text = spec["policy"].read_text() if spec["policy"] else OPEN_POLICY.format(name=name, slug=name.lower())
    base = work / "policy.base.yaml"
    base.write_text(policy_text)
    return data, answers, base, events, truth


def run_loop(name: str, arm: str, seed: int, work: Path, data: Path, answers: Path, base: Path, args: Any) -> dict[str, Any]:
    spec = DATASETS[name]
    run_dir = work / f"{arm}-{seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    policy = run_dir / "policy.yaml"
    policy.write_text(base.read_text())
    cmd = [sys.executable, "-m", "activelabel.cli.main", "loop", "--policy", str(policy), "--data", str(data),
           "--label", spec["label"], "--id-field", "line_no", "--answers", str(answers),
           "--holdout", str(args.holdout), "--rounds", str(args.rounds), "--budget", str(args.budget),
           "--strategy", ARMS[arm][0], *ARMS[arm][1], "--seed", str(seed), "--dedup-field", "content", "--json",
           "-o", str(run_dir / "out")]
    for k, v in spec["features"].items():
        cmd += ["--feature", f"{k}={v}"]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    started = time.perf_counter()
    res = subprocess.run(["nice", "-n", "10", *cmd], capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - started
    if res.returncode != 0:
        raise SystemExit(f"{name} {arm} seed {seed} failed:\n{res.stderr}")
    lines = [orjson.loads(x) for x in res.stdout.splitlines() if x.strip()]
    rounds = [x for x in lines if "round" in x]
    return {"arm": arm, "seed": seed, "wall_s": round(wall, 2), "rounds": rounds, "policy": str(policy),
            "command": " ".join(cmd[2:])}


def drift_checks(name: str, run: dict[str, Any], events: list[dict[str, Any]], seed: int) -> dict[str, Any]:
    """Random halves (quiet expected) and an injected new template in the second half (drift expected)."""
    from activelabel.engine import Labeler
    from activelabel.models import compile_features
    from activelabel.quality.features import feature_rows
    from activelabel.quality.novelty import NoveltyIndex, novelty_path_for
    from activelabel.quality.store import StoredDecision

    spec = DATASETS[name]
    label = spec["label"]
    policy = Path(run["policy"])
    labeler = Labeler.from_file(policy)
    model = next(m for m in labeler.policy.models if m.label == label)
    index = NoveltyIndex.load(novelty_path_for(policy.parent / model.path_text))
    programs = compile_features(spec["features"])

    def items(evs: list[dict[str, Any]]) -> list[tuple[Any, float | None, bool]]:
        ds = labeler.label_batch(evs)
        stored = [StoredDecision(str(i), 0.0, None, dict(d.labels), dict(d.confidences), dict(d.sources), {}, e)
                  for i, (e, d) in enumerate(zip(evs, ds, strict=True))]
        rows = feature_rows(stored, programs, hide_label=label)
        return [(d.labels.get(label), d.confidences.get(label), index.is_novel(s))
                for d, s in zip(ds, index.scores(rows), strict=True)]

    rng = random.Random(seed)
    order = list(range(len(events)))
    rng.shuffle(order)
    half = len(order) // 2
    all_items = items(events)
    ref = [all_items[i] for i in order[:half]]
    cur = [all_items[i] for i in order[half:]]
    quiet = drift_mod.decision_drift(label, ref, cur)
    # The binning before this change (every value its own bin): what the issue measured.
    saved = drift_mod.MIN_BIN_COUNT, drift_mod.TOP_BINS
    drift_mod.MIN_BIN_COUNT, drift_mod.TOP_BINS = 1, 10**9
    old_psi = drift_mod.psi([v for v, _, _ in ref], [v for v, _, _ in cur])
    drift_mod.MIN_BIN_COUNT, drift_mod.TOP_BINS = saved
    first, second = events[: len(events) // 2], [dict(e) for e in events[len(events) // 2:]]
    rng2 = random.Random(seed + 1)
    for e in rng2.sample(second, k=int(0.3 * len(second))):
        e["content"] = INJECTED.format(n=rng2.randint(0, 15), m=rng2.randint(0, 3), k=rng2.randint(3, 900),
                                       qp=hex(rng2.randint(4096, 65535)))
    injected = drift_mod.decision_drift(label, items(first), items(second))
    summary = lambda d: {"drifted": d["drifted"], "fired": d["fired"],
                         "values_psi": d["checks"]["values"]["psi"],
                         "novel_share": d["shares"]["novel_share"], "unset_share": d["shares"]["unset_share"],
                         "novel_psi": d["checks"]["novel_share"]["psi"],
                         "mean_confidence": [d["checks"]["mean_confidence"]["reference"],
                                             d["checks"]["mean_confidence"]["current"]]}
    return {"random_halves": {**summary(quiet), "values_psi_before_fix": old_psi},
            "injected_template": summary(injected)}


def stat(values: list[float | None]) -> dict[str, Any]:
    xs = [v for v in values if v is not None]
    return {"mean": mean(xs), "std": pstdev(xs), "min": min(xs), "max": max(xs), "n": len(xs)} if xs else {"n": 0}


def fmt(s: dict[str, Any]) -> str:
    return "-" if not s.get("n") else f"{s['mean']:.3f} ± {s['std']:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", choices=sorted(DATASETS), required=True)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--budget", type=int, default=30)
    ap.add_argument("--holdout", type=float, default=0.5)
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--work", type=Path, default=None, help="keep the runs here (default: a temporary folder)")
    args = ap.parse_args()
    import tempfile

    name = args.dataset
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"loop-{name}-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        data, answers, base, events, _truth = prepare(name, work)
        runs = []
        for arm in args.arms.split(","):
            for seed in range(args.seeds):
                run = run_loop(name, arm, seed, work, data, answers, base, args)
                if arm == "novelty":
                    run["drift"] = drift_checks(name, run, events, seed)
                runs.append(run)
                print(f"{name} {arm} seed {seed}: {run['wall_s']} s, final macro-F1 "
                      f"{run['rounds'][-1]['holdout']['macro_f1']}", flush=True)
    table = summarise(name, runs, args)
    elapsed = round(time.perf_counter() - started, 1)
    out = REPO / "bench" / "results" / f"loop_{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"experiment": "loop_experiment", "dataset": name, "data": DATASETS[name]["file"],
              "label": DATASETS[name]["label"], "seeds": args.seeds, "rounds": args.rounds, "budget": args.budget,
              "holdout": args.holdout, "date": datetime.now(UTC).isoformat(timespec="seconds"),
              "machine": {"python": platform.python_version(), "platform": platform.platform(),
                          "cpus": os.cpu_count(), "load_avg_at_end": os.getloadavg()},
              "elapsed_s": elapsed, "table": table, "runs": runs}
    out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    out.with_suffix(".txt").write_text(table["text"] + f"\nwall time {elapsed} s (nice -n 10)\n")
    print(table["text"])
    print(f"wrote {out} in {elapsed} s")


def summarise(name: str, runs: list[dict[str, Any]], args: Any) -> dict[str, Any]:
    arms = sorted({r["arm"] for r in runs}, key=list(ARMS).index)
    per: dict[str, list[dict[str, Any]]] = {}
    lines = [f"{name}: holdout {args.holdout}, {args.rounds} rounds x {args.budget} reviews, "
             f"{args.seeds} seeds, mean ± std over seeds", ""]
    for arm in arms:
        rs = [r for r in runs if r["arm"] == arm]
        rows = []
        lines.append(f"[{arm}] round  reviewed  macro-F1 (pool classes)  accuracy  coverage  "
                     "unseen-class lines abstained/novel  novel share  agreement")
        for i in range(len(rs[0]["rounds"])):
            at = [r["rounds"][i] for r in rs]
            row = {"round": i, "reviewed": at[0]["reviewed"],
                   "macro_f1": stat([a["holdout"]["macro_f1"] for a in at]),
                   "accuracy": stat([a["holdout"]["accuracy"] for a in at]),
                   "coverage": stat([a["holdout"]["coverage"] for a in at]),
                   "unseen_handled": stat([a["holdout"]["unseen_abstained_or_novel"] for a in at]),
                   "unseen_lines": stat([a["holdout"]["unseen_class_lines"] for a in at]),
                   "classes_scored": stat([a["holdout"]["classes_scored"] for a in at]),
                   "novel_share": stat([a["novel_share"] for a in at]),
                   "agreement": stat([(a["agreement"] or {}).get("share") for a in at])}
            rows.append(row)
            lines.append(f"        {i:<5}  {row['reviewed']:<8}  {fmt(row['macro_f1']):<23}  "
                         f"{fmt(row['accuracy'])}  {fmt(row['coverage'])}  "
                         f"{fmt(row['unseen_handled'])} of {fmt(row['unseen_lines'])} lines".ljust(0) +
                         f"  {fmt(row['novel_share'])}  {fmt(row['agreement'])}")
        per[arm] = rows
        lines.append(f"        wall time per run: {fmt(stat([r['wall_s'] for r in rs]))} s")
        lines.append("")
    targets: dict[str, Any] = {}
    final = per["novelty"][-1] if "novelty" in per else None
    if final:
        targets["macro_f1_at_150"] = final["macro_f1"]
        targets["unseen_handled_at_150"] = final["unseen_handled"]
    def at(arm: str, reviewed: int) -> int | None:
        # The round where the arm had reviewed `reviewed` items (each arm counted on its own).
        return next((i for i, r in enumerate(per.get(arm, [])) if r["reviewed"] >= reviewed), None)

    for base in ("random", "random-dedup"):
        ours_i, theirs_i = at("novelty", 60), at(base, 60)
        if ours_i is not None and theirs_i is not None:
            ours = [r["rounds"][ours_i]["holdout"]["macro_f1"] for r in runs if r["arm"] == "novelty"]
            theirs = [r["rounds"][theirs_i]["holdout"]["macro_f1"] for r in runs if r["arm"] == base]
            targets[f"ratio_at_60_vs_{base}"] = {
                "novelty": fmt(stat(ours)), base: fmt(stat(theirs)),
                "ratio_of_means": round(mean(ours) / mean(theirs), 3) if mean(theirs) else None}
    drifts = [r["drift"] for r in runs if "drift" in r]
    if drifts:
        targets["drift_random_halves_quiet"] = [not d["random_halves"]["drifted"] for d in drifts]
        targets["drift_random_halves_values_psi"] = stat([d["random_halves"]["values_psi"] for d in drifts])
        targets["drift_random_halves_values_psi_before_fix"] = stat(
            [d["random_halves"]["values_psi_before_fix"] for d in drifts])
        targets["drift_injected_fires"] = [d["injected_template"]["drifted"] for d in drifts]
        targets["drift_injected_fired_checks"] = [d["injected_template"]["fired"] for d in drifts]
        targets["drift_injected_novel_share"] = [d["injected_template"]["novel_share"] for d in drifts]
    lines.append("targets:")
    for k, v in targets.items():
        lines.append(f"  {k}: {v if not isinstance(v, dict) or 'mean' not in v else fmt(v)}")
    return {"per_arm": per, "targets": targets, "text": "\n".join(lines)}


if __name__ == "__main__":
    main()
