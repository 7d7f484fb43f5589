"""What every command shares: the consoles, loading a labeler with a readable refusal."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from activelabel.errors import ActiveLabelError, PolicyError

if TYPE_CHECKING:
    from activelabel.engine import Labeler

out = Console()
err = Console(stderr=True)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``message`` on stderr and exit with ``code``."""
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(code)


def print_policy_error(exc: PolicyError) -> None:
    n = len(exc.issues)
    err.print(f"[bold red]policy refused:[/] {n} error{'s' if n != 1 else ''}", highlight=False)
    for issue in exc.issues:
        err.print(issue.format(), highlight=False, markup=False)


def open_labeler(policy: Path, **kwargs: object) -> Labeler:
    """The compiled labeler for ``policy``, or exit 1 with every policy error listed."""
    from activelabel.engine import Labeler

    if not policy.exists():
        fail(f"policy file {policy} does not exist (pass --policy PATH to a policy YAML)")
    try:
        return Labeler.from_file(policy, **kwargs)
    except PolicyError as exc:
        print_policy_error(exc)
        raise typer.Exit(1) from exc
    except ActiveLabelError as exc:
        fail(str(exc))
