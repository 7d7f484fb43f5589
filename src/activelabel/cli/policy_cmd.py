"""`activelabel validate` and `activelabel test`: check a policy before it runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.markup import escape

from activelabel.cli._common import err, fail, out, print_policy_error, printable
from activelabel.cli.main import app
from activelabel.errors import PolicyError


def _load(policy: Path):  # type: ignore[no-untyped-def]
    from activelabel.engine import Labeler
    from activelabel.policy import load_policy

    if not policy.exists():
        fail(f"policy file {policy} does not exist")
    try:
        return Labeler(load_policy(policy))
    except PolicyError as exc:
        print_policy_error(exc)
        raise typer.Exit(1) from exc


@app.callback()
def _global_options(
    allow_path: Annotated[
        list[Path] | None,
        typer.Option(
            "--allow-path", metavar="DIR",
            help="A folder outside the policy's own that its includes and enricher tables may read from "
            "(repeatable; applies to every command, reloads of `serve` included).",
        ),
    ] = None,
) -> None:
    """Active labeling runtime: attach governed, explainable labels to events as they flow."""
    if allow_path:
        import os

        from activelabel.policy import ALLOW_PATHS_ENV

        # Through the environment, so every load in this process (and `serve`'s reloads) sees it.
        current = [p for p in os.environ.get(ALLOW_PATHS_ENV, "").split(os.pathsep) if p]
        os.environ[ALLOW_PATHS_ENV] = os.pathsep.join([*current, *(str(p.resolve()) for p in allow_path)])


@app.command()
def validate(
    policy: Annotated[Path, typer.Argument(help="Policy YAML file.")],
    run_tests: Annotated[bool, typer.Option("--tests/--no-tests", help="Also run the policy's own tests.")] = True,
) -> None:
    """Check a policy: every error at once, with file:line:column, rule id and a caret under the spot."""
    labeler = _load(policy)
    p = labeler.policy
    failures = [r for r in labeler.run_tests() if not r.passed] if run_tests else []
    if failures:
        err.print(f"[bold red]policy refused:[/] {len(failures)} failing polic{'y test' if len(failures) == 1 else 'y tests'}", highlight=False)
        for r in failures:
            for label, (want, got) in r.mismatches.items():
                err.print(f"{r.file}:{r.line}:1: test {printable(repr(r.name))}: {printable(label, one_line=True)}: expected {want!r}, got {got!r}", highlight=False, markup=False)
        raise typer.Exit(1)
    for warning in getattr(p, "warnings", ()):
        err.print(f"[yellow]warning:[/] {escape(warning.format())}", highlight=False)
    out.print(
        f"[green]ok[/] {escape(str(policy))}: {len(p.labels)} labels, {len(p.rules)} rules, {len(p.enrichers)} enrichers, "
        f"{len(p.tests)} tests; version {p.version}",
        highlight=False,
    )


@app.command("test")
def test_policy(
    policy: Annotated[Path, typer.Argument(help="Policy YAML file.")],
) -> None:
    """Run the policy's own `tests:` (pytest-like output; exit 1 on failure)."""
    labeler = _load(policy)
    results = labeler.run_tests()
    if not results:
        err.print(f"{policy}: the policy has no tests: add a `tests:` list of {{name, event, expect}}", markup=False)
        raise typer.Exit(1)
    # Test names and paths are user text: escaped, so `x [/] y` is printed, not parsed as markup.
    out.print(f"[bold]{escape(str(policy))}[/]: {len(results)} tests", highlight=False)
    for r in results:
        mark = "[green]PASSED[/]" if r.passed else "[red]FAILED[/]"
        out.print(f"{escape(str(r.file))}:{r.line} {escape(printable(r.name, one_line=True))} {mark}", highlight=False)
    failed = [r for r in results if not r.passed]
    for r in failed:
        out.print(f"\n[red]____ {escape(printable(r.name, one_line=True))} ____[/]", highlight=False)
        for label, (want, got) in r.mismatches.items():
            out.print(f"  {printable(label, one_line=True)}: expected {orjson.dumps(want).decode()}, got {orjson.dumps(got).decode()}", highlight=False, markup=False)
        out.print(f"  all labels: {orjson.dumps(r.got).decode()}", highlight=False, markup=False)
    summary = f"{len(results) - len(failed)} passed, {len(failed)} failed"
    out.print(f"[{'red' if failed else 'green'}]{summary}[/]", highlight=False)
    if failed:
        raise typer.Exit(1)
