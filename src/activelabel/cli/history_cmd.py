"""`activelabel policy history|show|rollback`: what policies ran, and going back to one."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import orjson
import typer

from activelabel.cli._common import fail, printable
from activelabel.cli.main import app
from activelabel.errors import StoreError

policy_app = typer.Typer(help="The policy history (every policy loaded or offered, who, when, why) and rollback.",
                         no_args_is_help=True)
app.add_typer(policy_app, name="policy")

StoreOpt = Annotated[Path, typer.Option("--store", "-s", help="The SQLite file holding the history (serve's "
                                                            "--record store or --history file).")]


def _open(store: Path):  # type: ignore[no-untyped-def]
    from activelabel.governance.history import PolicyHistory

    if not store.exists():
        fail(f"{store} does not exist; give the store `serve --record` (or `--history`) writes", code=2)
    try:
        return PolicyHistory(store)
    except StoreError as exc:
        fail(str(exc), code=2)


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@policy_app.command("history")
def history(
    store: StoreOpt = Path("decisions.db"),
    limit: Annotated[int, typer.Option("--limit", "-n", help="Newest N rows (0: all).")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines, canonical text left out.")] = False,
) -> None:
    """Every policy loaded, offered, promoted, rolled back or refused, newest first."""
    entries = _open(store).entries(limit)
    if as_json:
        for e in entries:
            row = {k: v for k, v in e.__dict__.items() if k != "canonical"}
            sys.stdout.write(orjson.dumps(row).decode() + "\n")
        return
    if not entries:
        sys.stdout.write(f"no policy history in {store} yet\n")
        return
    for e in entries:
        version = e.version or "-"
        line = (f"{e.seq:>5}  {_when(e.ts)}  {e.outcome:<11}  {version}  metadata.version={e.metadata_version or '-'}"
                f"  by {e.who}")
        if e.message:
            line += f"  \"{e.message}\""
        # One line per row: a message or a name holding ESC or a newline is shown escaped, never raw.
        sys.stdout.write(printable(line, one_line=True) + "\n")
        for error in e.errors:
            sys.stdout.write(f"         error: {printable(error, one_line=True)}\n")


@policy_app.command("show")
def show(
    version: Annotated[str, typer.Argument(help="A version (sha256:…) or an unambiguous prefix of one.")],
    store: StoreOpt = Path("decisions.db"),
) -> None:
    """Print the canonical form of a version, as it was loaded (tables' hashes included)."""
    from activelabel.governance import versions

    history_store = _open(store)
    if not versions.is_whole(version):
        found = versions.matches(version, (e.version for e in history_store.entries() if e.outcome != "refused"))
        if len(found) > 1:
            fail(versions.ambiguous(version, found))
        if found:
            version = found[0]
    try:
        entry = history_store.find(versions.normalized(version))
    except StoreError as exc:
        fail(str(exc))
    sys.stderr.write(printable(f"{entry.version} ({entry.name or 'unnamed'}, metadata.version {entry.metadata_version}) "
                               f"from {entry.source}, {entry.outcome} {_when(entry.ts)} by {entry.who}", one_line=True)
                     + "\n")
    for path, digest in entry.tables.items():
        sys.stderr.write(printable(f"  table {path}: {digest}", one_line=True) + "\n")
    sys.stdout.write((entry.canonical or "") + "\n")


@policy_app.command("rollback")
def rollback(
    version: Annotated[str, typer.Argument(help="The version to serve again (see `policy history`).")],
    url: Annotated[str, typer.Option("--url", help="Base URL of the running service.")],
    token: Annotated[str | None, typer.Option("--token", help="Admin bearer token (default: $ACTIVELABEL_TOKEN).")] = None,
    message: Annotated[str, typer.Option("--message", "-m", help="Why, kept in the history.")] = "",
) -> None:
    """Serve an earlier version again on a running service: a pointer swap to a policy already compiled."""
    from activelabel.cli.rollout_cmd import _call
    from activelabel.governance.versions import normalized

    # `9f77` is `sha256:9f77`, as `policy show` and `audit search --version` read it.
    body = _call("POST", url, "/v1/policy/rollback", token, {"version": normalized(version), "message": message})
    sys.stdout.write(printable(f"serving {body.get('new_version')} (was {body.get('old_version')})", one_line=True) + "\n")
