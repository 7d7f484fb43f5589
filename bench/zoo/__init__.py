"""The policy zoo: realistic policies, each with a hand-written labeler and messy events.

Each zoo module gives:

- `materialize(dir) -> policy path`: the policy YAML and its tables (generated,
  deterministic) written into `dir`; models are trained there too;
- `make_labeler(dir, guards=True, clock=time.monotonic, now=None)`: the
  hand-written plain-Python labeler of the same policy (`guards=False` leaves
  cardinality guards out, as `Labeler.label_exact` does; `now` is the labeling
  time, the real clock when None);
- `events(n, seed)`: the events, from the real data in ../shared/data where it
  exists, with missing fields, enrichment misses, unset labels and wrong types.

`agreement()` labels events every way the engine offers and counts differences
from the hand-written labeler; `python -m bench.run --only zoo` times them.
"""

from __future__ import annotations

import importlib
import itertools
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson

from bench.zoo._common import FIXED_NOW

NAMES = ("payments", "security", "support", "compliance", "tracing", "k8s", "loglines", "edge")
REPO = Path(__file__).resolve().parents[2]


def module(name: str) -> ModuleType:
    return importlib.import_module(f"bench.zoo.{name}")


def tick_clock() -> Callable[[], float]:
    """A clock that moves one second per reading: windows roll over every `window` guarded values."""
    counter = itertools.count()
    return lambda: float(next(counter))


def build(name: str, d: Path, *, clock: Callable[[], float] | None = None) -> tuple[Any, Callable[[dict], dict]]:
    """(Labeler, hand-written labeler) of zoo policy `name` materialized in `d`, sharing `now` and a clock kind."""
    from activelabel import Labeler

    mod = module(name)
    path = mod.materialize(d)
    kw_eng: dict = {"now": lambda: FIXED_NOW}
    kw_hand: dict = {"now": FIXED_NOW}
    if clock is not None:
        kw_eng["clock"] = clock()
        kw_hand["clock"] = clock()
    return Labeler.from_file(path, **kw_eng), mod.make_labeler(d, **kw_hand)


@dataclass
class Agreement:
    policy: str
    events: int
    differ: dict[str, int] = field(default_factory=dict)     # path -> events whose labels differ
    examples: dict[str, list] = field(default_factory=dict)  # path -> [(event, hand, engine)] (first 3)

    @property
    def ok(self) -> bool:
        return not any(self.differ.values())


def _compare(res: Agreement, path: str, evs: list[dict], want: list[dict], got: list[dict]) -> None:
    bad = [(e, w, g) for e, w, g in zip(evs, want, got, strict=True) if w != g]
    res.differ[path] = len(bad)
    if bad:
        res.examples[path] = bad[:3]


def agreement(name: str, n: int, *, seed: int = 3, cli: bool = False, exact: bool = True) -> Agreement:
    """Label `n` events of zoo policy `name` by every engine path and compare each to the hand-written labeler."""
    from activelabel import Labeler

    mod = module(name)
    evs = mod.events(n, seed)
    res = Agreement(name, len(evs))
    with tempfile.TemporaryDirectory(prefix=f"zoo-{name}-") as tmp:
        d = Path(tmp)
        lab, hand = build(name, d, clock=tick_clock)
        _compare(res, "label", evs, [hand(dict(e)) for e in evs], [lab.label(e).labels for e in evs])
        lab, hand = build(name, d, clock=tick_clock)
        want = [hand(dict(e)) for e in evs]
        got = [d_.labels for i in range(0, len(evs), 4096) for d_ in lab.label_batch(evs[i:i + 4096])]
        _compare(res, "label_batch", evs, want, got)
        if exact:
            unguarded = mod.make_labeler(d, guards=False, now=FIXED_NOW)
            _compare(res, "label_exact", evs, [unguarded(dict(e)) for e in evs], [lab.label_exact(e) for e in evs])
        if cli:
            src, dst = d / "events.jsonl", d / "out.jsonl"
            src.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in evs))
            exe = Path(sys.executable).parent / "activelabel"
            subprocess.run([str(exe), "label", "--policy", str(d / "policy.yaml"), str(src), "-o", str(dst), "-q",
                            "--clearance", "secret"],
                           check=True, cwd=REPO)
            got_cli = [orjson.loads(line).get("labels") for line in dst.read_bytes().splitlines()]
            hand_rt = mod.make_labeler(d)  # real clock and real now, as the CLI runs
            _compare(res, "cli", evs, [hand_rt(dict(e)) for e in evs], got_cli)
        _ = Labeler
    return res
