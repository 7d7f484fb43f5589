"""Collecting policy issues, each with file:line:column and a caret excerpt."""

from __future__ import annotations

from activelabel.errors import PolicyIssue

from ._yaml import Loc

EXCERPT_WIDTH = 120
"""Characters of a source line an excerpt shows at most (a window around the column)."""


def excerpt_window(line: str, column: int) -> tuple[str, int]:
    """At most `EXCERPT_WIDTH` characters of ``line`` around ``column``, control characters as ``?``.

    Returns the shown text and the column within it.
    """
    start = 0
    if len(line) > EXCERPT_WIDTH:
        start = max(0, min(column - 1 - EXCERPT_WIDTH // 2, len(line) - EXCERPT_WIDTH))
    shown = line[start : start + EXCERPT_WIDTH]
    clean = "".join(ch if ch == "\t" or ch.isprintable() else "?" for ch in shown)
    lead = "..." if start else ""
    return lead + clean + ("..." if start + EXCERPT_WIDTH < len(line) else ""), column - start + len(lead)


class Reporter:
    """Collects every issue found while loading a policy (validation never stops at the first)."""

    def __init__(self) -> None:
        self.issues: list[PolicyIssue] = []
        self.warnings: list[PolicyIssue] = []  # worth a look, but the policy still loads
        self.sources: dict[str, list[str]] = {}
        self.texts: dict[str, str] = {}
        self.file_order: dict[str, int] = {}
        # Files not quoted in excerpts: they did not parse as a policy, so they may be anything
        # (``/proc/self/environ``, ``/etc/passwd``) and their text must not reach a log or a response.
        self.hidden: set[str] = set()

    def add_source(self, file: str, text: str) -> None:
        self.sources[file] = text.splitlines()
        self.texts[file] = text
        self.file_order.setdefault(file, len(self.file_order))

    def add(
        self,
        message: str,
        loc: Loc,
        *,
        rule_id: str | None = None,
        suggestion: str | None = None,
        excerpt: str | None = None,
        warning: bool = False,
    ) -> None:
        if excerpt is None:
            excerpt = self.caret(loc)
        (self.warnings if warning else self.issues).append(
            PolicyIssue(
                message=message,
                file=loc.file,
                line=loc.line,
                column=loc.column,
                rule_id=rule_id,
                suggestion=suggestion,
                excerpt=excerpt,
            )
        )

    def caret(self, loc: Loc) -> str | None:
        """The source line of ``loc`` with a caret under its column."""
        lines = self.sources.get(loc.file)
        if loc.file in self.hidden or not lines or not 1 <= loc.line <= len(lines):
            return None
        text, column = excerpt_window(lines[loc.line - 1].rstrip(), loc.column)
        # Keep tabs so the caret lines up however the terminal expands them.
        pad = "".join("\t" if ch == "\t" else " " for ch in text[: max(0, column - 1)])
        return f"{text}\n{pad}^"

    def sorted_issues(self, *, warnings: bool = False) -> list[PolicyIssue]:
        """Issues (or warnings) ordered by file (in the order files were read), line and column."""
        order = self.file_order
        found = self.warnings if warnings else self.issues
        return sorted(found, key=lambda i: (order.get(i.file, len(order)), i.line, i.column))
