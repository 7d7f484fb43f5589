"""Files a policy reads are regular, bounded and inside allowed folders; errors never quote foreign files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from activelabel import load_policy
from activelabel.errors import PolicyError
from activelabel.policy import MAX_POLICY_FILE_BYTES, load_policy_text

HEADER = """apiVersion: activelabel/v1
kind: Policy
metadata: {name: files}
labels:
  l: {type: string}
"""

RULES = """rules:
  - {id: r, label: l, value: a}
"""

SECRET = "s3cret-value-9f2c41d7"


def validate(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`activelabel ... validate` in a subprocess, wide enough that no line wraps; a hang fails the test."""
    full = {**os.environ, "COLUMNS": "10000", **(env or {})}
    return subprocess.run([sys.executable, "-m", "activelabel", *args], capture_output=True, text=True, timeout=60, env=full)


def test_an_included_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    """`include:` of a FIFO (nobody writing) is refused as not a regular file instead of blocking forever."""
    os.mkfifo(tmp_path / "pipe.yaml")
    (tmp_path / "policy.yaml").write_text(HEADER + 'include: ["pipe.yaml"]\n')
    r = validate("validate", str(tmp_path / "policy.yaml"))
    assert r.returncode == 1
    assert "cannot include `pipe.yaml`: a FIFO, not a regular file" in r.stderr


def test_dev_zero_as_include_or_table_is_refused_even_when_its_folder_is_allowed(tmp_path: Path) -> None:
    """`/dev/zero` is a character device: refused at once as include and as enricher table, never read."""
    (tmp_path / "policy.yaml").write_text(
        HEADER + 'include: ["/dev/zero"]\nenrichers:\n  - {name: t, type: lookup, file: /dev/zero, format: csv, key: event.k}\n'
    )
    r = validate("--allow-path", "/dev", "validate", str(tmp_path / "policy.yaml"))
    assert r.returncode == 1
    assert "cannot include `/dev/zero`: a character device, not a regular file" in r.stderr
    assert "enricher `t`: cannot read table `/dev/zero`: a character device, not a regular file" in r.stderr


def test_an_oversized_include_is_refused_with_the_limit(tmp_path: Path) -> None:
    """An included file over the size limit is refused, naming its size and the limit."""
    (tmp_path / "big.yaml").write_bytes(b"#" * (MAX_POLICY_FILE_BYTES + 1))
    (tmp_path / "policy.yaml").write_text(HEADER + 'include: ["big.yaml"]\n')
    with pytest.raises(PolicyError, match="over the 8,388,608-byte limit"):
        load_policy(tmp_path / "policy.yaml")


def test_includes_and_tables_outside_the_policy_folder_need_an_allow(tmp_path: Path) -> None:
    """An include or table in another folder is refused with how to allow it; `--allow-path DIR` allows it."""
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "rules.yaml").write_text(RULES)
    (shared / "table.csv").write_text("k,tier\nx,gold\n")
    policy_dir = tmp_path / "policy"
    policy_dir.mkdir()
    (policy_dir / "policy.yaml").write_text(
        HEADER + 'include: ["../shared/rules.yaml"]\n'
        "enrichers:\n  - {name: t, type: lookup, file: ../shared/table.csv, key: event.k}\n"
    )
    refused = validate("validate", str(policy_dir / "policy.yaml"))
    assert refused.returncode == 1
    assert "cannot include `../shared/rules.yaml`: outside the policy's folder" in refused.stderr
    assert "enricher `t`: table" in refused.stderr and "is outside the policy's folder" in refused.stderr
    assert "--allow-path DIR" in refused.stderr
    allowed = validate("--allow-path", str(shared), "validate", str(policy_dir / "policy.yaml"))
    assert allowed.returncode == 0, allowed.stderr
    assert "1 rules, 1 enrichers" in allowed.stdout
    by_env = validate("validate", str(policy_dir / "policy.yaml"), env={"ACTIVELABEL_ALLOW_PATHS": str(shared)})
    assert by_env.returncode == 0, by_env.stderr
    # the Python API takes the same allow list
    assert len(load_policy(policy_dir / "policy.yaml", allow_paths=[shared]).rules) == 1


def test_a_symlink_inside_the_folder_cannot_reach_outside(tmp_path: Path) -> None:
    """A link in the policy folder pointing at /etc/passwd is judged by its target, so it is refused."""
    (tmp_path / "users.yaml").symlink_to("/etc/passwd")
    (tmp_path / "policy.yaml").write_text(HEADER + 'include: ["users.yaml"]\n')
    with pytest.raises(PolicyError, match="outside the policy's folder"):
        load_policy(tmp_path / "policy.yaml")


def test_errors_never_quote_proc_environ_or_etc_passwd_even_when_allowed(tmp_path: Path) -> None:
    """With /proc and /etc allowed, the errors name the files but quote none of their contents."""
    (tmp_path / "policy.yaml").write_text(HEADER + 'include: ["/proc/self/environ", "/etc/passwd"]\n')
    r = validate("--allow-path", "/proc", "--allow-path", "/etc", "validate", str(tmp_path / "policy.yaml"),
                 env={"ACTIVELABEL_TEST_SECRET": SECRET})
    assert r.returncode == 1
    out = r.stdout + r.stderr
    assert "/proc/self/environ:1:1: invalid YAML" in out
    assert "/etc/passwd:1:1: a policy must be a mapping" in out
    assert SECRET not in out
    first_passwd_line = Path("/etc/passwd").read_text().splitlines()[0]
    assert first_passwd_line not in out
    assert "ACTIVELABEL_TEST_SECRET" not in out


def test_a_yaml_mapping_that_is_not_a_policy_is_not_quoted(tmp_path: Path) -> None:
    """A secrets file that parses as YAML but has no policy keys is reported without an excerpt of its lines."""
    (tmp_path / "secrets.yaml").write_text(f"api_token: {SECRET}\n")
    (tmp_path / "policy.yaml").write_text(HEADER + 'include: ["secrets.yaml"]\n')
    with pytest.raises(PolicyError) as info:
        load_policy(tmp_path / "policy.yaml")
    assert SECRET not in str(info.value)
    assert "secrets.yaml" in str(info.value)


def test_an_excerpt_of_a_long_line_is_a_short_window_at_the_caret() -> None:
    """A 5,000-character line is quoted as a window of at most ~120 characters, the caret still under the spot."""
    filler = "x" * 2500
    text = HEADER + f'rules:\n  - {{id: r, label: nope, value: a, description: "{filler}"}}\n' + "#" + "y" * 5000 + "\n"
    with pytest.raises(PolicyError) as info:
        load_policy_text(text, "p.yaml")
    issue = next(i for i in info.value.issues if "unknown label `nope`" in i.message)
    shown, caret = issue.excerpt.splitlines()
    assert len(shown) <= 130
    assert shown[len(caret) - 1 : len(caret) - 1 + 4] == "nope"


def test_control_characters_in_an_excerpt_are_replaced() -> None:
    """An excerpt shows a control character as `?`, so it cannot rewrite the terminal or the log line."""
    text = HEADER + 'rules:\n  - {id: "r\\e", label: nope, value: "\x1b[2J"}\n'
    with pytest.raises(PolicyError) as info:
        load_policy_text(text, "p.yaml")
    assert all("\x1b" not in (i.excerpt or "") for i in info.value.issues)


def test_a_glob_include_outside_the_folder_is_refused_before_walking(tmp_path: Path) -> None:
    """`include: ["/**/*.yaml"]` is refused by its fixed prefix, so the loader never walks the whole disk."""
    (tmp_path / "policy.yaml").write_text(HEADER + 'include: ["/**/*.yaml", "../*/x*.yaml"]\n')
    with pytest.raises(PolicyError) as info:
        load_policy(tmp_path / "policy.yaml")
    messages = [i.message for i in info.value.issues]
    assert messages == [
        f"cannot include `/**/*.yaml`: outside the policy's folder ({tmp_path.resolve()})",
        f"cannot include `../*/x*.yaml`: outside the policy's folder ({tmp_path.resolve()})",
    ]


def test_a_glob_include_inside_the_folder_still_works(tmp_path: Path) -> None:
    """A glob under the policy's folder expands as before."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "a.yaml").write_text(RULES)
    (tmp_path / "policy.yaml").write_text(HEADER + 'include: ["rules/*.yaml"]\n')
    assert [r.id for r in load_policy(tmp_path / "policy.yaml").rules] == ["r"]
