"""Entry point of the `activelabel` command.

Each command group lives in its own module and registers itself on ``app``;
this module only assembles them, so adding a command never touches another.
"""

from __future__ import annotations

import importlib

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


def _register() -> None:
    for name in _COMMAND_MODULES:
        importlib.import_module(name)
    for name in _OPTIONAL_COMMAND_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            # Only tolerate the module itself being absent, never a broken import inside it.
            if exc.name != name:
                raise


def main() -> None:
    _register()
    try:
        app()
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
