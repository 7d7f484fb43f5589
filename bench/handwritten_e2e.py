"""The hand-written end-to-end baseline: JSONL in, labels added, JSONL out.

What an engineer writes instead of `activelabel label`: orjson per line, the
hand-written labeler of `bench.handwritten`, orjson back, buffered writes.
Lines that do not parse are counted and skipped (the activelabel CLI sends them
to a dead-letter file instead).

    python bench/handwritten_e2e.py --rules 40 events.jsonl -o labeled.jsonl
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson

from bench.handwritten import make_labeler
from bench.policies import policy_spec


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("input")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--rules", type=int, default=40, help="policy size of bench.policies (40, 200, 1000)")
    args = ap.parse_args(argv)

    label = make_labeler(policy_spec(args.rules))
    loads, dumps, decode_error = orjson.loads, orjson.dumps, orjson.JSONDecodeError
    bad = 0
    with open(args.input, "rb") as src, open(args.output, "wb") as dst:
        buf: list[bytes] = []
        for line in src:
            try:
                record = loads(line)
            except decode_error:
                bad += 1
                continue
            record["labels"] = label(record)
            buf.append(dumps(record))
            if len(buf) >= 4096:
                buf.append(b"")
                dst.write(b"\n".join(buf))
                buf.clear()
        if buf:
            buf.append(b"")
            dst.write(b"\n".join(buf))
    if bad:
        print(f"{bad} undecodable lines skipped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
