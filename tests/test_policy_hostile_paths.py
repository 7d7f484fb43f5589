"""Hostile file paths in a policy (NUL and other control bytes, odd characters) are policy errors, never tracebacks."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "service"))
from harness import POLICY, auth, build_app

from activelabel.errors import PolicyError
from activelabel.policy import load_policy
from activelabel.service.testing import serve_in_thread

HEAD = "apiVersion: activelabel/v1\nkind: Policy\nmetadata: {name: hostile}\nlabels:\n  a: {type: bool}\n"
# Every C0 control, DEL and a few C1 controls, each as a YAML escape, alone and inside a name; then odd but legal text.
CONTROL = [f"\\x{c:02x}" for c in [*range(0x20), 0x7F, 0x85, 0x9B]]
HOSTILE = [*CONTROL, *(f"t{c}.csv" for c in CONTROL), "\\0x", "\\x1b[31mred.csv"]
ODD = ["é" * 100 + ".csv", "a" * 5000 + ".csv", "../" * 50 + "x.csv", "sp ace.csv", "tab\u2028.csv", "💥.csv", "/", "."]


def _policy(tmp_path: Path, where: str, path: str) -> Path:
    if where == "include":
        body = HEAD + f'include: ["{path}"]\n'
    elif where == "enricher":
        body = HEAD + f'enrichers:\n  - name: t\n    type: lookup\n    file: "{path}"\n    format: csv\n    key: event.k\n'
    else:
        body = HEAD + f'models:\n  - name: m\n    label: a\n    type: onnx\n    path: "{path}"\n'
    file = tmp_path / "policy.yaml"
    file.write_text(body)
    return file


@pytest.mark.parametrize("where", ["include", "enricher", "model"])
def test_control_bytes_in_a_path_are_a_policy_error_at_the_path_line(tmp_path, where):
    """A path holding a control byte (NUL included) is refused with the file and line of the path, for every control byte."""
    for path in HOSTILE:
        file = _policy(tmp_path, where, path)
        with pytest.raises(PolicyError) as err:
            load_policy(file)
        issues = [i for i in err.value.issues if "must be a file path" in i.message]
        assert issues, (path, [i.message for i in err.value.issues])
        line = next(n for n, text in enumerate(file.read_text().splitlines(), 1) if f'"{path}"' in text)
        assert issues[0].line == line, path
        assert "\x00" not in str(err.value) and "\x1b" not in str(err.value)


@pytest.mark.parametrize("where", ["include", "enricher", "model"])
def test_odd_paths_load_or_fail_as_policy_errors(tmp_path, where):
    """Odd but legal paths (long, non-ASCII, climbing, a folder) either load or raise PolicyError, never anything else."""
    for path in ODD:
        file = _policy(tmp_path, where, path)
        try:
            load_policy(file)
        except PolicyError as exc:
            assert exc.issues and all(i.line > 0 for i in exc.issues), path


def test_validate_reports_a_nul_include_with_file_and_line(tmp_path):
    """`activelabel validate` on an include of "\\0x" exits 1 with file:line and no traceback."""
    file = _policy(tmp_path, "include", "\\0x")
    r = subprocess.run([sys.executable, "-m", "activelabel", "validate", str(file)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr + r.stdout
    assert f"{file.name}:6:" in r.stderr + r.stdout


def test_reload_of_a_policy_with_a_nul_table_path_is_422(tmp_path):
    """POST /v1/policy/reload of a policy whose table path holds a NUL answers 422 with the line, not 500."""
    policy = tmp_path / "policy.yaml"
    shutil.copy(POLICY, policy)
    with serve_in_thread(build_app(policy)) as url, httpx.Client(base_url=url) as client:
        text = POLICY.read_text()
        policy.write_text(text + '\nenrichers:\n  - name: t\n    type: lookup\n    file: "t\\0.csv"\n    format: csv\n    key: event.k\n')
        r = client.post("/v1/policy/reload", headers=auth("admin-token"))
        assert r.status_code == 422, r.text
        errors = r.json()["errors"]
        assert any("control characters" in e["message"] and e["line"] > 0 for e in errors), json.dumps(errors)
