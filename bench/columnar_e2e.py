"""Prototype of `activelabel label`'s file mode on the columnar path (not the CLI yet).

Reads JSONL, decodes each line with orjson, labels 4,096 records at a time
with `ColumnarPlan.run_lines` (labels spliced into the original bytes, their
JSON serialised once per distinct outcome) and writes the lines out. Lines
that do not decode to an object are counted and skipped here; the CLI sends
them to its dead-letter file. It exists to measure what wiring the columnar
path into file mode would buy, next to the real CLI in `bench.run`'s e2e section.

    python bench/columnar_e2e.py --policy policy.yaml events.jsonl -o labeled.jsonl
"""

from __future__ import annotations

import argparse
import sys

import orjson

from activelabel import Labeler

BATCH = 4096


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("input")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--policy", required=True)
    args = ap.parse_args(argv)

    labeler = Labeler.from_file(args.policy)
    plan = labeler.columnar_plan()
    if plan is None:
        print("policy outside the columnar subset", file=sys.stderr)
        return 2
    per_event = labeler.label_codes  # rows the columnar path leaves to the per-event function
    loads, decode_error = orjson.loads, orjson.JSONDecodeError
    bad = 0
    with open(args.input, "rb") as src, open(args.output, "wb") as dst:
        raws: list[bytes] = []
        events: list[dict] = []

        def flush() -> None:
            _, lines = plan.run_lines(raws, events, per_event)
            lines.append(b"")
            dst.write(b"\n".join(lines))
            raws.clear()
            events.clear()

        for line in src:
            try:
                event = loads(line)
            except decode_error:
                bad += 1
                continue
            if event.__class__ is not dict:
                bad += 1
                continue
            raws.append(line)
            events.append(event)
            if len(events) >= BATCH:
                flush()
        if events:
            flush()
    if bad:
        print(f"{bad} undecodable lines skipped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
