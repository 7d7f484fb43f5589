"""`activelabel CMD` imports only CMD's module, so the map from commands to modules must be whole and right.

A command missing from ``COMMAND_MODULES`` would still run (every module is imported when
the first word is not a known command), but one filed under the wrong module would be
"No such command": these tests read what the modules really register.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from activelabel.cli import main as cli_main

REPO = Path(__file__).resolve().parents[1]


def _registered() -> dict[str, str]:
    cli_main._register()
    app = cli_main.app
    found = {(c.name or c.callback.__name__): c.callback.__module__ for c in app.registered_commands}
    for group in app.registered_groups:
        found[group.name] = group.typer_instance.registered_commands[0].callback.__module__
    return found


def test_every_command_is_filed_under_the_module_that_defines_it():
    assert _registered() == cli_main.COMMAND_MODULES


def test_the_first_word_picks_the_command_after_global_options():
    named = cli_main._command_named
    assert named(["label", "x.jsonl"]) == "label"
    assert named(["--allow-path", "/data", "label"]) == "label"
    assert named(["--allow-path=/data", "review", "serve"]) == "review"
    assert named(["--help"]) is None
    assert named(["lable"]) is None  # a typo: every command is registered, so click can suggest the right one
    assert named([]) is None


def test_a_command_runs_with_only_its_module_and_a_typo_still_gets_suggestions(tmp_path):
    """In a fresh process: `validate` works, `--allow-path` before it too, and `valdate` is told about `validate`."""
    policy = REPO / "examples" / "edge" / "policy.yaml"
    env_cmd = [sys.executable, "-m", "activelabel"]
    ok = subprocess.run([*env_cmd, "--allow-path", str(tmp_path), "validate", str(policy)], capture_output=True,
                        text=True, timeout=60, check=False)
    assert ok.returncode == 0, ok.stderr
    typo = subprocess.run([*env_cmd, "valdate", str(policy)], capture_output=True, text=True, timeout=60, check=False)
    assert typo.returncode == 2
    assert "No such command" in typo.stderr and "validate" in typo.stderr
