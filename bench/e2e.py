"""End to end: `activelabel label` on a JSONL file vs the hand-written orjson script.

Both run as child processes on the same file, pinned to one core with
`taskset` when it exists (the issue's target is "on one core"), alternating
which goes first. Wall time includes interpreter start-up and policy
compilation, as a user running the command pays them. Peak memory is the
child's own maximum resident set size (see `run_child`; with `--workers` it is
the largest single process, parent or worker).

`python -m bench.e2e` measures file mode on its own (issue 9): the 40-rule bench
policy on generated events, and optionally any policy on any file against any
hand-written command (`--policy P --input F --hand 'CMD {src} {dst}'`), with
1 and N workers, plus peak memory on the input and on a 10x copy of it:

    python -m bench.e2e --records 200000 --workers 1 2 --repeats 5
"""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


@dataclass
class ChildRun:
    wall_s: float
    cpu_s: float
    max_rss_mb: float
    returncode: int
    stderr_tail: str


def run_child(cmd: list[str], pin_cpu: int | None = 0) -> ChildRun:
    """Run `cmd` to completion and return its wall time, CPU time and peak RSS.

    Linux keeps `ru_maxrss` across fork and exec, so a child forked straight
    from this (large) process would report at least our own peak; the command
    runs under `/usr/bin/time`, which forks it from a small process, when that
    exists.
    """
    if pin_cpu is not None and shutil.which("taskset"):
        cmd = ["taskset", "-c", str(pin_cpu), *cmd]
    tmp = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    err_path, time_path = tmp / "stderr", tmp / "time"
    gnu_time = Path("/usr/bin/time")
    if gnu_time.exists():
        cmd = [str(gnu_time), "-o", str(time_path), "-f", "%M", *cmd]
    with open(err_path, "wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, cwd=REPO)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    tail = err_path.read_text(errors="replace")[-2000:]
    max_rss_kb = float(usage.ru_maxrss)
    if time_path.exists():
        with contextlib.suppress(ValueError, IndexError):
            max_rss_kb = float(time_path.read_text().strip().splitlines()[-1])
    shutil.rmtree(tmp, ignore_errors=True)
    return ChildRun(wall, usage.ru_utime + usage.ru_stime, max_rss_kb / 1024, proc.returncode, tail)


def activelabel_cmd(policy: Path, src: Path, dst: Path, workers: int | None = None) -> list[str]:
    """`activelabel label`; ``workers`` None leaves the default (the CPUs the child may use: 1 when pinned)."""
    extra = ["--workers", str(workers)] if workers is not None else []
    return [str(VENV_BIN / "activelabel"), "label", "--policy", str(policy), str(src), "-o", str(dst), *extra]


def columnar_cmd(policy: Path, src: Path, dst: Path) -> list[str]:
    return [sys.executable, str(REPO / "bench" / "columnar_e2e.py"), "--policy", str(policy), str(src), "-o", str(dst)]


def handwritten_cmd(rules: int, src: Path, dst: Path) -> list[str]:
    return [sys.executable, str(REPO / "bench" / "handwritten_e2e.py"), "--rules", str(rules), str(src), "-o", str(dst)]


def compare_outputs(a: Path, b: Path, field: str = "labels") -> tuple[int, int, int]:
    """(records in a, records in b, records whose `field` differ) — line by line."""
    na = nb = diff = 0
    with open(a, "rb") as fa, open(b, "rb") as fb:
        for la, lb in zip(fa, fb):
            na += 1
            nb += 1
            if orjson.loads(la).get(field) != orjson.loads(lb).get(field):
                diff += 1
        na += sum(1 for _ in fa)
        nb += sum(1 for _ in fb)
    return na, nb, diff


@dataclass
class E2EResult:
    records: int
    input_mb: float
    repeats: int
    activelabel_records_per_s: float
    activelabel_mb_per_s: float
    activelabel_cpu_s: float
    activelabel_max_rss_mb: float
    handwritten_records_per_s: float
    handwritten_mb_per_s: float
    handwritten_cpu_s: float
    handwritten_max_rss_mb: float
    ratio: float                 # median of paired (handwritten wall / activelabel wall)
    cpu_ratio: float             # handwritten CPU s / activelabel CPU s (robust on a busy machine)
    outputs_differ: int          # records whose labels differ between the two outputs
    output_records: tuple[int, int]
    error: str = ""
    # bench/columnar_e2e.py: the columnar path in file mode, a prototype next to the CLI
    columnar_records_per_s: float = 0.0
    columnar_cpu_s: float = 0.0
    columnar_max_rss_mb: float = 0.0
    columnar_ratio: float = 0.0
    columnar_outputs_differ: int = -1

    def as_dict(self) -> dict:
        return asdict(self)


def end_to_end(policy: Path, rules: int, src: Path, records: int, workdir: Path, repeats: int) -> E2EResult:
    """Paired runs of both commands on `src`; medians of wall time, then a check the outputs agree."""
    size_mb = src.stat().st_size / 1e6
    out_al, out_hw = workdir / "out-activelabel.jsonl", workdir / "out-handwritten.jsonl"
    al_runs: list[ChildRun] = []
    hw_runs: list[ChildRun] = []
    col_runs: list[ChildRun] = []
    out_col = workdir / "out-columnar.jsonl"
    for r in range(repeats):
        trio = [("al", activelabel_cmd(policy, src, out_al)), ("hw", handwritten_cmd(rules, src, out_hw)),
                ("col", columnar_cmd(policy, src, out_col))]
        if r % 2:
            trio.reverse()
        for who, cmd in trio:
            run = run_child(cmd)
            if run.returncode != 0:
                if who == "col":
                    continue  # the prototype is optional
                return E2EResult(records, size_mb, r, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, -1, (0, 0),
                                 error=f"{who} exited {run.returncode}: {run.stderr_tail}")
            {"al": al_runs, "hw": hw_runs, "col": col_runs}[who].append(run)
    na, nb, diff = compare_outputs(out_al, out_hw)
    col: dict = {}
    if len(col_runs) == repeats:
        cn, _, cdiff = compare_outputs(out_col, out_hw)
        col = {
            "columnar_records_per_s": records / statistics.median(r.wall_s for r in col_runs),
            "columnar_cpu_s": statistics.median(r.cpu_s for r in col_runs),
            "columnar_max_rss_mb": max(r.max_rss_mb for r in col_runs),
            "columnar_ratio": statistics.median(h.wall_s / c.wall_s for c, h in zip(col_runs, hw_runs)),
            "columnar_outputs_differ": cdiff + abs(cn - nb),
        }
    out_col.unlink(missing_ok=True)
    al_wall = statistics.median(r.wall_s for r in al_runs)
    hw_wall = statistics.median(r.wall_s for r in hw_runs)
    ratio = statistics.median(h.wall_s / a.wall_s for a, h in zip(al_runs, hw_runs))
    for p in (out_al, out_hw):
        p.unlink(missing_ok=True)
    return E2EResult(
        records=records, input_mb=size_mb, repeats=repeats,
        activelabel_records_per_s=records / al_wall, activelabel_mb_per_s=size_mb / al_wall,
        activelabel_cpu_s=statistics.median(r.cpu_s for r in al_runs),
        activelabel_max_rss_mb=max(r.max_rss_mb for r in al_runs),
        handwritten_records_per_s=records / hw_wall, handwritten_mb_per_s=size_mb / hw_wall,
        handwritten_cpu_s=statistics.median(r.cpu_s for r in hw_runs),
        handwritten_max_rss_mb=max(r.max_rss_mb for r in hw_runs),
        **col,
        ratio=ratio,
        cpu_ratio=statistics.median(r.cpu_s for r in hw_runs) / statistics.median(r.cpu_s for r in al_runs),
        outputs_differ=diff + abs(na - nb), output_records=(na, nb),
    )


def peak_memory(policy: Path, src: Path, workdir: Path) -> ChildRun:
    """One `activelabel label` run, for its peak RSS on a file of a given size."""
    out = workdir / "out-mem.jsonl"
    run = run_child(activelabel_cmd(policy, src, out))
    out.unlink(missing_ok=True)
    return run


# ---- `python -m bench.e2e`: file mode, 1 and N workers, memory vs input size ----------


@dataclass
class PairedRuns:
    label: str
    workers: int
    activelabel_wall_s: float    # medians
    activelabel_cpu_s: float
    activelabel_max_rss_mb: float
    handwritten_wall_s: float
    handwritten_cpu_s: float
    ratio: float                 # median of paired (handwritten wall / activelabel wall)
    outputs_differ: int
    error: str = ""


def paired(label: str, al: list[str], hand: list[str], out_al: Path, out_hw: Path, workers: int, repeats: int) -> PairedRuns:
    """``repeats`` alternating runs of both commands; one worker is pinned to core 0, N workers to cores 0..N-1."""
    al_runs: list[ChildRun] = []
    hw_runs: list[ChildRun] = []
    cores = os.cpu_count() or 1
    for r in range(repeats):
        pair = [("al", al), ("hw", hand)]
        if r % 2:
            pair.reverse()
        for who, cmd in pair:
            if who == "al" and workers > 1:
                run = run_child(["taskset", "-c", f"0-{min(workers, cores) - 1}", *cmd] if shutil.which("taskset") else cmd, pin_cpu=None)
            else:
                run = run_child(cmd)
            if run.returncode != 0:
                return PairedRuns(label, workers, 0, 0, 0, 0, 0, 0, -1, error=f"{who} exited {run.returncode}: {run.stderr_tail}")
            (al_runs if who == "al" else hw_runs).append(run)
    na, nb, diff = compare_outputs(out_al, out_hw)
    return PairedRuns(
        label, workers,
        statistics.median(r.wall_s for r in al_runs), statistics.median(r.cpu_s for r in al_runs),
        max(r.max_rss_mb for r in al_runs),
        statistics.median(r.wall_s for r in hw_runs), statistics.median(r.cpu_s for r in hw_runs),
        statistics.median(h.wall_s / a.wall_s for a, h in zip(al_runs, hw_runs)),
        diff + abs(na - nb),
    )


def _copies(src: Path, dst: Path, n: int) -> Path:
    data = src.read_bytes()
    with open(dst, "wb") as fh:
        for _ in range(n):
            fh.write(data)
    return dst


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json

    ap = argparse.ArgumentParser(description="activelabel label FILE end to end vs the hand-written script, 1 and N workers")
    ap.add_argument("--records", type=int, default=200_000, help="generated events for the 40-rule bench policy (0: skip)")
    ap.add_argument("--policy", type=Path, help="another policy to measure on --input against --hand")
    ap.add_argument("--input", type=Path, help="its JSONL input")
    ap.add_argument("--hand", help="its hand-written command, with {src} and {dst} placeholders")
    ap.add_argument("--copies", type=int, default=1, help="label --input repeated this many times (a larger file)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--memory", type=int, nargs="*", default=[1, 10], help="peak RSS on the input repeated 1x and 10x")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)

    from bench.events import write_jsonl
    from bench.policies import policy_spec, write_policy

    work = Path(tempfile.mkdtemp(prefix="bench-filemode-"))
    results: dict = {"load_before": os.getloadavg(), "cpus": os.cpu_count(), "runs": [], "memory": []}
    cases: list[tuple[str, Path, Path, list[str]]] = []
    try:
        if args.records:
            policy = write_policy(policy_spec(40), work)
            src = work / "events.jsonl"
            write_jsonl(src, args.records, seed=11)
            cases.append(("40-rule bench policy, generated events", policy, src,
                          handwritten_cmd(40, src, work / "out-hw.jsonl")))
        if args.policy and args.input and args.hand:
            src = _copies(args.input, work / "input.jsonl", args.copies) if args.copies > 1 else args.input
            hand = [part.format(src=src, dst=work / "out-hw.jsonl") for part in args.hand.split()]
            cases.append((f"{args.policy.name} on {args.input.name} x{args.copies}", args.policy, src, hand))
        for label, policy, src, hand in cases:
            with open(src, "rb") as fh:
                records = sum(1 for _ in fh)
            for workers in args.workers:
                res = paired(label, activelabel_cmd(policy, src, work / "out-al.jsonl", workers), hand,
                             work / "out-al.jsonl", work / "out-hw.jsonl", workers, args.repeats)
                results["runs"].append({**asdict(res), "records": records, "input_mb": src.stat().st_size / 1e6})
                print(f"{label}: {records:,} records, {src.stat().st_size / 1e6:,.0f} MB, --workers {workers}: "
                      f"{res.ratio:.2f}x hand-written (wall, paired median of {args.repeats}); "
                      f"activelabel {records / res.activelabel_wall_s:,.0f} rec/s wall, {res.activelabel_cpu_s:.2f} CPU s, "
                      f"{res.activelabel_max_rss_mb:,.0f} MB peak; hand-written {records / res.handwritten_wall_s:,.0f} rec/s, "
                      f"{res.handwritten_cpu_s:.2f} CPU s; labels differ on {res.outputs_differ} records{res.error}", flush=True)
            for n in args.memory:
                big = _copies(src, work / f"mem-{n}.jsonl", n)
                for workers in args.workers:
                    run = run_child(activelabel_cmd(policy, big, work / "out-mem.jsonl", workers), pin_cpu=0 if workers == 1 else None)
                    results["memory"].append({"case": label, "copies": n, "workers": workers, "input_mb": big.stat().st_size / 1e6,
                                              "max_rss_mb": run.max_rss_mb, "wall_s": run.wall_s, "returncode": run.returncode})
                    print(f"  memory: x{n} ({big.stat().st_size / 1e6:,.0f} MB), --workers {workers}: peak RSS "
                          f"{run.max_rss_mb:,.0f} MB (largest process), {run.wall_s:.2f} s wall", flush=True)
                big.unlink()
    finally:
        results["load_after"] = os.getloadavg()
        shutil.rmtree(work, ignore_errors=True)
    print(f"load average before {results['load_before'][0]:.2f}, after {results['load_after'][0]:.2f} on {results['cpus']} CPUs")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
