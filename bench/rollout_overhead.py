"""What a live shadow and the audit log cost `activelabel label`, in-process and end to end.

Same events (bench.events, 50k distinct, seeded), same 40-rule policy (bench.policies) for
every run; the shadow candidate is that policy with only ``metadata.version`` changed, so
it does exactly the work of the serving one. In-process runs time ``RecordLoop.run`` over
pre-read blocks into an output that discards lines (no disk); the CLI runs time the
whole ``activelabel label FILE -o OUT -q`` process, startup included. Best of N repeats.

    nice -n 5 python bench/rollout_overhead.py [--events 200000] [--repeats 3] [--json out.json]

Claims checked: a shadow costs about one extra evaluation per event (the candidate's
``label_batch`` on the same chunks) and nothing else; the audit log at level Metadata
costs at most 20% of `label`'s throughput.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from activelabel import Labeler
from activelabel.engine.record_loop import CHUNK_RECORDS, RecordLoop
from activelabel.governance.observers import AuditObserver, ShadowRun, open_audit_log
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


def _best(fn: Callable[[], None], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def in_process(serving_path: Path, candidate_path: Path, events: Path, repeats: int, tmp: Path) -> dict[str, float]:
    """Seconds of RecordLoop.run (labeler compiled and warmed up beforehand, outside the timing)."""
    blocks = _blocks(events)
    n = sum(len(b) for _, b in blocks)
    decoded = [[orjson.loads(r) for r in raws] for _, raws in blocks]
    serving = Labeler.from_file(serving_path)
    candidate = Labeler.from_file(candidate_path)
    for labeler in (serving, candidate):  # build the column-wise plan and warm the caches once
        labeler.label_batch(decoded[0])
    runs = iter(range(1000))
    out: dict[str, float] = {}

    def loop(make_observer: Callable[[], Any] | None) -> float:
        times = []
        for _ in range(repeats):
            observer = make_observer() if make_observer else None
            t0 = time.perf_counter()
            RecordLoop(serving, observer=observer).run(blocks, _Discard())
            close = getattr(observer, "close", None)
            if close:
                close()  # the final checkpoint and fsync are part of the audit's cost
            times.append(time.perf_counter() - t0)
        return min(times)

    class _Audited:
        def __init__(self) -> None:
            self.log = open_audit_log(str(tmp / f"audit-inproc-{next(runs)}"), policy=serving.policy, level="Metadata")
            self.observer = AuditObserver(self.log, door="cli", policy=serving.policy,
                                          record_id_of=lambda w, e: f"{w[0][0]}:{w[0][1] + w[1]}")

        def __call__(self, w: Any, e: Any, d: Any) -> None:
            self.observer(w, e, d)

        def close(self) -> None:
            self.log.close()

    out["plain_s"] = loop(None)
    out["decisions_s"] = loop(lambda: (lambda w, e, d: None))
    out["shadow_s"] = loop(lambda: ShadowRun(serving, candidate))
    out["audit_metadata_s"] = loop(_Audited)
    out["candidate_eval_s"] = _best(lambda: [candidate.label_batch(chunk) for chunk in decoded], repeats)
    out["events"] = float(n)
    return out


def cli(serving: Path, candidate: Path, events: Path, repeats: int, tmp: Path) -> dict[str, float]:
    base = [sys.executable, "-m", "activelabel", "label", str(events), "-p", str(serving), "-q",
            "-o", str(tmp / "out.jsonl")]
    runs = iter(range(1000))
    variants = {
        "plain_s": lambda: [],
        "shadow_s": lambda: ["--shadow", str(candidate)],
        "audit_metadata_s": lambda: ["--audit", str(tmp / f"audit-cli-{next(runs)}"), "--audit-level", "Metadata"],
    }
    out: dict[str, float] = {}
    for name, extra in variants.items():
        def run(extra: Callable[[], list[str]] = extra) -> None:
            subprocess.run([*base, *extra()], check=True, capture_output=True)
        out[name] = _best(run, repeats)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
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
        inproc = in_process(serving, candidate, events, args.repeats, tmp)
        end_to_end = cli(serving, candidate, events, args.repeats, tmp)
    n = inproc["events"]

    def rate(seconds: float) -> str:
        return f"{n / seconds:,.0f} ev/s"

    p = inproc
    lines = [
        f"rollout overhead: {int(n):,} events, 40-rule policy, best of {args.repeats}",
        "in-process (RecordLoop into a discarding output):",
        f"  plain label_lines           {p['plain_s']:.3f}s  {rate(p['plain_s'])}",
        f"  whole Decisions, no-op obs. {p['decisions_s']:.3f}s  {rate(p['decisions_s'])}",
        f"  with --shadow               {p['shadow_s']:.3f}s  {rate(p['shadow_s'])}",
        f"  candidate label_batch alone {p['candidate_eval_s']:.3f}s (one extra evaluation of decoded events)",
        f"  shadow - decisions = {p['shadow_s'] - p['decisions_s']:.3f}s vs one evaluation {p['candidate_eval_s']:.3f}s"
        f" (ratio {(p['shadow_s'] - p['decisions_s']) / p['candidate_eval_s']:.2f})",
        f"  with --audit Metadata       {p['audit_metadata_s']:.3f}s  {rate(p['audit_metadata_s'])}"
        f"  throughput cost {1 - p['plain_s'] / p['audit_metadata_s']:.1%}",
        "CLI end to end (activelabel label FILE -o OUT -q, startup included):",
    ]
    c = end_to_end
    for name in ("plain_s", "shadow_s", "audit_metadata_s"):
        lines.append(f"  {name[:-2]:<16} {c[name]:.3f}s  {rate(c[name])}  cost {1 - c['plain_s'] / c[name]:.1%}")
    sys.stdout.write("\n".join(lines) + "\n")
    if args.json is not None:
        args.json.write_bytes(orjson.dumps({"in_process": inproc, "cli": end_to_end}, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
