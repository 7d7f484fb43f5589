"""Plain text that is safe to print: control characters escaped, tables one line per row.

Values printed by the CLI come from events and from people (a label computed from
``event.path``, a history message given with ``-m``). Written raw, an ESC sequence in one
drives the terminal and a newline breaks a table into rows that are not there. Every text
table and every line of data goes through :func:`printable` (the consoles of ``cli/_common``
do it for each print; :func:`text_table` for the plain tables written to pipes and files).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# C0 controls but tab and line feed, DEL, C1 controls, the bidirectional overrides, isolates and
# marks (they reorder what the terminal shows: "Trojan source"), the zero-width characters that
# hide text, and the line and paragraph separators that editors and str.splitlines() break on.
_INVISIBLE = "\u061c\u200b-\u200f\u2028\u2029\u202a-\u202e\u2060-\u2069\ufeff"
_CONTROL = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f{_INVISIBLE}]")
_CONTROL_ALL = re.compile(f"[\x00-\x1f\x7f-\x9f{_INVISIBLE}]")
_NAMED = {"\n": "\\n", "\t": "\\t"}  # the two a reader knows by name; the rest by code


def _escaped(m: re.Match[str]) -> str:
    char = m.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str, *, one_line: bool = False) -> str:
    """``text`` with control characters written as escapes (``\\x1b``, ``\\u202e``, ``\\n``).

    Tab and line feed are kept unless ``one_line`` (a cell or a name that must stay on its line).
    Escaping is idempotent: an escaped text has no control character left.
    """
    return (_CONTROL_ALL if one_line else _CONTROL).sub(_escaped, text)


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A plain table: columns padded to their widest cell, a dashed rule, one line per row.

    Every cell is :func:`printable` on one line, so a value holding ESC or a newline is shown
    as ``\\x1b`` / ``\\n`` and its row stays one line, padded to the width it is shown with.
    """
    head = [printable(h, one_line=True) for h in header]
    body = [[printable(c, one_line=True) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip(), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in body]
    return lines
