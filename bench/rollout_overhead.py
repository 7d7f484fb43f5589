"""What a live shadow and the audit log cost `activelabel label`, in-process and end to end.

Same events (bench.events, 50k distinct, seeded), same 40-rule policy (bench.policies) for
every run; the shadow candidate is that policy with only ``metadata.version`` changed, so
it does exactly the work of the serving one. In-process runs time ``RecordLoop.run`` over
pre-read blocks into an output that discards lines (no disk); the CLI runs time the
whole ``activelabel label FILE -o OUT -q`` process, startup included, at the default
``--workers`` (the CPUs available; with ``--audit`` one less from 3 CPUs on, where its
writer process gets a core) and at ``--workers 1``.

Runs alternate: each of N rounds runs every variant once, in the same order, so a load
change on a shared machine hits every variant alike. Each figure is the best of its N
runs; each cost is also given as the median of the N paired (same-round) ratios, and
the load average is printed before and after.

    nice -n 5 python bench/rollout_overhead.py [--events 200000] [--repeats 3] [--json out.json]

Claims checked: a shadow costs about one extra evaluation per event (the candidate's
``label_batch`` on the same chunks) and nothing else; the audit log at level Metadata
costs at most 20% of `label`'s throughput.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from activelabel import Labeler
from activelabel.engine.parallel import default_workers
from activelabel.engine.record_loop import CHUNK_RECORDS, RecordLoop
from activelabel.governance.observers import AuditObserver, ShadowRun, cli_record_id, cli_record_ids, open_audit_log
from bench.events import write_jsonl
from bench.policies import policy_spec, write_policy


class _Discard:
    """A RecordOutput that keeps nothing: the loop's cost without the disk's."""

    def write_many(self, where: list[Any], lines: list[bytes]) -> list[tuple[int, str, str]]:
        return []

    def dead_letter(self, where: Any, raw: bytes | None, kind: str, reason: str) -> None:
        return None


def _blocks(path: Path) -> list[tuple[Any, list[bytes]]]:
    lines = path.read_bytes().splitlines()
    return [((str(path), i + 1), lines[i:i + CHUNK_RECORDS]) for i in range(0, len(lines), CHUNK_RECORDS)]


def _alternate(variants: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Seconds of each variant, round by round: every round runs each variant once, in order.

    Beside each variant's wall seconds, ``<name>_cpu`` holds the CPU seconds (user + system)
    of this process's threads and of every child process it waited for, over the same run:
    on a shared machine that is the steadier figure of the two.
    """
    times: dict[str, list[float]] = {}
    for _ in range(repeats):
        for name, run in variants.items():
            cpu0 = _cpu()
            times.setdefault(name, []).append(run())
            times.setdefault(name.removesuffix("_s") + "_cpu_s", []).append(_cpu() - cpu0)
    return times


def _cpu() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def in_process(serving_path: Path, candidate_path: Path, events: Path, repeats: int, tmp: Path) -> dict[str, list[float]]:
    """Seconds of RecordLoop.run per round (labeler compiled and warmed up beforehand, outside the timing)."""
    blocks = _blocks(events)
    first = [orjson.loads(r) for r in blocks[0][1]]
    serving = Labeler.from_file(serving_path)
    candidate = Labeler.from_file(candidate_path)
    for labeler in (serving, candidate):  # build the column-wise plan and warm the caches once
        labeler.label_batch(first)
    runs = iter(range(1000))

    def loop(make_observer: Callable[[], Any] | None) -> Callable[[], float]:
        def run() -> float:
            observer = make_observer() if make_observer else None
            t0 = time.perf_counter()
            RecordLoop(serving, observer=observer).run(blocks, _Discard())
            close = getattr(observer, "close", None)
            if close:
                close()  # the final checkpoint and fsync are part of the audit's cost
            return time.perf_counter() - t0
        return run

    def audited(process: bool) -> Callable[[], Any]:
        def make() -> Any:
            log = open_audit_log(str(tmp / f"audit-inproc-{next(runs)}"), policy=serving.policy, level="Metadata")
            if process:
                log.start_writer_process()  # what `activelabel label --audit` does
            observer = AuditObserver(log, door="cli", policy=serving.policy, record_id_of=cli_record_id,
                                     record_ids_of=cli_record_ids)
            observer.close = log.close  # type: ignore[attr-defined]  # the loop above closes what it opened
            return observer
        return make

    def no_op(w: Any, e: Any, d: Any) -> None:
        return None

    def candidate_eval() -> float:
        # Decoded here, outside the timing, and dropped after: no variant runs beside a heap of
        # every event decoded (a fork would copy it, a garbage collection would walk it).
        decoded = [[orjson.loads(r) for r in raws] for _, raws in blocks]
        return _timed(lambda: [candidate.label_batch(chunk) for chunk in decoded])

    times = _alternate({
        "plain_s": loop(None),
        "decisions_s": loop(lambda: no_op),
        "shadow_s": loop(lambda: ShadowRun(serving, candidate)),
        "audit_metadata_s": loop(audited(process=True)),
        "audit_metadata_thread_s": loop(audited(process=False)),
        "candidate_eval_s": candidate_eval,
    }, repeats)
    return times


def cli(serving: Path, candidate: Path, events: Path, repeats: int, tmp: Path) -> dict[str, list[float]]:
    base = [sys.executable, "-m", "activelabel", "label", str(events), "-p", str(serving), "-q",
            "-o", str(tmp / "out.jsonl")]
    runs = iter(range(1000))

    def audit() -> list[str]:
        return ["--audit", str(tmp / f"audit-cli-{next(runs)}"), "--audit-level", "Metadata"]

    variants: dict[str, Callable[[], list[str]]] = {
        "plain_s": lambda: [],
        "audit_metadata_s": audit,
        "plain_w1_s": lambda: ["--workers", "1"],
        "audit_metadata_w1_s": lambda: [*audit(), "--workers", "1"],
        "shadow_s": lambda: ["--shadow", str(candidate)],
    }

    def timed(extra: Callable[[], list[str]]) -> Callable[[], float]:
        return lambda: _timed(lambda: subprocess.run([*base, *extra()], check=True, capture_output=True))

    return _alternate({name: timed(extra) for name, extra in variants.items()}, repeats)


def _cost(times: dict[str, list[float]], base: str, name: str) -> str:
    """Throughput cost of ``name`` against ``base``: from the best runs, and the median of the paired rounds."""
    best = 1 - min(times[base]) / min(times[name])
    paired = statistics.median(1 - b / x for b, x in zip(times[base], times[name], strict=True))
    return f"cost {best:.1%} (paired median {paired:.1%})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        spec = policy_spec(40)
        serving = write_policy(spec, tmp / "serving")
        text = serving.read_text()
        candidate = tmp / "candidate.yaml"
        candidate.write_text(text.replace("metadata:\n", "metadata:\n  version: shadow-candidate\n", 1)
                             if "version:" not in text.split("labels:")[0] else text.replace("version:", "version: x", 1))
        assert Labeler.from_file(candidate).version != Labeler.from_file(serving).version
        events = tmp / "events.jsonl"
        write_jsonl(events, args.events)
        n = float(sum(1 for _ in events.open("rb")))
        inproc = in_process(serving, candidate, events, args.repeats, tmp)
        load_mid = os.getloadavg()
        end_to_end = cli(serving, candidate, events, args.repeats, tmp)
    load_after = os.getloadavg()

    def rate(seconds: float) -> str:
        return f"{n / seconds:,.0f} ev/s"

    def load(avg: tuple[float, float, float]) -> str:
        return " ".join(f"{x:.2f}" for x in avg)

    p = {name: min(ts) for name, ts in inproc.items()}
    lines = [
        f"rollout overhead: {int(n):,} events, 40-rule policy, best of {args.repeats} alternating rounds, "
        f"{os.cpu_count()} CPUs, default --workers {default_workers()}",
        f"load average (1, 5, 15 min): before {load(load_before)}, between {load(load_mid)}, after {load(load_after)}",
        "in-process (RecordLoop into a discarding output):",
        f"  plain label_lines           {p['plain_s']:.3f}s  {rate(p['plain_s'])}",
        f"  whole Decisions, no-op obs. {p['decisions_s']:.3f}s  {rate(p['decisions_s'])}",
        f"  with --shadow               {p['shadow_s']:.3f}s  {rate(p['shadow_s'])}",
        f"  candidate label_batch alone {p['candidate_eval_s']:.3f}s (one extra evaluation of decoded events)",
        f"  shadow - decisions = {p['shadow_s'] - p['decisions_s']:.3f}s vs one evaluation {p['candidate_eval_s']:.3f}s"
        f" (ratio {(p['shadow_s'] - p['decisions_s']) / p['candidate_eval_s']:.2f}; paired median "
        f"{statistics.median((sh - de) / ev for sh, de, ev in zip(inproc['shadow_s'], inproc['decisions_s'], inproc['candidate_eval_s'], strict=True)):.2f})",
        f"  with --audit Metadata       {p['audit_metadata_s']:.3f}s  {rate(p['audit_metadata_s'])}"
        f"  {_cost(inproc, 'plain_s', 'audit_metadata_s')}  (writer process, as `label` runs it)",
        f"    CPU (with the writer)     plain {p['plain_cpu_s']:.3f}s, audit {p['audit_metadata_cpu_s']:.3f}s"
        f"  {_cost(inproc, 'plain_cpu_s', 'audit_metadata_cpu_s')}",
        f"  audit, writer thread only   {p['audit_metadata_thread_s']:.3f}s  {rate(p['audit_metadata_thread_s'])}"
        f"  {_cost(inproc, 'plain_s', 'audit_metadata_thread_s')}",
        f"    CPU (all threads)         {p['audit_metadata_thread_cpu_s']:.3f}s"
        f"  {_cost(inproc, 'plain_cpu_s', 'audit_metadata_thread_cpu_s')}",
        "CLI end to end (activelabel label FILE -o OUT -q, startup included; CPU: the process and its workers):",
    ]
    c = end_to_end
    against = {"plain_s": "plain_s", "audit_metadata_s": "plain_s", "plain_w1_s": "plain_w1_s",
               "audit_metadata_w1_s": "plain_w1_s", "shadow_s": "plain_s"}
    for name, base in against.items():
        best = min(c[name])
        cpu, base_cpu = name.removesuffix("_s") + "_cpu_s", base.removesuffix("_s") + "_cpu_s"
        lines.append(f"  {name[:-2]:<20} {best:.3f}s  {rate(best)}  {_cost(c, base, name)} against {base[:-2]};"
                     f"  CPU {min(c[cpu]):.3f}s {_cost(c, base_cpu, cpu)}")
    lines.append("all runs (s): " + "; ".join(f"{k[:-2]} {' '.join(f'{t:.2f}' for t in v)}"
                                              for k, v in [*inproc.items(), *(("cli_" + k, v) for k, v in c.items())]))
    sys.stdout.write("\n".join(lines) + "\n")
    if args.json is not None:
        args.json.write_bytes(orjson.dumps({"events": n, "load_average": {"before": load_before, "between": load_mid,
                                                                          "after": load_after},
                                            "in_process": inproc, "cli": end_to_end}, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
