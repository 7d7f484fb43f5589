"""One table of `loop_experiment.py --dataset dev:...` results, per variant of the loop's code.

    .venv/bin/python bench/loop_dev_summary.py NAME=DIR[:RANDOM_DIR] ...

Each DIR holds the `loop_dev_*.json` one variant's runs wrote (the dev datasets, never the
reported HDFS / Thunderbird / BGL); RANDOM_DIR, when given, is where that variant's `random`
arm was run (a variant that changes only the novelty strategy reuses another's random arm).
Per dataset and variant: the novelty arm's holdout macro-F1 at 150, 30 and 60 reviews, the
random arm's at 60, their ratio, the share of unseen-class lines abstained or flagged, and the
share of lines of reviewed templates flagged novel (false novel); means over seeds. Writes
bench/results/loop_dev.json and .txt.
"""

from __future__ import annotations

import sys
from pathlib import Path
from statistics import mean
from typing import Any

import orjson

REPO = Path(__file__).resolve().parents[1]


def _at(runs: list[dict[str, Any]], arm: str, i: int, key: str) -> float | None:
    xs = [r["rounds"][i]["holdout"][key] for r in runs if r["arm"] == arm and r["rounds"][i]["holdout"][key] is not None]
    return mean(xs) if xs else None


def summarise(path: Path, random_path: Path) -> dict[str, Any]:
    runs = orjson.loads(path.read_bytes())["runs"]
    rnd = orjson.loads(random_path.read_bytes())["runs"]
    n60, r60 = _at(runs, "novelty", 2, "macro_f1"), _at(rnd, "random", 2, "macro_f1")
    return {"f1_150": _at(runs, "novelty", -1, "macro_f1"), "f1_30": _at(runs, "novelty", 1, "macro_f1"),
            "f1_60": n60, "random_60": r60, "ratio_60": n60 / r60 if n60 is not None and r60 else None,
            "unseen_handled": _at(runs, "novelty", -1, "unseen_abstained_or_novel"),
            "false_novel": mean(r["templates"]["seen"]["flagged_share"] or 0.0 for r in runs if r["arm"] == "novelty"),
            "seeds": sum(1 for r in runs if r["arm"] == "novelty")}


def main() -> None:
    variants: dict[str, tuple[Path, Path]] = {}
    for arg in sys.argv[1:]:
        name, _, dirs = arg.partition("=")
        own, _, rnd = dirs.partition(":")
        variants[name] = (Path(own), Path(rnd or own))
    if not variants:
        raise SystemExit(__doc__)
    names = sorted({p.name for own, _ in variants.values() for p in own.glob("loop_dev_*.json")})
    table: dict[str, dict[str, Any]] = {}
    keys = ("f1_150", "f1_30", "f1_60", "random_60", "ratio_60", "unseen_handled", "false_novel")
    heads = ("F1@150", "F1@30", "F1@60", "rnd@60", "ratio", "unseen ok", "false nov")
    lines = ["dataset".ljust(20) + "".join(f" | {v:<70}" for v in variants),
             " " * 20 + "".join(" | " + "".join(f"{h:<10}" for h in heads) for _ in variants)]
    for name in names:
        dataset = name[len("loop_dev_"):-len(".json")]
        row = f"{dataset:<20}"
        for v, (own, rnd) in variants.items():
            if not (own / name).is_file() or not (rnd / name).is_file():
                row += " | " + " " * 70
                continue
            s = table.setdefault(dataset, {})[v] = summarise(own / name, rnd / name)
            row += " | " + "".join(f"{'-' if s[k] is None else format(s[k], '.3f' if k != 'false_novel' else '.4f'):<10}"
                                   for k in keys)
        lines.append(row)
    row = f"{'mean':<20}"
    for v in variants:
        got = [t[v] for t in table.values() if v in t]
        means = {k: mean(x) if (x := [g[k] for g in got if g[k] is not None]) else float("nan") for k in keys}
        row += " | " + "".join(f"{format(means[k], '.3f' if k != 'false_novel' else '.4f'):<10}" for k in keys)
    lines.append(row)
    text = "\n".join(lines)
    out = REPO / "bench" / "results" / "loop_dev.json"
    out.write_bytes(orjson.dumps({"variants": {v: [str(p) for p in ps] for v, ps in variants.items()}, "table": table},
                                 option=orjson.OPT_INDENT_2))
    out.with_suffix(".txt").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
