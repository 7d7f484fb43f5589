"""`activelabel audit verify|show|search`: read and check a decision audit log."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated

import orjson
import typer

from activelabel.cli._common import fail, printable
from activelabel.cli.main import app
from activelabel.errors import AuditError

audit_app = typer.Typer(help="Verify and search a tamper-evident decision audit log (written by --audit DIR).",
                        no_args_is_help=True)
app.add_typer(audit_app, name="audit")

DirArg = Annotated[Path, typer.Argument(help="The audit directory (the DIR given to --audit).")]


def _need_dir(directory: Path) -> None:
    if not (directory / "segments").is_dir():
        fail(f"{directory} is not an audit log directory (no segments/ inside); "
             "write one with `activelabel label --audit DIR ...`", code=2)


@audit_app.command("verify")
def verify(
    directory: DirArg,
    key: Annotated[Path | None, typer.Option("--key", help="Public key to verify with (default: DIR/keys/audit.pub; "
                                                          "give an out-of-band copy to detect a replaced key).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Check every record, the hash chain and every signed checkpoint; exit 1 naming the first bad record."""
    from activelabel.governance.audit import verify_log

    _need_dir(directory)
    try:
        result = verify_log(directory, public_key_file=key)
    except AuditError as exc:
        fail(str(exc), code=2)
    if json_out:
        sys.stdout.write(orjson.dumps(result.__dict__).decode() + "\n")
    else:
        sys.stdout.write(printable(result.summary(), one_line=True) + "\n")  # a problem may quote the log's bytes
    raise typer.Exit(0 if result.ok else 1)


def _print(records: list[dict[str, object]]) -> None:
    write = sys.stdout.write
    for record in records:
        write(orjson.dumps(record, option=orjson.OPT_SORT_KEYS).decode() + "\n")


@audit_app.command("show")
def show(
    directory: DirArg,
    start: Annotated[int, typer.Option("--from", help="First record index to show.")] = 0,
    limit: Annotated[int, typer.Option("--limit", "-n", help="How many records to show (0: all).")] = 20,
) -> None:
    """Print records as JSON lines, from an index on."""
    from activelabel.governance.audit import read_records

    _need_dir(directory)
    picked: list[dict[str, object]] = []
    for record in read_records(directory):
        index = record.get("index")
        if isinstance(index, int) and index < start:
            continue
        picked.append(record)
        if limit and len(picked) >= limit:
            break
    _print(picked)


def _time(text: str | None, flag: str) -> float | None:
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        fail(f"{flag} {text!r} is not an ISO 8601 time (e.g. 2026-12-01T10:00:00Z)", code=2)


def _whole_version(directory: Path, given: str) -> str:
    """The one version of the log that ``given`` starts, as `policy rollback` resolves it (exit 2 if several do)."""
    from activelabel.governance import versions
    from activelabel.governance.audit_files import log_versions

    if versions.is_whole(given):
        return versions.normalized(given)
    found = versions.matches(given, log_versions(directory))
    if len(found) > 1:
        fail(versions.ambiguous(given, found), code=2)
    return found[0] if found else versions.normalized(given)  # none: no record matches, said as such


@audit_app.command("search")
def search(
    directory: DirArg,
    decision_id: Annotated[str | None, typer.Option("--id", help="A decision id (the record id).")] = None,
    version: Annotated[str | None, typer.Option("--version", help="A policy version (sha256:…), or a unique prefix of one (`sha256:` may be left out).")] = None,
    label: Annotated[str | None, typer.Option("--label", help="LABEL=VALUE (records written at level Full).")] = None,
    since: Annotated[str | None, typer.Option("--since", help="ISO 8601 time, inclusive.")] = None,
    until: Annotated[str | None, typer.Option("--until", help="ISO 8601 time, inclusive.")] = None,
    kind: Annotated[str | None, typer.Option("--kind", help="decision or admin.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="At most this many (0: all).")] = 0,
) -> None:
    """Print the records matching every criterion given, as JSON lines."""
    from activelabel.governance.audit import search_records

    _need_dir(directory)
    pair: tuple[str, str] | None = None
    if label is not None:
        name, sep, value = label.partition("=")
        if not sep or not name:
            fail(f"--label {label!r}: write LABEL=VALUE", code=2)
        pair = (name, value)
    if version is not None:
        version = _whole_version(directory, version)
    found: list[dict[str, object]] = []
    for record in search_records(directory, decision_id=decision_id, version=version, label=pair,
                                 since=_time(since, "--since"), until=_time(until, "--until"), kind=kind):
        found.append(record)
        if limit and len(found) >= limit:
            break
    _print(found)
    if not found:
        sys.stderr.write("no matching records\n")
