"""Command output in a pipe is whole plain lines; in an 80-column terminal it fits the window.

Each command runs as a real subprocess: once with its output captured through a pipe, once on
a real pseudo-terminal (python's ``pty``) whose window size is set to 80 columns with
``TIOCSWINSZ``, the way a terminal emulator sets it.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import orjson
from rich.cells import cell_len

from activelabel.quality.store import DecisionStore

REPO = Path(__file__).resolve().parents[1]
SRC = str(REPO / "src")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)")
LONG_VALUE = "alert_category_with_a_long_descriptive_name"
LONG_RULES = [f"rule-detecting-{kind}-conditions-in-the-storage-layer" for kind in ("disk", "raid", "fs")]


def _env(columns: int | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR", "FORCE_COLOR", "TERM")}
    env["PYTHONPATH"] = SRC
    if columns is not None:
        env["COLUMNS"] = str(columns)
        env["TERM"] = "xterm-256color"
    return env


def run_piped(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """The command with stdout and stderr captured through pipes."""
    return subprocess.run([sys.executable, "-m", "activelabel", *args], cwd=cwd, env=_env(), capture_output=True,
                          text=True, timeout=120, check=False)


def run_in_terminal(args: list[str], cwd: Path, columns: int = 80) -> tuple[int, str]:
    """The command on a pseudo-terminal ``columns`` wide; its screen output without escape codes."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "activelabel", *args], cwd=cwd, env=_env(columns),
                            stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed its side of the terminal
            break
        if not data:
            break
        chunks.append(data)
    code = proc.wait(timeout=120)
    os.close(master)
    return code, ANSI.sub("", b"".join(chunks).decode("utf-8", "replace")).replace("\r\n", "\n")


def assert_fits(screen: str, columns: int = 80) -> None:
    wide = [line for line in screen.splitlines() if cell_len(line) > columns]
    assert not wide, f"{len(wide)} lines wider than {columns} columns, e.g. {wide[0]!r}"


def assert_plain(text: str) -> None:
    assert "\x1b" not in text, "escape codes in piped output"
    assert "…" not in text, "truncated cell in piped output"
    assert not re.search(r"\[/?(bold|red|green|yellow|dim)\b", text), "rich markup printed literally"


def _wide_store(tmp_path: Path) -> Path:
    """A store whose label values and rule ids are longer than an 80-column table leaves room for."""
    db = tmp_path / "wide.db"
    rows = []
    for i in range(30):
        rule = LONG_RULES[i % 3]
        value = f"{LONG_VALUE}_{i % 4}"
        decision = {"labels": {"category": value}, "sources": {"category": f"rule:{rule}"},
                    "confidences": {"category": 0.9},
                    "explain": {"labels": {"category": {"value": value, "source": f"rule:{rule}",
                                                        "matched": [f"rule:{rule}"], "lost": []}}}}
        rows.append((f"r{i}", {"message": f"m{i}"}, decision))
    with DecisionStore(db) as store:
        store.record_many(rows)
        for i in range(0, 30, 2):
            store.add_ground_truth(f"r{i}", "category", f"{LONG_VALUE}_{(i // 2) % 4}")
    return db


def test_piped_report_shows_long_values_and_rule_ids_whole(tmp_path):
    """`report > file` keeps every label value and rule id whole, with no escape codes or markup."""
    db = _wide_store(tmp_path)
    res = run_piped(["report", "--store", str(db)], tmp_path)
    assert res.returncode == 0, res.stderr
    assert_plain(res.stdout)
    for rule in LONG_RULES:
        assert f"rule:{rule}" in res.stdout
    assert f"{LONG_VALUE}_3" in res.stdout


def test_report_in_an_80_column_terminal_fits_the_window(tmp_path):
    """In a real 80-column terminal the report's tables wrap their cells to fit instead of overflowing."""
    code, screen = run_in_terminal(["report", "--store", str(_wide_store(tmp_path))], tmp_path)
    assert code == 0, screen
    assert "Labels" in screen
    assert_fits(screen)


def test_piped_review_export_has_real_columns(tmp_path):
    """`review export | cat` prints the queue table with each record id and value whole (no zero-width columns)."""
    db = _wide_store(tmp_path)
    res = run_piped(["review", "export", "--store", str(db), "--label", "category", "--budget", "10", "--output", str(tmp_path / "t.json")],
                    tmp_path)
    assert res.returncode == 0, res.stderr
    assert_plain(res.stdout)
    table_lines = [line for line in res.stdout.splitlines() if re.search(r"\br\d+\b", line)]
    assert table_lines, res.stdout
    assert any(f"{LONG_VALUE}_" in line for line in table_lines), res.stdout


def test_review_export_in_an_80_column_terminal_fits(tmp_path):
    """In an 80-column terminal the review queue table fits the window."""
    code, screen = run_in_terminal(["review", "export", "--store", str(_wide_store(tmp_path)), "--label", "category",
                                    "--budget", "10", "--output", str(tmp_path / "t.json")], tmp_path)
    assert code == 0, screen
    assert_fits(screen)


BAD_POLICY = """\
apiVersion: activelabel/v1
kind: Policy
metadata: {name: wide}
labels:
  level: {type: enum, values: [low, high]}
rules:
  - id: a-rule-with-a-rather-long-identifier-so-that-the-line-is-wide
    label: level
    value: high
    when: 'event.message_text_field_with_long_name.startsWith("xxxxxxxxxxxxxxxxxxxxxxxxxxxx") && event.status == 5 &&'
"""


def _caret_target(text: str) -> str:
    """The character the caret points at in an error excerpt (the line above the caret line)."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.strip() == "^" and i > 0:
            return lines[i - 1][line.index("^")] if line.index("^") < len(lines[i - 1]) else ""
    raise AssertionError(f"no caret line in {text!r}")


def test_piped_validate_keeps_the_caret_under_the_error(tmp_path):
    """`validate 2> file` keeps the excerpt on one line, so the caret points at the end of the expression."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(BAD_POLICY)
    res = run_piped(["validate", str(policy)], tmp_path)
    assert res.returncode == 1
    assert_plain(res.stderr)
    assert "when: 'event.message_text_field_with_long_name" in res.stderr
    assert _caret_target(res.stderr) == "'"  # the expression ends with `&&'`: the operand is missing there


def test_validate_in_an_80_column_terminal_lets_the_terminal_wrap(tmp_path):
    """In a terminal the excerpt is written as one logical line (the terminal wraps it), the caret under the spot."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(BAD_POLICY)
    code, screen = run_in_terminal(["validate", str(policy)], tmp_path)
    assert code == 1
    # The terminal wraps a long line by itself; rich must not add its own line breaks inside it.
    assert "event.message_text_field_with_long_name.startsWith(\"xxxxxxxxxxxxxxxxxxxxxxxxxxxx\") && event.status == 5 &&'" \
        in screen
    assert _caret_target(screen) == "'"


def test_piped_test_command_prints_whole_lines(tmp_path):
    """`activelabel test | cat` prints a failing test's expected and got values on one line each, unwrapped."""
    policy = tmp_path / "policy.yaml"
    long = "x" * 120
    policy.write_text(f"""\
apiVersion: activelabel/v1
kind: Policy
metadata: {{name: t}}
labels:
  note: {{type: string}}
rules:
  - id: r
    label: note
    value_expr: event.msg
tests:
  - name: a test whose expectation is long
    event: {{msg: "{long}"}}
    expect: {{note: "{long}y"}}
""")
    res = run_piped(["test", str(policy)], tmp_path)
    assert res.returncode == 1
    assert_plain(res.stdout)
    assert f'note: expected "{long}y", got "{long}"' in res.stdout


def test_demo_fits_an_80_column_terminal(tmp_path):
    """`demo` in a real 80-column terminal prints one block per record within 80 columns, every label readable."""
    code, screen = run_in_terminal(["demo", "--output", str(tmp_path / "edge.jsonl")], tmp_path)
    assert code == 0, screen
    assert "labeled records" in screen
    assert_fits(screen)
    for name in ("error_class", "bot", "static_asset", "size_band", "client_kind", "priority"):
        assert re.search(rf"^  {name}: \S", screen, re.M), name  # a label with its value, not a zero-width column
    assert "…" not in screen


def test_demo_on_a_wide_terminal_is_a_table(tmp_path):
    """On a terminal wide enough for every column, `demo` prints its records as one table."""
    code, screen = run_in_terminal(["demo", "--output", str(tmp_path / "edge.jsonl")], tmp_path, columns=400)
    assert code == 0, screen
    header = next(line for line in screen.splitlines() if "status" in line and "path" in line)
    for name in ("error_class", "bot", "priority", "client_kind"):
        assert name in header
    assert "…" not in screen


def test_piped_demo_prints_whole_unpadded_lines(tmp_path):
    """`demo | cat` prints every record's path, user agent and labels whole: no `…`, no trailing padding."""
    res = run_piped(["demo", "--output", str(tmp_path / "edge.jsonl")], tmp_path)
    assert res.returncode == 0, res.stderr
    assert "\x1b" not in res.stdout + res.stderr
    assert_plain(res.stdout)
    assert not [line for line in res.stdout.splitlines() if line != line.rstrip()]
    shown = [orjson.loads(line) for line in (tmp_path / "edge.jsonl").read_bytes().splitlines()]
    agents = [line.removeprefix("  user agent: ") for line in res.stdout.splitlines() if line.startswith("  user agent: ")]
    assert agents and all(any(a == r.get("user_agent") for r in shown) for a in agents)
    for name in ("error_class", "bot", "priority"):
        assert f"  {name}: " in res.stdout


EVENT = orjson.dumps({"status": 503, "path": "/api/v1/payments/" + "x" * 60, "user_agent": "curl/8.1 " + "y" * 40}).decode()


def test_explain_fits_an_80_column_terminal(tmp_path):
    """`explain` in a real 80-column terminal prints one block per label within 80 columns, words never split."""
    code, screen = run_in_terminal(["explain", "--policy", str(REPO / "examples/edge/policy.yaml"), EVENT], tmp_path)
    assert code == 0, screen
    assert_fits(screen)
    assert "- label: error_class" in screen and '  value: "server_error"' in screen
    assert "matched rules: status-5xx, status-4xx, status-3xx, status-2xx" in screen
    for word in ("error_class", "server_error", "status-5xx", "client_kind", "static_asset"):
        assert word in screen, f"{word} split across lines"


def test_piped_explain_prints_whole_unpadded_lines(tmp_path):
    """`explain | cat` prints each label's value and matched rules whole on short lines, with no trailing padding."""
    res = run_piped(["explain", "--policy", str(REPO / "examples/edge/policy.yaml"), EVENT], tmp_path)
    assert res.returncode == 0, res.stderr
    assert_plain(res.stdout)
    lines = res.stdout.splitlines()
    assert not [line for line in lines if line != line.rstrip()]
    assert max(len(line) for line in lines) < 120
    at = lines.index("- label: error_class")
    assert lines[at + 1] == '  value: "server_error"'
    assert "  matched rules: status-5xx, status-4xx, status-3xx, status-2xx" in lines


DLQ_HELP = ("Dead-letter JSONL for lines that cannot be labeled, created only if there are any (default: "
            "OUTPUT.dlq.jsonl next to a regular output file, else ./activelabel.dlq.jsonl: for stdout, /dev/null "
            "or a pipe).")


def test_piped_help_is_plain_whole_lines(tmp_path):
    """`activelabel label --help > file`: click's plain help, each option's text whole on its own line, no boxes."""
    res = run_piped(["label", "--help"], tmp_path)
    assert res.returncode == 0, res.stderr
    assert_plain(res.stdout)
    assert not re.search("[│╭╰─]", res.stdout), "box drawing in piped help"
    dlq = [line for line in res.stdout.splitlines() if line.lstrip().startswith("--dlq")]
    assert len(dlq) == 1 and dlq[0].endswith(DLQ_HELP), dlq


def test_piped_command_list_is_not_cut(tmp_path):
    """`activelabel --help | less`: each command's short help is whole (no `...`)."""
    res = run_piped(["--help"], tmp_path)
    assert res.returncode == 0, res.stderr
    rollout = [line for line in res.stdout.splitlines() if line.lstrip().startswith("rollout ")]
    assert rollout and rollout[0].rstrip().endswith("with automatic promote or rollback."), rollout
    assert "..." not in res.stdout.split("Commands:")[1]


def test_help_in_an_80_column_terminal_fits(tmp_path):
    """On a terminal, help stays typer's panels and fits the window."""
    code, screen = run_in_terminal(["label", "--help"], tmp_path)
    assert code == 0, screen
    assert "╭─ Options" in screen
    assert_fits(screen)
