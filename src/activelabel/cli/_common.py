"""What every command shares: the consoles, loading a labeler with a readable refusal.

Every command prints through ``out`` (stdout) and ``err`` (stderr), made by
:func:`make_console`, so output is right wherever it goes: in a terminal, tables fit
its width and markup becomes colour; in a pipe or a file, lines are plain text, never
wrapped or truncated, with no escape codes. Control characters in what is printed
(a test name or label value holding ESC, say) are shown as ``\x1b`` escapes, never
written raw, so a policy or an event cannot drive the terminal (:func:`printable`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer
from rich.console import Console, ConsoleDimensions
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from activelabel._text import printable as printable  # re-exported: every command escapes with it
from activelabel.errors import ActiveLabelError, MissingExtraError, PolicyError

if TYPE_CHECKING:
    from activelabel.engine import Labeler

#: The width a console assumes when its output is not a terminal: wide enough that no table
#: cell is truncated and no line is wrapped (rich pads nothing to it; tables take what they need).
PIPE_WIDTH = 1_000_000


class CLIConsole(Console):
    """A rich console that decides per print whether it writes to a terminal.

    Not a terminal: the width is :data:`PIPE_WIDTH` (so nothing is cut to 80 columns), no
    colour, no emoji codes, no hyperlinks, and markup is still parsed so ``[green]ok[/]``
    prints as ``ok``. A terminal: rich's own behaviour, tables fit the window.
    """

    @property
    def size(self) -> ConsoleDimensions:
        if self.is_terminal:
            return super().size
        return ConsoleDimensions(PIPE_WIDTH, super().size.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        self._width, self._height = new_size

    def render_str(self, text: str, **kwargs: Any) -> Text:
        # Every string printed (and every table cell) passes here: the one place control characters are escaped.
        return super().render_str(printable(text), **kwargs)


def make_console(*, stderr: bool = False) -> Console:
    """The console every command prints with (``stderr`` for diagnostics and summaries)."""
    # The colour system is chosen once, from the stream as it is now; the width per print.
    return CLIConsole(stderr=stderr, emoji=False, highlight=False)


out = make_console()
err = make_console(stderr=True)


def print_records(console: Console, title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Records as a table where it fits whole (a terminal wide enough), else one block per record.

    A block is ``- first column: value`` then ``  column: value`` lines (empty cells
    left out), so nothing is squeezed to zero width, cut with ``…`` or split mid-word on a
    narrow terminal, and a pipe gets whole unpadded lines. ``title`` and cells are rich
    markup: escape user text in them.
    """
    # A cell holding a newline (a label value from the data) is shown as \n: one row stays one row.
    rows = [[printable(cell, one_line=True) for cell in row] for row in rows]
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(escape(column), overflow="fold")
    for row in rows:
        table.add_row(*row)
    natural = Measurement.get(console, console.options.update_width(PIPE_WIDTH), table).maximum  # unsqueezed
    if console.is_terminal and natural <= console.width:
        console.print(table)
        return
    console.print(title, highlight=False)
    for row in rows:
        console.print()
        first = True
        for column, cell in zip(columns, row, strict=True):
            if cell:
                console.print(f"{'- ' if first else '  '}{escape(column)}: {cell}", highlight=False)
                first = False


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``message`` on stderr and exit with ``code``."""
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(code)


def print_policy_error(exc: PolicyError) -> None:
    n = len(exc.issues)
    err.print(f"[bold red]policy refused:[/] {n} error{'s' if n != 1 else ''}", highlight=False)
    for issue in exc.issues:
        # soft_wrap: the excerpt and its caret stay one line each, so the caret keeps its column.
        err.print(issue.format(), highlight=False, markup=False, soft_wrap=True)


def open_labeler(policy: Path, *, hint: str = "pass --policy PATH to a policy YAML", **kwargs: object) -> Labeler:
    """The compiled labeler for ``policy``, or exit 1 with every policy error listed.

    ``hint`` is what a missing file's error tells the user to do, in the command's own terms.
    """
    from activelabel.engine import Labeler

    if not policy.exists():
        fail(f"policy file {policy} does not exist ({hint})")
    try:
        return Labeler.from_file(policy, **kwargs)
    except PolicyError as exc:
        print_policy_error(exc)
        raise typer.Exit(1) from exc
    except ActiveLabelError as exc:
        fail(str(exc))


def open_candidate(path: Path, what: str = "candidate policy") -> Labeler:
    """A candidate that passed the gate of a reload (validation and its own tests), or exit 1 listing every problem."""
    from activelabel.service.policy_runtime import load_checked_labeler

    if not path.exists():
        fail(f"{what} {path} does not exist")
    try:
        return load_checked_labeler(path, track_conflicts=False)
    except PolicyError as exc:
        print_policy_error(exc)
        raise typer.Exit(1) from exc


def writable_output(path: Path, flag: str) -> None:
    """Exit 1 unless ``path`` can be written as a file, checked before any work is done.

    Its folder is created when missing, as ``-o`` creates the labeled output's: what a
    file written at the end of a run needs is known before the run, not after it.
    """
    existing = path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        fail(f"{flag} {path}: {existing} is a file, not a folder; give a path in a folder you can write")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        fail(f"{flag} {path}: cannot create the folder {path.parent} ({exc.strerror or exc}); "
             "give a path in a folder you can write")
    if path.is_dir():
        fail(f"{flag} {path} is a directory; give the path of a file to write")
    if not os.access(path if path.exists() else path.parent, os.W_OK):
        fail(f"{flag} {path}: permission denied; give a path in a folder you can write")


def _audit_dir_problem(audit: Path) -> str | None:
    """Why the audit log cannot be written in ``audit`` (None: it can be, or be created there)."""
    if audit.exists() and not audit.is_dir():
        return "is a file, not a directory; give --audit a directory (it is created if missing)"
    existing = audit
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"cannot be created: {existing} is a file; give --audit a directory (it is created if missing)"
    # The log writes segments/, checkpoints/, keys/ and takes writer.lock: each must be writable.
    needed = [existing] if existing != audit else [audit, *(audit / n for n in ("segments", "checkpoints", "keys"))]
    for place in needed:
        if place.exists() and not os.access(place, os.W_OK | os.X_OK):
            return (f"cannot be written: permission denied on {place}; give --audit a directory you can write, "
                    "or run as the user who owns the log")
    lock = audit / "writer.lock"
    if lock.exists() and not os.access(lock, os.W_OK):
        return (f"cannot be written: permission denied on {lock}; give --audit a directory you can write, "
                "or run as the user who owns the log")
    return None


def audit_options(audit: Path, key: Path | None, level: str | None, policy_file: Path | None) -> Callable[[Any], Any]:
    """How `--audit DIR --audit-key --audit-level --audit-policy` open the log for a policy (exit 2 when they cannot).

    A directory that cannot hold the log (a regular file, a read-only folder or log) is
    refused here, exit 1, before anything is labeled or served.
    """
    from activelabel.governance.observers import open_audit_log

    problem = _audit_dir_problem(audit)
    if problem is not None:
        fail(f"--audit {audit} {problem}")

    def open_for(policy: Any) -> Any:
        try:
            return open_audit_log(str(audit), policy=policy, key_file=str(key) if key else None, level=level,
                                  level_policy_file=str(policy_file) if policy_file else None)
        except MissingExtraError as exc:
            fail(str(exc))  # the install, not the options: as every command needing an extra does
        except ActiveLabelError as exc:
            fail(str(exc), 2)
        except OSError as exc:  # what the check above cannot see (an ACL, a full disk): still one line
            where = exc.filename or audit
            fail(f"--audit {audit}: cannot write the audit log ({exc.strerror or exc}: {where}); "
                 "give --audit a directory you can write")

    return open_for
