"""Collecting policy issues, each with file:line:column and a caret excerpt."""

from __future__ import annotations

from activelabel.errors import PolicyIssue

from ._yaml import Loc


class Reporter:
    """Collects every issue found while loading a policy (validation never stops at the first)."""

    def __init__(self) -> None:
        self.issues: list[PolicyIssue] = []
        self.warnings: list[PolicyIssue] = []  # worth a look, but the policy still loads
        self.sources: dict[str, list[str]] = {}
        self.texts: dict[str, str] = {}
        self.file_order: dict[str, int] = {}

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
        if not lines or not 1 <= loc.line <= len(lines):
            return None
        text = lines[loc.line - 1].rstrip()
        # Keep tabs so the caret lines up however the terminal expands them.
        pad = "".join("\t" if ch == "\t" else " " for ch in text[: max(0, loc.column - 1)])
        return f"{text}\n{pad}^"

    def sorted_issues(self, *, warnings: bool = False) -> list[PolicyIssue]:
        """Issues (or warnings) ordered by file (in the order files were read), line and column."""
        order = self.file_order
        found = self.warnings if warnings else self.issues
        return sorted(found, key=lambda i: (order.get(i.file, len(order)), i.line, i.column))
