"""Policy text holding terminal control characters (ESC, OSC, CR, bidi overrides) is printed escaped, never raw."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")
# Each would act on a terminal: clear the screen, set the window title, return to column 0, reverse the text.
HOSTILE = {"\x1b[2J": "\\x1b[2J", "\x1b]0;pwned\x07": "\\x1b]0;pwned\\x07", "\r": "\\x0d", "\u202e": "\\u202e",
           "\x9b": "\\x9b", "\x00": "\\x00", "\x7f": "\\x7f", "\n": "\\n",
           # a row break for editors and splitlines(), a hidden character, a direction mark
           "\u2028": "\\u2028", "\u200b": "\\u200b", "\u200f": "\\u200f"}
RAW = [k for k in HOSTILE if k != "\n"]


def _yaml_escape(text: str) -> str:
    return "".join(f"\\u{ord(c):04x}" if ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 or 0x200B <= ord(c) <= 0x202E else c
                   for c in text)


def _policy(tmp_path: Path) -> Path:
    tests = []
    for i, bad in enumerate(HOSTILE):
        tests.append(f'  - name: "t{i} {_yaml_escape(bad)} end"\n    event: {{n: {i}}}\n    expect: {{l: "v{i}"}}\n')
    text = ("apiVersion: activelabel/v1\nkind: Policy\nmetadata: {name: ctl}\nlabels:\n  l: {type: string}\nrules:\n"
            + "".join(f'  - {{id: r{i}, label: l, value: "v{i} {_yaml_escape(bad)}", when: "event.n == {i}"}}\n'
                      for i, bad in enumerate(HOSTILE))
            + "tests:\n" + "".join(tests))
    file = tmp_path / "policy.yaml"
    file.write_text(text)
    return file


def _env(columns: int | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR", "FORCE_COLOR", "TERM")}
    env["PYTHONPATH"] = SRC
    if columns:
        env.update(COLUMNS=str(columns), TERM="xterm-256color")
    return env


def _on_a_terminal(args: list[str], cwd: Path) -> tuple[int, str]:
    """The command on an 80-column pseudo-terminal: its exit code and raw output (escape codes kept)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 80, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "activelabel", *args], cwd=cwd, env=_env(80),
                            stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed its side
            break
        if not data:
            break
        chunks.append(data)
    code = proc.wait(timeout=120)
    os.close(master)
    return code, b"".join(chunks).decode("utf-8", "replace")


def _assert_escaped(text: str) -> None:
    for bad in RAW:
        assert bad not in text.replace("\r\n", "\n"), f"{bad!r} printed raw"
    for i, shown in enumerate(HOSTILE.values()):
        assert f"t{i} {shown} end" in text, (shown, text)


def test_test_names_with_control_characters_are_escaped_in_a_pipe(tmp_path):
    """`activelabel test | cat` shows each hostile test name with its control characters as \\x escapes, on one line."""
    file = _policy(tmp_path)
    r = subprocess.run([sys.executable, "-m", "activelabel", "test", str(file)], capture_output=True, text=True,
                       timeout=120, env=_env(None))
    assert r.returncode == 1, r.stderr  # the rules' values carry the controls too, so every test fails
    _assert_escaped(r.stdout)
    assert "\x1b" not in r.stdout + r.stderr
    assert f"{len(HOSTILE)} failed" in r.stdout


def test_test_names_with_control_characters_are_escaped_on_a_terminal(tmp_path):
    """On a real terminal the same names arrive escaped: the only ESC bytes are the CLI's own colours."""
    code, screen = _on_a_terminal(["test", str(_policy(tmp_path))], tmp_path)
    assert code == 1
    _assert_escaped(screen)
    assert "\x1b]0;pwned" not in screen and "\x1b[2J" not in screen


def test_validate_escapes_names_and_values_of_failing_tests(tmp_path):
    """`activelabel validate` lists failing tests with names and label values escaped, in a pipe and on a terminal."""
    file = _policy(tmp_path)
    r = subprocess.run([sys.executable, "-m", "activelabel", "validate", str(file)], capture_output=True, text=True,
                       timeout=120, env=_env(None))
    assert r.returncode == 1
    for bad in RAW:
        assert bad not in r.stderr
    assert "\\x1b]0;pwned\\x07" in r.stderr
    code, screen = _on_a_terminal(["validate", str(file)], tmp_path)
    assert code == 1 and "\x1b]0;pwned" not in screen and "\\x1b]0;pwned\\x07" in screen
