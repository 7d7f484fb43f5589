"""The zoo section of `python -m bench.run`: paired ratios of every engine path vs the hand-written labelers.

Per policy: agreement first (label, label_batch, label_exact; a policy that
disagrees is reported and not timed), then

- `label()` vs the hand-written labeler, per event, paired (measure.throughput);
- `label_batch()` at 4,096 vs the hand-written per-event loop, paired;
- events that record a rule error (read an absent field or label, or a wrong
  type: `stats().rule_errors` grows while labeling them) vs events that record
  none: the cost per event of `label()` on each set, paired, as a ratio;
- `activelabel label FILE -o OUT` vs bench/zoo/e2e_hand.py, child processes
  pinned to one core (bench/e2e.py's run_child), alternating order; outputs
  compared line by line.

The worst case over the zoo is the minimum ratio (the maximum for the
missing-field cost), each next to the issue 9 target.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from bench import e2e, measure
from bench.zoo import FIXED_NOW, NAMES, agreement, build, module

BATCH = 4096
TARGETS = {
    "label": ("label() ≥ 0.9× hand-written", 0.9, False),
    "batch": ("label_batch(4096) ≥ 4× hand-written loop", 4.0, False),
    "dirty": ("events with rule errors ≤ 1.5× the cost of events without", 1.5, True),
    "cli": ("activelabel label ≥ 1.5× hand-written orjson script (one worker)", 1.5, False),
    "cli2": ("activelabel label --workers 2 ≥ 2.5× hand-written script", 2.5, False),
}


def _workers_flag() -> bool:
    exe = Path(sys.executable).parent / "activelabel"
    help_text = subprocess.run([str(exe), "label", "--help"], capture_output=True, text=True, check=False).stdout
    return "--workers" in help_text


def _split_by_errors(lab: Any, evs: list[dict]) -> tuple[list[dict], list[dict]]:
    clean, dirty = [], []
    before = sum(lab.stats().rule_errors.values())
    for e in evs:
        lab.label(e)
        after = sum(lab.stats().rule_errors.values())
        (dirty if after > before else clean).append(e)
        before = after
    return clean, dirty


def _paired_per_event(fa: Any, a: list[dict], fb: Any, b: list[dict], repeats: int) -> float:
    """Median over paired repeats of (µs per event on `b`) / (µs per event on `a`)."""
    ra = measure.make_runner(fa, None, a, min_events=BATCH)
    rb = measure.make_runner(fb, None, b, min_events=BATCH)
    ra(), rb()
    ratios = []
    for r in range(repeats):
        ta, tb = (ra(), rb()) if r % 2 == 0 else tuple(reversed((rb(), ra())))
        ratios.append((tb / len(b)) / (ta / len(a)))
    return statistics.median(ratios)


def run_policy(name: str, n_events: int, repeats: int, e2e_records: int, e2e_repeats: int, workers2: bool) -> dict:
    agree = agreement(name, n_events, seed=1)  # the very events timed below
    out: dict = {"agreement": {"events": agree.events, "differ": agree.differ,
                               "examples": [repr(x)[:400] for ex in agree.examples.values() for x in ex][:3]}}
    if not agree.ok:
        out["excluded"] = True
        return out
    evs = module(name).events(n_events, seed=1)
    with tempfile.TemporaryDirectory(prefix=f"zoo-bench-{name}-") as tmp:
        d = Path(tmp)
        lab, hand = build(name, d)
        label = lab.label
        tp = measure.throughput(measure.make_runner(label, None, evs), len(evs), repeats,
                                baseline=measure.make_runner(hand, None, evs))
        out["label"] = {"ratio": tp.ratio_to_baseline, "events_per_s": tp.events_per_s,
                        "hand_events_per_s": tp.baseline_events_per_s}
        tb = measure.throughput(measure.make_runner(None, lab.label_batch, evs, BATCH), len(evs), repeats,
                                baseline=measure.make_runner(hand, None, evs))
        out["batch"] = {"ratio": tb.ratio_to_baseline, "events_per_s": tb.events_per_s,
                        "columnar": lab.columnar_plan() is not None}
        clean, dirty = _split_by_errors(lab, evs)
        out["dirty"] = {"share": len(dirty) / len(evs), "ratio": None}
        if clean and dirty:
            out["dirty"]["ratio"] = _paired_per_event(label, clean, label, dirty, repeats)
            out["dirty"]["hand_ratio"] = _paired_per_event(hand, clean, hand, dirty, repeats)
        # End to end: a file of real-sized records, both commands as children on one core.
        src = d / "events.jsonl"
        with open(src, "wb") as f:
            for i in range(0, e2e_records, 8192):
                f.write(b"".join(orjson.dumps(e) + b"\n" for e in module(name).events(min(8192, e2e_records - i), seed=100 + i)))
        exe = Path(sys.executable).parent / "activelabel"
        o_al, o_hw = d / "out-al.jsonl", d / "out-hw.jsonl"
        cmds = {"al": [str(exe), "label", "--policy", str(d / "policy.yaml"), str(src), "-o", str(o_al), "-q", "--clearance", "secret"],
                "hw": [sys.executable, str(Path(__file__).with_name("e2e_hand.py")), name, str(d), str(src), "-o", str(o_hw)]}
        if workers2:
            cmds["al2"] = [*cmds["al"], "--workers", "2"]
        runs: dict[str, list] = {k: [] for k in cmds}
        err = ""
        for r in range(e2e_repeats):
            order = list(cmds) if r % 2 == 0 else list(reversed(cmds))
            for k in order:
                run = e2e.run_child(cmds[k], pin_cpu=None if k == "al2" else 0)
                if run.returncode:
                    err = f"{k} exited {run.returncode}: {run.stderr_tail[-300:]}"
                runs[k].append(run)
        na, nb, diff = e2e.compare_outputs(o_al, o_hw)
        out["cli"] = {"records": e2e_records, "error": err, "outputs_differ": diff + abs(na - nb),
                      "ratio": None if err else statistics.median(h.wall_s / a.wall_s for a, h in zip(runs["al"], runs["hw"], strict=True)),
                      "al_records_per_s": e2e_records / statistics.median(r.wall_s for r in runs["al"]),
                      "hw_records_per_s": e2e_records / statistics.median(r.wall_s for r in runs["hw"]),
                      "cpu_ratio": statistics.median(r.cpu_s for r in runs["hw"]) / statistics.median(r.cpu_s for r in runs["al"])}
        if workers2 and not err:
            out["cli2"] = {"ratio": statistics.median(h.wall_s / a.wall_s for a, h in zip(runs["al2"], runs["hw"], strict=True))}
    return out


def worst(res: dict) -> dict:
    """Per target: the worst policy and its figure (min ratio; max for the missing-field cost)."""
    out = {}
    for k, (text, want, lower) in TARGETS.items():
        figs = {n: p[k]["ratio"] for n, p in res["policies"].items() if p.get(k, {}).get("ratio") is not None}
        if not figs:
            out[k] = {"target": text, "want": want, "got": None, "policy": None, "lower": lower, "met": None}
            continue
        pol = (max if lower else min)(figs, key=figs.__getitem__)
        got = figs[pol]
        out[k] = {"target": text, "want": want, "got": got, "policy": pol, "lower": lower,
                  "met": got <= want if lower else got >= want}
    return out


def section(quick: bool, console: Any, names: tuple[str, ...] = NAMES) -> dict:
    from rich.table import Table

    n_events, repeats = (BATCH, 3) if quick else (4 * BATCH, 5)
    e2e_records, e2e_repeats = (10_000, 1) if quick else (50_000, 3)
    workers2 = _workers_flag()
    res: dict = {"events": n_events, "repeats": repeats, "e2e_records": e2e_records, "workers_flag": workers2,
                 "now": FIXED_NOW.isoformat(), "policies": {}}
    for name in names:
        t0 = time.perf_counter()
        res["policies"][name] = p = run_policy(name, n_events, repeats, e2e_records, e2e_repeats, workers2)
        p["seconds"] = round(time.perf_counter() - t0, 1)
    res["worst"] = worst(res)

    def fmt(x: Any, suffix: str = "×") -> str:
        return "-" if x is None else f"{x:.2f}{suffix}"

    table = Table(title=f"Policy zoo: paired ratios vs hand-written Python ({n_events:,} events, {repeats} repeats, "
                        f"medians; CLI on {e2e_records:,} records, {e2e_repeats} runs)")
    for col in ("policy", "agreement", "label()", "batch", "columnar", "err share", "err cost", "hand err",
                "CLI", "CLI -w2", "CLI labels"):
        table.add_column(col, justify="left" if col in ("policy", "agreement") else "right")
    for name, p in res["policies"].items():
        ag = p["agreement"]
        if p.get("excluded"):
            table.add_row(name, f"[red]differs {ag['differ']}: not timed[/red]", *["-"] * 9)
            continue
        c = p["cli"]
        table.add_row(name, f"identical ({ag['events']:,})", fmt(p["label"]["ratio"]), fmt(p["batch"]["ratio"]),
                      "yes" if p["batch"]["columnar"] else "no", f"{p['dirty']['share']:.0%}", fmt(p["dirty"]["ratio"]),
                      fmt(p["dirty"].get("hand_ratio")), fmt(c["ratio"]) if not c["error"] else f"[red]{c['error'][:60]}[/red]",
                      fmt(p.get("cli2", {}).get("ratio")) if workers2 else "no flag",
                      "identical" if c["outputs_differ"] == 0 else f"[red]{c['outputs_differ']} differ[/red]")
    console.print(table)
    for line in ("label(): paired ratio to the hand-written labeler (>1: faster); batch: label_batch(4096) vs the "
                 "hand-written per-event loop;",
                 "columnar: label_batch took the columnar path; err share: events that record a rule error (absent "
                 "field or label, wrong type);",
                 "err cost: label() µs/event on those vs on the rest (hand err: the same for the hand-written labeler);",
                 "CLI: `activelabel label` vs bench/zoo/e2e_hand.py, wall, one core; CLI -w2: with --workers 2 on both "
                 "cores;",
                 "CLI labels: the two output files compared record by record."):
        console.print(line, soft_wrap=True, markup=False, highlight=False)
    t2 = Table(title="Policy zoo: worst case over the zoo vs the issue 9 targets")
    for col in ("target", "worst case", "policy", "met"):
        t2.add_column(col, justify="left" if col in ("target", "policy") else "right")
    for w in res["worst"].values():
        met = "-" if w["met"] is None else ("[green]yes[/green]" if w["met"] else "[red]no[/red]")
        t2.add_row(w["target"], fmt(w["got"]), w["policy"] or ("no --workers flag" if w is res["worst"]["cli2"] and not workers2 else "-"), met)
    console.print(t2)
    return res
