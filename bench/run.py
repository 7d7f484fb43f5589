"""The benchmark suite: activelabel vs hand-written Python vs the rule engines, in one run.

    .venv/bin/python -m bench.run            # full run (a few minutes)
    .venv/bin/python -m bench.run --quick    # smaller counts, under a minute or so
    .venv/bin/python bench/run.py --only peers,scaling

Sections (all by default):

- peers     40-rule policy: every engine labels the same events; labels are
            checked identical to the hand-written baseline first (an engine that
            disagrees is reported with the count and left out of the timings);
            then events/s (median of repeats), ratio to the hand-written baseline
            measured pair by pair, p50/p99 per-event latency.
- batch     `label_batch` in batches of 4,096 vs the hand-written per-event loop.
- scaling   40 → 200 → 1,000 rules: cost per event and its ratio to 40.
- e2e       `activelabel label` on a JSONL file vs bench/handwritten_e2e.py,
            records/s, MB/s, peak memory; peak memory on a 10× bigger file.
- ceilings  what parsing, serialising and building a Polars frame cost per event.
- zoo       the policy zoo (bench/zoo/): eight realistic policies with enrichers,
            guards, buckets, vote / max_confidence, models and messy events;
            per policy and worst case, the paired ratios of label(),
            label_batch() and the CLI vs hand-written Python (issue 9).

Results print as tables and are written to bench/results/<date>-<name>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # `python bench/run.py`: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson
from rich.console import Console
from rich.table import Table

from bench import e2e, measure
from bench.engines import Engine, build_engines
from bench.events import generate_events, write_jsonl
from bench.policies import policy_spec, write_policy

RESULTS = Path(__file__).resolve().parent / "results"
SECTIONS = ("peers", "batch", "scaling", "e2e", "ceilings", "zoo")
BATCH_SIZE = 4096


@dataclass
class Config:
    events: int            # events for fast engines (a multiple of BATCH_SIZE)
    repeats: int
    latency_samples: int
    per_speed: dict        # speed class -> events for slower engines
    scaling_events: int    # events per policy size for the fast engines (1,000 rules can be slow)
    scaling_peer_events: int
    e2e_records: int
    e2e_repeats: int
    memory_records: tuple[int, ...]
    batch_sizes: tuple[int, ...] = (BATCH_SIZE,)
    slow_repeats: int = 3      # repeats for the slow peers (their runs take seconds)
    run_seconds: float = 1.5   # a timed run longer than this gets fewer events (slow engines at 1,000 rules)

    @classmethod
    def for_mode(cls, quick: bool) -> Config:
        if quick:
            return cls(events=2 * BATCH_SIZE, repeats=3, latency_samples=5000,
                       per_speed={"medium": 1000, "slow": 200, "slowest": 60},
                       scaling_events=BATCH_SIZE, scaling_peer_events=0, e2e_records=50_000, e2e_repeats=1,
                       memory_records=())
        return cls(events=8 * BATCH_SIZE, repeats=5, latency_samples=20_000,
                   per_speed={"medium": 3000, "slow": 1000, "slowest": 200},
                   scaling_events=2 * BATCH_SIZE, scaling_peer_events=200, e2e_records=200_000, e2e_repeats=3,
                   memory_records=(100_000, 1_000_000), batch_sizes=(BATCH_SIZE, 8 * BATCH_SIZE), slow_repeats=5)


def machine_info() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=RESULTS.parent.parent, check=False).stdout.strip()
    except OSError:
        commit = ""
    return {
        "nproc": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu": cpu,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "git_commit": commit,
    }


def _budget(n: int, seconds_for_n: float, run_seconds: float) -> int:
    """Events to time so that one run takes about `run_seconds` (never more than `n`, at least one batch)."""
    if seconds_for_n <= run_seconds:
        return n
    fit = int(n * run_seconds / seconds_for_n)
    return max(min(n, BATCH_SIZE), fit - fit % BATCH_SIZE if fit >= BATCH_SIZE else fit)


def check_agreement(engine: Engine, reference: list[dict], events: list[dict]) -> int:
    """How many of `events` the engine labels differently from the reference labels."""
    got = engine.label_many(events) if engine.label_many else [engine.label(e) for e in events]
    return sum(1 for a, b in zip(got, reference) if a != b)


def _fmt_rate(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x / 1e3:,.1f}k" if x < 1e6 else f"{x / 1e6:,.2f}M"


def _fmt_ratio(x: float | None) -> str:
    return "-" if x is None else (f"{x:.2f}×" if x >= 0.1 else f"{x:.4f}×")


# --- sections ------------------------------------------------------------------------


def section_peers(cfg: Config, console: Console, policies: dict[int, Path], events: list[dict]) -> dict:
    spec = policy_spec(40)
    engines, missing = build_engines(spec, policies[40])
    hand = engines[0]
    reference = [hand.label(e) for e in events]
    rows, out = [], {"missing": missing, "engines": {}}
    for eng in engines:
        n = cfg.events if eng.speed == "fast" else cfg.per_speed[eng.speed]
        evs = events[:n]
        t0 = time.perf_counter()
        bad = check_agreement(eng, reference[:n], evs)
        if bad:
            out["engines"][eng.name] = {"events_checked": n, "disagreements": bad, "excluded": True}
            rows.append((eng.name, str(n), "-", "-", "-", "-", f"[red]{bad} of {n} differ: excluded[/red]"))
            continue
        repeats = cfg.repeats if eng.speed in ("fast", "medium") else cfg.slow_repeats
        run = measure.make_runner(eng.label, eng.label_many, evs, BATCH_SIZE)
        base = measure.make_runner(hand.label, None, evs, min_events=cfg.events)
        tp = measure.throughput(run, n, repeats, baseline=None if eng is hand else base,
                                warmup=0 if time.perf_counter() - t0 > 2 else 1)
        if eng.label_many is not None:
            lat = measure.batch_latency(eng.label_many, evs, BATCH_SIZE)
            lat_note = f"per batch of {BATCH_SIZE}"
        else:
            lat = measure.latency(eng.label, evs[: cfg.latency_samples] if eng.speed == "fast" else evs)
            lat_note = "per event"
        ratio = 1.0 if eng is hand else tp.ratio_to_baseline
        out["engines"][eng.name] = {"events_checked": n, "disagreements": 0, "excluded": False,
                                    "throughput": tp.as_dict(), "ratio_to_handwritten": ratio,
                                    "latency": lat.as_dict(), "latency_unit": lat_note}
        per_event = eng.label_many is None
        rows.append((eng.name, f"{n:,}", _fmt_rate(tp.events_per_s), _fmt_ratio(ratio),
                     f"{lat.p50_us:,.1f}" if per_event else "see batch", f"{lat.p99_us:,.1f}" if per_event else "",
                     "identical"))
    table = Table(title="40-rule / 8-label first-match policy, parsed events, one thread")
    for col in ("engine", "events", "events/s", "× hand-written (paired)", "p50 µs", "p99 µs", "labels"):
        table.add_column(col, justify="left" if col in ("engine", "labels") else "right")
    for r in rows:
        table.add_row(*r)
    console.print(table)
    for name, why in missing.items():
        console.print(f"[yellow]not run: {name}: {why}[/yellow]")
    return out


def section_batch(cfg: Config, console: Console, policies: dict[int, Path], events: list[dict]) -> dict:
    spec = policy_spec(40)
    engines, missing = build_engines(spec, policies[40], peers=())
    hand = engines[0]
    batchers = [e for e in engines if e.label_many is not None]
    if not batchers:
        console.print(f"[yellow]batch: activelabel not available: {missing}[/yellow]")
        return {"missing": missing}
    reference = [hand.label(e) for e in events]
    out: dict = {"events": len(events), "engines": {}}
    table = Table(title="Batch paths vs the hand-written per-event loop (40 rules)")
    for col in ("path", "batch size", "events/s", "× hand-written loop (paired)", "p50 per batch ms", "p99 per batch ms"):
        table.add_column(col, justify="left" if col == "path" else "right")
    base = measure.make_runner(hand.label, None, events)
    for eng in batchers:
        bad = check_agreement(eng, reference, events)
        if bad:
            out["engines"][eng.name] = {"disagreements": bad}
            table.add_row(eng.name, "-", f"[red]{bad} differ: not timed[/red]", "-", "-", "-")
            continue
        for size in cfg.batch_sizes:
            run = measure.make_runner(None, eng.label_many, events, size)
            tp = measure.throughput(run, len(events), cfg.repeats, baseline=base)
            lat = measure.batch_latency(eng.label_many, events, size)
            out["engines"].setdefault(eng.name, {})[str(size)] = {"throughput": tp.as_dict(),
                                                                 "latency_per_batch": lat.as_dict()}
            table.add_row(eng.name, f"{size:,}", _fmt_rate(tp.events_per_s), _fmt_ratio(tp.ratio_to_baseline),
                          f"{lat.p50_us / 1e3:,.2f}", f"{lat.p99_us / 1e3:,.2f}")
    table.add_row(hand.name + " loop", "-", _fmt_rate(len(events) / statistics.median(base() for _ in range(3))),
                  "1.00×", "-", "-")
    console.print(table)
    return out


def section_scaling(cfg: Config, console: Console, policies: dict[int, Path], events: list[dict]) -> dict:
    events = events[: cfg.scaling_events]
    peers = ("simpleeval", "cel-rust") if cfg.scaling_peer_events else ()
    out: dict = {}
    per_size: dict[int, dict[str, float]] = {}
    for n_rules in (40, 200, 1000):
        spec = policy_spec(n_rules)
        engines, missing = build_engines(spec, policies[n_rules], peers=peers)
        hand = engines[0]
        reference = [hand.label(e) for e in events]
        size_out: dict = {"missing": missing, "engines": {}}
        for eng in engines:
            n = len(events) if eng.speed == "fast" else cfg.scaling_peer_events
            evs = events[:n]
            t0 = time.perf_counter()
            bad = check_agreement(eng, reference[:n], evs)
            if bad:
                size_out["engines"][eng.name] = {"disagreements": bad, "events_checked": n}
                continue
            n = _budget(n, time.perf_counter() - t0, cfg.run_seconds)
            evs = events[:n]
            repeats = cfg.repeats if eng.speed == "fast" else 3
            run = measure.make_runner(eng.label, eng.label_many, evs, BATCH_SIZE)
            base = measure.make_runner(hand.label, None, evs, min_events=len(events))
            tp = measure.throughput(run, n, repeats, baseline=None if eng is hand else base)
            size_out["engines"][eng.name] = {"disagreements": 0, "events": n, "throughput": tp.as_dict(),
                                             "us_per_event": 1e6 / tp.events_per_s}
            per_size.setdefault(n_rules, {})[eng.name] = 1e6 / tp.events_per_s
        out[str(n_rules)] = size_out
    names = list(dict.fromkeys(name for sizes in per_size.values() for name in sizes))
    table = Table(title="Cost per event as the policy grows (µs per event; × cost at 40 rules)")
    table.add_column("engine")
    for n_rules in (40, 200, 1000):
        table.add_column(f"{n_rules} rules", justify="right")
    table.add_column("1,000 / 40", justify="right")
    growth = {}
    for name in names:
        cells = []
        c40 = per_size.get(40, {}).get(name)
        for n_rules in (40, 200, 1000):
            c = per_size.get(n_rules, {}).get(name)
            if c is None:
                bad = out[str(n_rules)]["engines"].get(name, {}).get("disagreements")
                cells.append(f"[red]{bad} differ[/red]" if bad else "-")
            else:
                cells.append(f"{c:,.2f}" + (f" ({c / c40:.2f}×)" if c40 and n_rules != 40 else ""))
        c1000 = per_size.get(1000, {}).get(name)
        growth[name] = c1000 / c40 if c40 and c1000 else None
        table.add_row(name, *cells, _fmt_ratio(growth[name]))
    console.print(table)
    out["growth_1000_over_40"] = growth
    return out


def section_e2e(cfg: Config, console: Console, policies: dict[int, Path], workdir: Path) -> dict:
    src = workdir / f"events-{cfg.e2e_records}.jsonl"
    write_jsonl(src, cfg.e2e_records, seed=11)
    res = e2e.end_to_end(policies[40], 40, src, cfg.e2e_records, workdir, cfg.e2e_repeats)
    out: dict = {"run": res.as_dict(), "memory": {}}
    table = Table(title=f"End to end, one core: {cfg.e2e_records:,} records, {res.input_mb:,.0f} MB JSONL, 40 rules")
    for col in ("command", "records/s", "MB/s", "CPU s", "peak RSS MB", "× hand-written (wall, paired)",
                "× hand-written (CPU)"):
        table.add_column(col, justify="left" if col == "command" else "right")
    if res.error:
        console.print(f"[red]e2e failed: {res.error}[/red]")
    else:
        table.add_row("activelabel label", _fmt_rate(res.activelabel_records_per_s), f"{res.activelabel_mb_per_s:,.1f}",
                      f"{res.activelabel_cpu_s:,.2f}", f"{res.activelabel_max_rss_mb:,.0f}", _fmt_ratio(res.ratio),
                      _fmt_ratio(res.cpu_ratio))
        table.add_row("hand-written orjson script", _fmt_rate(res.handwritten_records_per_s),
                      f"{res.handwritten_mb_per_s:,.1f}", f"{res.handwritten_cpu_s:,.2f}",
                      f"{res.handwritten_max_rss_mb:,.0f}", "1.00×", "1.00×")
        if res.columnar_records_per_s:
            table.add_row("columnar file-mode prototype", _fmt_rate(res.columnar_records_per_s),
                          f"{res.input_mb * res.columnar_records_per_s / res.records:,.1f}", f"{res.columnar_cpu_s:,.2f}",
                          f"{res.columnar_max_rss_mb:,.0f}", _fmt_ratio(res.columnar_ratio),
                          _fmt_ratio(res.handwritten_cpu_s / res.columnar_cpu_s))
        console.print(table)
        note = "identical" if res.outputs_differ == 0 else f"[red]{res.outputs_differ} records differ[/red]"
        console.print(f"labels in the two outputs: {note} (records {res.output_records[0]:,} / {res.output_records[1]:,})")
        if res.columnar_records_per_s:
            cnote = "identical" if res.columnar_outputs_differ == 0 else f"[red]{res.columnar_outputs_differ} differ[/red]"
            console.print(f"columnar prototype (bench/columnar_e2e.py, not the CLI) labels vs hand-written: {cnote}")
    src.unlink(missing_ok=True)
    if cfg.memory_records and not res.error:
        mem = Table(title="Peak memory of `activelabel label` vs input size")
        for col in ("records", "input MB", "peak RSS MB", "records/s"):
            mem.add_column(col, justify="right")
        for n in cfg.memory_records:
            path = workdir / f"mem-{n}.jsonl"
            size = write_jsonl(path, n, seed=13)
            run = e2e.peak_memory(policies[40], path, workdir)
            path.unlink(missing_ok=True)
            out["memory"][str(n)] = {"input_mb": size / 1e6, "max_rss_mb": run.max_rss_mb, "wall_s": run.wall_s,
                                     "returncode": run.returncode}
            mem.add_row(f"{n:,}", f"{size / 1e6:,.0f}", f"{run.max_rss_mb:,.0f}",
                        _fmt_rate(n / run.wall_s) if run.returncode == 0 else f"[red]exit {run.returncode}[/red]")
        console.print(mem)
    return out


def section_ceilings(cfg: Config, console: Console, events: list[dict]) -> dict:
    import polars as pl

    lines = [orjson.dumps(e) for e in events]
    blob = b"\n".join(lines)
    out: dict = {}

    def per_event(fn, n) -> float:
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
        return best / n * 1e6

    loads, dumps = orjson.loads, orjson.dumps
    out["orjson_loads_us"] = per_event(lambda: [loads(x) for x in lines], len(lines))
    out["orjson_dumps_us"] = per_event(lambda: [dumps(x) for x in events], len(events))
    out["polars_frame_from_dicts_us"] = per_event(lambda: pl.DataFrame(events, infer_schema_length=None), len(events))
    out["polars_read_ndjson_us"] = per_event(lambda: pl.read_ndjson(blob, infer_schema_length=None), len(events))
    table = Table(title="Reference costs per event (best of 3)")
    table.add_column("operation")
    table.add_column("µs / event", justify="right")
    for k, label in (("orjson_loads_us", "orjson.loads of one ~600-byte line"),
                     ("orjson_dumps_us", "orjson.dumps of one event dict"),
                     ("polars_frame_from_dicts_us", "pl.DataFrame(list of nested dicts)"),
                     ("polars_read_ndjson_us", "pl.read_ndjson(JSONL bytes)")):
        table.add_row(label, f"{out[k]:.2f}")
    console.print(table)
    return out


# --- targets -------------------------------------------------------------------------


def targets(res: dict) -> list[dict]:
    """Each target of issue #3 next to the measured figure."""
    rows: list[dict] = []
    peers = res.get("peers", {}).get("engines", {})

    def ratio(name: str) -> float | None:
        return (peers.get(name) or {}).get("ratio_to_handwritten")

    al = ratio("activelabel label()")
    rows.append({"target": "label() ≥ 0.9× hand-written (40 rules)", "want": 0.9, "got": al})
    for peer, want in (("simpleeval", 20), ("rule-engine", 100), ("cel-python", 100),
                       ("common-expression-language (Rust)", 100)):
        p = ratio(peer)
        rows.append({"target": f"label() ≥ {want}× {peer}", "want": want,
                     "got": al / p if al and p else None})
    for name, figures in res.get("batch", {}).get("engines", {}).items():
        b = figures.get(str(BATCH_SIZE), {}).get("throughput", {}).get("ratio_to_baseline")
        rows.append({"target": f"{name} (batch {BATCH_SIZE}) ≥ 4× hand-written loop", "want": 4, "got": b})
    run = res.get("e2e", {}).get("run", {})
    rows.append({"target": "activelabel label ≥ 1.5× hand-written orjson script (one core)", "want": 1.5,
                 "got": run.get("ratio") or None})
    rows.append({"target": "activelabel label ≥ 200k records/s", "want": 200_000,
                 "got": run.get("activelabel_records_per_s") or None})
    if run.get("columnar_ratio"):
        rows.append({"target": "(prototype, not the CLI) columnar file mode ≥ 1.5× hand-written script", "want": 1.5,
                     "got": run.get("columnar_ratio")})
        rows.append({"target": "(prototype, not the CLI) columnar file mode ≥ 200k records/s", "want": 200_000,
                     "got": run.get("columnar_records_per_s")})
    mem = res.get("e2e", {}).get("memory", {})
    if len(mem) >= 2:
        small, big = (mem[k]["max_rss_mb"] for k in sorted(mem, key=int)[:: len(mem) - 1])
        rows.append({"target": "peak memory flat in input size (largest / smallest file)", "want": 1.25,
                     "got": big / small, "lower_is_better": True})
    g = res.get("scaling", {}).get("growth_1000_over_40", {}).get("activelabel label()")
    rows.append({"target": "1,000 rules ≤ 5× the per-event cost of 40 (label())", "want": 5, "got": g,
                 "lower_is_better": True})
    for w in res.get("zoo", {}).get("worst", {}).values():
        rows.append({"target": f"zoo worst case: {w['target']}" + (f" ({w['policy']})" if w["policy"] else ""),
                     "want": w["want"], "got": w["got"], "lower_is_better": w["lower"]})
    for r in rows:
        got, want = r["got"], r["want"]
        r["met"] = None if got is None else (got <= want if r.get("lower_is_better") else got >= want)
    return rows


def print_targets(console: Console, rows: list[dict]) -> None:
    table = Table(title="Issue #3 targets")
    for col in ("target", "measured", "met"):
        table.add_column(col, justify="left" if col == "target" else "right")
    for r in rows:
        got = r["got"]
        text = "-" if got is None else (_fmt_rate(got) + "/s" if r["want"] >= 1000 else f"{got:,.2f}×")
        met = "-" if r["met"] is None else ("[green]yes[/green]" if r["met"] else "[red]no[/red]")
        table.add_row(r["target"], text, met)
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller counts (about a minute)")
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections of {SECTIONS}")
    ap.add_argument("--name", default=None, help="results file suffix (default: quick or full)")
    ap.add_argument("--no-save", action="store_true", help="print only, write no results file")
    args = ap.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(only) - set(SECTIONS)
    if unknown:
        ap.error(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")

    cfg = Config.for_mode(args.quick)
    console = Console(width=None if sys.stdout.isatty() else 150)
    started = time.perf_counter()
    now = dt.datetime.now(dt.UTC)
    results: dict = {"date": now.isoformat(timespec="seconds"), "mode": "quick" if args.quick else "full",
                     "loadavg_start": os.getloadavg(),
                     "machine": machine_info(), "config": cfg.__dict__, "sections": only}
    m = results["machine"]
    console.print(f"[bold]activelabel bench[/bold] {results['date']}  {m['cpu']}  nproc={m['nproc']}  "
                  f"Python {m['python']}  commit {m['git_commit']}")
    events = generate_events(cfg.events, seed=1)
    with tempfile.TemporaryDirectory(prefix="activelabel-bench-") as tmp:
        workdir = Path(tmp)
        policies = {n: write_policy(policy_spec(n), workdir) for n in (40, 200, 1000)}
        for section in SECTIONS:
            if section not in only:
                continue
            t0 = time.perf_counter()
            console.rule(section)
            if section == "peers":
                results["peers"] = section_peers(cfg, console, policies, events)
            elif section == "batch":
                results["batch"] = section_batch(cfg, console, policies, events)
            elif section == "scaling":
                results["scaling"] = section_scaling(cfg, console, policies, events)
            elif section == "e2e":
                results["e2e"] = section_e2e(cfg, console, policies, workdir)
            elif section == "ceilings":
                results["ceilings"] = section_ceilings(cfg, console, events)
            elif section == "zoo":
                from bench.zoo import bench as zoo_bench

                results["zoo"] = zoo_bench.section(args.quick, console)
            results.setdefault("section_seconds", {})[section] = round(time.perf_counter() - t0, 1)
    results["targets"] = targets(results)
    console.rule("targets")
    print_targets(console, results["targets"])
    results["total_seconds"] = round(time.perf_counter() - started, 1)
    results["loadavg_end"] = os.getloadavg()
    console.print(f"total {results['total_seconds']:.0f} s; load average at start "
                  f"{results['loadavg_start'][0]:.2f}, at end {results['loadavg_end'][0]:.2f} "
                  f"(other processes running make absolute figures noisy; paired ratios less so)")
    if not args.no_save:
        RESULTS.mkdir(exist_ok=True)
        path = RESULTS / f"{now.date().isoformat()}-{args.name or results['mode']}.json"
        path.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
        console.print(f"results written to {path.relative_to(RESULTS.parent.parent)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
