"""The hand-written end-to-end baseline for a zoo policy: orjson in, the zoo labeler, orjson out.

    python bench/zoo/e2e_hand.py NAME POLICY_DIR events.jsonl -o labeled.jsonl

POLICY_DIR is where `bench.zoo.<NAME>.materialize` wrote the policy's tables (the
labeler reads them as the policy does). Real clock, real `now`, as the CLI.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import orjson

from bench.zoo import module


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("name")
    ap.add_argument("policy_dir")
    ap.add_argument("input")
    ap.add_argument("-o", "--output", required=True)
    args = ap.parse_args(argv)
    label = module(args.name).make_labeler(Path(args.policy_dir))
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
            if record.__class__ is not dict:
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
