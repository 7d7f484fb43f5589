"""Log-line classification over loghub (seed: "log-line classification"): regexes, a lookup, value_expr strings.

Events are the real parsed lines of ../shared/data/loghub (HDFS 2k, BGL 2k,
Thunderbird 2k), cycled. Messy shares, as the data has them: Thunderbird lines
have no `level` (~1/3 of events: severity rules error), no `is_alert` on HDFS
lines (1/3), components not in the table ~40% (miss), plus injected: content
missing 3%, component missing 3%.
"""

from __future__ import annotations

import random
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from bench.zoo._common import Guard, key, no_guard, read_csv, write_csv

HERE = Path(__file__).resolve().parent
DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "loghub"
FATAL = frozenset(("FATAL", "SEVERE", "FAILURE"))
ERROR = frozenset(("ERROR", "ERR"))
WARN = frozenset(("WARN", "WARNING"))
ERR_WORD = re.compile(r"(?i)\b(error|failed|failure)\b", re.ASCII).search
HW = re.compile(r"(?i)(parity|ecc|temperature|fan|power)").search
NET = re.compile(r"(?i)(socket|connection|tcp|network|ib_sm)").search
BLK = re.compile(r"blk_-?[0-9]+").search
COMPONENTS = [("dfs.DataNode", "hdfs"), ("dfs.DataNode$PacketResponder", "hdfs"), ("dfs.FSNamesystem", "hdfs"),
              ("dfs.DataNode$DataXceiver", "hdfs"), ("KERNEL", "compute"), ("APP", "compute"), ("MMCS", "control"),
              ("sshd(pam_unix)", "access"), ("crond(pam_unix)", "scheduler"), ("kernel", "compute")]


def materialize(d: Path) -> Path:
    write_csv(d / "components.csv", ["component", "subsystem"], COMPONENTS)
    shutil.copy(HERE / "loglines.yaml", d / "policy.yaml")
    return d / "policy.yaml"


def make_labeler(d: Path, *, guards: bool = True, **_: Any) -> Callable[[dict], dict]:
    comps = read_csv(d / "components.csv")
    empty: dict = {}
    key_guard = Guard(30, "__other__") if guards else no_guard

    def label(e: dict) -> dict:
        out: dict = {}
        level = e.get("level", e)
        content = e.get("content")
        text = content.__class__ is str
        component = e.get("component")
        lv = level if level.__class__ is str else None
        if lv in FATAL:
            sev = "fatal"
        elif lv in ERROR or (text and ERR_WORD(content)):
            sev = "error"
        elif lv in WARN:
            sev = "warn"
        elif lv == "INFO":
            sev = "info"
        else:
            sev = "unknown"
        out["severity"] = sev
        if text and HW(content):
            cat = "hardware"
        elif text and NET(content):
            cat = "network"
        elif (text and BLK(content)) or (component.__class__ is str and component.startswith("dfs.")):
            cat = "storage"
        elif text and ("session" in content or "authentication" in content):
            cat = "auth"
        elif component == "KERNEL":
            cat = "kernel"
        else:
            cat = "other"
        out["category"] = cat
        sub = comps.get(key(component), empty).get("subsystem")
        if sub is not None:
            out["subsystem"] = sub
        ds = e.get("dataset")
        if ds.__class__ is str:
            out["key"] = key_guard(ds + ":" + cat + ":" + sev)
        out["alert"] = e.get("is_alert") is True or (sev == "fatal" and cat != "other")
        return out

    return label


def _lines() -> list[dict]:
    out = []
    for path in (DATA / "HDFS" / "HDFS_2k.parsed.jsonl", DATA / "BGL" / "BGL_2k.labeled.jsonl",
                 DATA / "Thunderbird" / "Thunderbird_2k.labeled.jsonl"):
        for line in path.read_bytes().splitlines():
            rec = orjson.loads(line)
            rec.pop("raw", None)
            rec.pop("raw_without_label", None)
            out.append(rec)
    return out


def events(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    lines = _lines()
    out = []
    for i in range(n):
        e = dict(lines[(i * 7919 + seed) % len(lines)])
        r = rng.random()
        if r < 0.03:
            e.pop("content", None)
        elif r < 0.06:
            e.pop("component", None)
        out.append(e)
    return out
