"""A cut or corrupt .gz input: the summary counts what was labeled before the cut, and the error says where it stopped.

Also: `activelabel diff` names its own arguments when a policy file is missing (it has no --policy option).
"""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import DATA, EXAMPLES

CLI = [sys.executable, "-m", "activelabel"]
SUMMARY = re.compile(r"(\d+) records in = (\d+) labeled \+ (\d+) dead-lettered")
STOPPED = re.compile(r"failed after line ([\d,]+)(?: and ([\d,]+) bytes of line ([\d,]+))?")


def _label(path: Path, tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path / "out.jsonl"
    out.unlink(missing_ok=True)
    (tmp_path / "out.jsonl.dlq.jsonl").unlink(missing_ok=True)
    env = {**os.environ, "COLUMNS": "200"}
    r = subprocess.run([*CLI, "label", "-p", str(EXAMPLES / "edge" / "policy.yaml"), str(path), "-o", str(out)],
                       capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    return r, out


def _check_cut(r: subprocess.CompletedProcess[str], out: Path, lines_read: int | None = None) -> None:
    """Exit 1, no traceback, a summary whose counts add up and match the output file, and an error naming the line."""
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    m = SUMMARY.search(r.stderr)
    assert m, r.stderr
    n_in, labeled, dead = (int(g) for g in m.groups())
    assert n_in == labeled + dead
    written = out.read_bytes().count(b"\n") if out.exists() else 0
    assert written == labeled
    stop = STOPPED.search(r.stderr)
    assert stop, r.stderr
    assert int(stop.group(1).replace(",", "")) == n_in  # the input has no blank lines: one record per line read
    if lines_read is not None:
        assert n_in == lines_read
    assert "the rest of the input was not read" in r.stderr


def _gz(tmp_path: Path) -> tuple[bytes, list[bytes]]:
    lines = (DATA / "http_access_log" / "apache_logs.parsed.jsonl").read_bytes().splitlines(keepends=True)[:400]
    return gzip.compress(b"".join(lines)), lines


def test_a_truncated_gz_prints_the_summary_of_what_was_labeled(tmp_path):
    """`label cut.gz`: exit 1, yet the summary counts the lines before the cut, and the error names the line it stopped after."""
    data, lines = _gz(tmp_path)
    cut = tmp_path / "cut.gz"
    cut.write_bytes(data[: len(data) // 2])
    r, out = _label(cut, tmp_path)
    _check_cut(r, out)
    n_in = int(SUMMARY.search(r.stderr).group(1))
    last = json.loads(out.read_bytes().splitlines()[-1])
    assert last["line_no"] == json.loads(lines[n_in - 1])["line_no"]  # the last whole line before the cut, labeled


def test_every_cut_and_corruption_of_a_gz_is_counted_not_a_traceback(tmp_path):
    """Cut at many points (inside the header too) or with a flipped byte, every run ends with counts that add up."""
    data, _ = _gz(tmp_path)
    path = tmp_path / "bad.gz"
    for cut in (3, 10, 200, len(data) // 3, len(data) - 20, len(data) - 1):
        path.write_bytes(data[:cut])
        r, out = _label(path, tmp_path)
        _check_cut(r, out)
    for at in (40, len(data) // 2, len(data) - 6, len(data) - 2):
        flipped = bytearray(data)
        flipped[at] ^= 0xFF
        path.write_bytes(bytes(flipped))
        r, out = _label(path, tmp_path)
        _check_cut(r, out)


def test_diff_names_its_arguments_when_a_policy_is_missing(tmp_path):
    """`diff missing.yaml new.yaml` says which argument is missing and the usage, not a --policy option diff lacks."""
    r = subprocess.run([*CLI, "diff", str(tmp_path / "missing.yaml"), str(EXAMPLES / "edge" / "policy.yaml")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "--policy" not in r.stderr
    assert "missing.yaml does not exist" in r.stderr and "the running policy" in r.stderr
    assert "activelabel diff OLD.yaml NEW.yaml" in r.stderr
    r = subprocess.run([*CLI, "diff", str(EXAMPLES / "edge" / "policy.yaml"), str(tmp_path / "new.yaml")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "the candidate policy" in r.stderr and "--policy" not in r.stderr
