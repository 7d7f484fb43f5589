"""Entry point of the `activelabel` command.

Each command group lives in its own module and registers itself on ``app``;
this module only assembles them, so adding a command never touches another.
"""

from __future__ import annotations

import importlib
import sys

import typer
from rich.markup import escape

app = typer.Typer(
    name="activelabel",
    help="Active labeling runtime: attach governed, explainable labels to events as they flow.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# Modules that define commands on `app` (imported for their side effect).
# Each one owns one command group; keep this list sorted.
_COMMAND_MODULES = [
    "activelabel.cli.diff_cmd",
    "activelabel.cli.history_cmd",
    "activelabel.cli.label_cmd",
    "activelabel.cli.ops_cmd",
    "activelabel.cli.pii_cmd",
    "activelabel.cli.policy_cmd",
]

_OPTIONAL_COMMAND_MODULES = [
    "activelabel.cli.audit_cmd",
    "activelabel.cli.feedback_cmd",
    "activelabel.cli.loop_cmd",
    "activelabel.cli.report_cmd",
    "activelabel.cli.review_cmd",
    "activelabel.cli.rollout_cmd",
    "activelabel.cli.serve_cmd",
    "activelabel.cli.stream_cmd",
    "activelabel.cli.tap_cmd",
    "activelabel.cli.train_cmd",
]


#: The module that defines each top-level command (tests/test_cli_registry.py checks it against
#: what the modules register). It lets one command start without building the other thirty:
#: typer reads every registered command's signature before it runs any.
COMMAND_MODULES = {
    "audit": "activelabel.cli.audit_cmd", "demo": "activelabel.cli.label_cmd", "diff": "activelabel.cli.diff_cmd",
    "explain": "activelabel.cli.label_cmd", "feedback": "activelabel.cli.feedback_cmd",
    "label": "activelabel.cli.label_cmd", "loop": "activelabel.cli.loop_cmd", "ops": "activelabel.cli.ops_cmd",
    "pii": "activelabel.cli.pii_cmd", "policy": "activelabel.cli.history_cmd", "report": "activelabel.cli.report_cmd",
    "review": "activelabel.cli.review_cmd", "rollout": "activelabel.cli.rollout_cmd",
    "serve": "activelabel.cli.serve_cmd", "stream": "activelabel.cli.stream_cmd", "tap": "activelabel.cli.tap_cmd",
    "test": "activelabel.cli.policy_cmd", "train": "activelabel.cli.train_cmd",
    "validate": "activelabel.cli.policy_cmd",
}
#: Defines the global options (``--allow-path``): always registered.
_ROOT_MODULE = "activelabel.cli.policy_cmd"


def _command_named(argv: list[str]) -> str | None:
    """The top-level command ``argv`` runs, if it names one (global options before it skipped)."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--allow-path":
            i += 2
        elif arg.startswith("--allow-path="):
            i += 1
        else:
            return arg if arg in COMMAND_MODULES else None
    return None


def _register(argv: list[str] | None = None) -> None:
    """Import the command modules: only the one ``argv`` runs when it names a command, else all of them."""
    command = _command_named(argv) if argv is not None else None
    if command is not None:
        try:
            importlib.import_module(COMMAND_MODULES[command])
        except ModuleNotFoundError as exc:
            if exc.name != COMMAND_MODULES[command]:
                raise
        else:
            importlib.import_module(_ROOT_MODULE)
            return
    for name in _COMMAND_MODULES:
        importlib.import_module(name)
    for name in _OPTIONAL_COMMAND_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            # Only tolerate the module itself being absent, never a broken import inside it.
            if exc.name != name:
                raise


def _help_settings() -> dict[str, int]:
    """Click context settings for ``--help`` and usage errors where they go.

    In a terminal, typer's rich panels fit the window. In a pipe or a file they would be
    drawn 80 columns wide with long defaults cut (``…``) and short help truncated, so there
    help is click's plain text, one line per option and command, never wrapped or cut.
    """
    if sys.stdout.isatty() and sys.stderr.isatty():
        return {}
    import typer.core

    from activelabel.cli._common import PIPE_WIDTH

    typer.core.HAS_RICH = False  # read per call by typer's help and error formatting
    return {"terminal_width": PIPE_WIDTH, "max_content_width": PIPE_WIDTH}


def main() -> None:
    _register(sys.argv[1:])
    try:
        app(**_help_settings())
    except ImportError as exc:
        # A command reached a module of an optional extra that is not installed: name the extra
        # (every command imports such modules lazily, so this is the one place that sees them).
        from activelabel._extras import missing_extra

        missing = missing_extra(exc)
        if missing is None:
            raise
        from activelabel.cli._common import err

        err.print(f"[bold red]error:[/] {escape(str(missing))}", highlight=False)
        raise SystemExit(1) from None


if __name__ == "__main__":
    # Run through the canonical module so command modules register on the same `app`.
    from activelabel.cli.main import main as _main

    _main()
