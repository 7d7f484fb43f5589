"""What every command shares: the consoles, loading a labeler with a readable refusal.

Every command prints through ``out`` (stdout) and ``err`` (stderr), made by
:func:`make_console`, so output is right wherever it goes: in a terminal, tables fit
its width and markup becomes colour; in a pipe or a file, lines are plain text, never
wrapped or truncated, with no escape codes. Control characters in what is printed
(a test name or label value holding ESC, say) are shown as ``\x1b`` escapes, never
written raw, so a policy or an event cannot drive the terminal (:func:`printable`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer
from rich.console import Console, ConsoleDimensions
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from activelabel.errors import ActiveLabelError, MissingExtraError, PolicyError

if TYPE_CHECKING:
    from activelabel.engine import Labeler

#: The width a console assumes when its output is not a terminal: wide enough that no table
#: cell is truncated and no line is wrapped (rich pads nothing to it; tables take what they need).
PIPE_WIDTH = 1_000_000


# C0 controls but tab and line feed, DEL, C1 controls, and the bidirectional overrides and
# isolates (they reorder what the terminal shows: "Trojan source").
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_CONTROL_ALL = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _escaped(m: re.Match[str]) -> str:
    code = ord(m.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str, *, one_line: bool = False) -> str:
    """``text`` with control characters written as escapes (``\\x1b``, ``\\u202e``).

    Tab and line feed are kept unless ``one_line`` (for a name that must stay on its line).
    Every console print already applies the default; call it for text written another way.
    """
    return (_CONTROL_ALL if one_line else _CONTROL).sub(_escaped, text)


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


def audit_options(audit: Path, key: Path | None, level: str | None, policy_file: Path | None) -> Callable[[Any], Any]:
    """How `--audit DIR --audit-key --audit-level --audit-policy` open the log for a policy (exit 2 when they cannot)."""
    from activelabel.governance.observers import open_audit_log

    def open_for(policy: Any) -> Any:
        try:
            return open_audit_log(str(audit), policy=policy, key_file=str(key) if key else None, level=level,
                                  level_policy_file=str(policy_file) if policy_file else None)
        except MissingExtraError as exc:
            fail(str(exc))  # the install, not the options: as every command needing an extra does
        except ActiveLabelError as exc:
            fail(str(exc), 2)

    return open_for
