"""Render a results file of `bench.run` as Markdown tables (for docs/performance.md).

    .venv/bin/python -m bench.report bench/results/2026-11-27-full.json
"""

from __future__ import annotations

import sys
from pathlib import Path

import orjson


def _rate(x: float | None) -> str:
    if not x:
        return "-"
    return f"{x / 1e3:,.1f}k" if x < 1e6 else f"{x / 1e6:,.2f}M"


def _ratio(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.2f}×" if x >= 0.1 else f"{x:.4f}×"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def render(res: dict) -> str:
    out: list[str] = []
    m = res["machine"]
    out.append(f"Run {res['date']} ({res['mode']}), {m['cpu']}, nproc={m['nproc']}, Python {m['python']}, "
               f"commit {m['git_commit']}, load average {res['loadavg_start'][0]:.2f} at start and "
               f"{res['loadavg_end'][0]:.2f} at end, {res['total_seconds']:.0f} s in all.")
    if "peers" in res:
        rows = []
        for name, e in res["peers"]["engines"].items():
            if e.get("excluded"):
                rows.append([name, str(e["events_checked"]), "-", "-", "-", "-", f"{e['disagreements']} differ: excluded"])
                continue
            tp, lat = e["throughput"], e["latency"]
            per_event = e["latency_unit"] == "per event"
            rows.append([name, f"{tp['events']:,}", _rate(tp["events_per_s"]), _ratio(e["ratio_to_handwritten"]),
                         f"{lat['p50_us']:,.1f}" if per_event else "-", f"{lat['p99_us']:,.1f}" if per_event else "-",
                         "identical"])
        out.append("\n### 40-rule policy, parsed events, one thread\n")
        out.append(_table(["engine", "events timed", "events/s", "× hand-written (paired)", "p50 µs", "p99 µs",
                           "labels vs hand-written"], rows))
    if "batch" in res and "engines" in res["batch"]:
        rows = []
        for name, sizes in res["batch"]["engines"].items():
            if "disagreements" in sizes:
                rows.append([name, "-", f"{sizes['disagreements']} differ", "-", "-", "-"])
                continue
            for size, f in sizes.items():
                tp, lat = f["throughput"], f["latency_per_batch"]
                rows.append([name, f"{int(size):,}", _rate(tp["events_per_s"]), _ratio(tp["ratio_to_baseline"]),
                             f"{lat['p50_us'] / 1e3:,.2f}", f"{lat['p99_us'] / 1e3:,.2f}"])
        out.append("\n### Batch paths vs the hand-written per-event loop (40 rules)\n")
        out.append(_table(["path", "batch size", "events/s", "× hand-written loop (paired)", "p50 ms / batch",
                           "p99 ms / batch"], rows))
    if "scaling" in res:
        sc = res["scaling"]
        names = list(dict.fromkeys(n for size in ("40", "200", "1000") for n in sc.get(size, {}).get("engines", {})))
        rows = []
        for name in names:
            cells = [name]
            base = sc.get("40", {}).get("engines", {}).get(name, {}).get("us_per_event")
            for size in ("40", "200", "1000"):
                e = sc.get(size, {}).get("engines", {}).get(name, {})
                if "us_per_event" in e:
                    c = e["us_per_event"]
                    cells.append(f"{c:,.2f}" + (f" ({c / base:.2f}×)" if base and size != "40" else ""))
                else:
                    cells.append(f"{e['disagreements']} differ" if e.get("disagreements") else "-")
            cells.append(_ratio(sc.get("growth_1000_over_40", {}).get(name)))
            rows.append(cells)
        out.append("\n### Cost per event as the policy grows (µs per event)\n")
        out.append(_table(["engine", "40 rules", "200 rules", "1,000 rules", "1,000 / 40"], rows))
    if "e2e" in res and res["e2e"].get("run"):
        r = res["e2e"]["run"]
        out.append(f"\n### End to end on one core: {r['records']:,} records, {r['input_mb']:,.0f} MB of JSONL, 40 rules\n")
        if r.get("error"):
            out.append(f"failed: {r['error']}")
        else:
            out.append(_table(["command", "records/s", "MB/s", "CPU s", "peak RSS MB", "× hand-written (wall)",
                               "× hand-written (CPU)"], [
                ["`activelabel label`", _rate(r["activelabel_records_per_s"]), f"{r['activelabel_mb_per_s']:,.1f}",
                 f"{r['activelabel_cpu_s']:,.2f}", f"{r['activelabel_max_rss_mb']:,.0f}", _ratio(r["ratio"]),
                 _ratio(r.get("cpu_ratio"))],
                ["hand-written orjson script", _rate(r["handwritten_records_per_s"]),
                 f"{r['handwritten_mb_per_s']:,.1f}", f"{r['handwritten_cpu_s']:,.2f}",
                 f"{r['handwritten_max_rss_mb']:,.0f}", "1.00×", "1.00×"],
            ]))
            if r.get("columnar_records_per_s"):
                out.append(f"| columnar file-mode prototype (`bench/columnar_e2e.py`, not the CLI) | "
                           f"{_rate(r['columnar_records_per_s'])} | "
                           f"{r['input_mb'] * r['columnar_records_per_s'] / r['records']:,.1f} | "
                           f"{r['columnar_cpu_s']:,.2f} | {r['columnar_max_rss_mb']:,.0f} | "
                           f"{_ratio(r['columnar_ratio'])} | {_ratio(r['handwritten_cpu_s'] / r['columnar_cpu_s'])} |")
            out.append(f"\nLabels in the two outputs: {'identical' if r['outputs_differ'] == 0 else str(r['outputs_differ']) + ' records differ'}.")
        mem = res["e2e"].get("memory") or {}
        if mem:
            out.append("\n### Peak memory of `activelabel label` vs input size\n")
            out.append(_table(["records", "input MB", "peak RSS MB", "records/s"], [
                [f"{int(n):,}", f"{m_['input_mb']:,.0f}", f"{m_['max_rss_mb']:,.0f}",
                 _rate(int(n) / m_["wall_s"]) if m_["returncode"] == 0 else f"exit {m_['returncode']}"]
                for n, m_ in sorted(mem.items(), key=lambda kv: int(kv[0]))]))
    if "ceilings" in res:
        c = res["ceilings"]
        out.append("\n### Reference costs per event (best of 3)\n")
        out.append(_table(["operation", "µs / event"], [
            ["orjson.loads of one ~600-byte line", f"{c['orjson_loads_us']:.2f}"],
            ["orjson.dumps of one event dict", f"{c['orjson_dumps_us']:.2f}"],
            ["pl.DataFrame(list of nested dicts)", f"{c['polars_frame_from_dicts_us']:.2f}"],
            ["pl.read_ndjson(JSONL bytes)", f"{c['polars_read_ndjson_us']:.2f}"],
        ]))
    if "targets" in res:
        rows = []
        for t in res["targets"]:
            got = t["got"]
            text = "-" if got is None else (_rate(got) + "/s" if t["want"] >= 1000 else f"{got:,.2f}×")
            rows.append([t["target"], text, "-" if t["met"] is None else ("yes" if t["met"] else "**no**")])
        out.append("\n### Issue #3 targets\n")
        out.append(_table(["target", "measured", "met"], rows))
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    print(render(orjson.loads(Path(args[0]).read_bytes())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
