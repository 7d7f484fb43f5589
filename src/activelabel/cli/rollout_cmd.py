"""`activelabel rollout start|status|promote|abort|resume|report`: drive a rollout on a running service."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import orjson
import typer
from rich.markup import escape

from activelabel.cli._common import err, fail, printable
from activelabel.cli.main import app

rollout_app = typer.Typer(help="Shadow and canary a candidate policy on a running `activelabel serve`, "
                               "with automatic promote or rollback.", no_args_is_help=True)
app.add_typer(rollout_app, name="rollout")

UrlOpt = Annotated[str, typer.Option("--url", help="Base URL of the running service, e.g. http://127.0.0.1:8080.")]
TokenOpt = Annotated[str | None, typer.Option("--token", help="Admin bearer token (default: $ACTIVELABEL_TOKEN).")]


def _fail_each(lines: list[str], code: int = 1) -> NoReturn:
    """One ``error: …`` line per problem (a refused spec lists them all), then exit."""
    for line in lines:
        err.print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _call(method: str, url: str, path: str, token: str | None, body: dict[str, Any] | None = None,
          *, spec_file: Path | None = None) -> dict[str, Any]:
    import httpx

    token = token or os.environ.get("ACTIVELABEL_TOKEN")
    headers = {"authorization": f"Bearer {token}"} if token else {}
    try:
        response = httpx.request(method, url.rstrip("/") + path, json=body, headers=headers, timeout=30)
    except httpx.HTTPError as exc:
        fail(f"cannot reach {url}: {exc}; is `activelabel serve` running there?")
    try:
        data = response.json()
    except ValueError:
        data = {"error": response.text[:500]}
    if response.status_code == 403:
        fail(f"{url}{path}: 403 forbidden: this needs a token with the admin scope; the one given has not "
             "(--token or $ACTIVELABEL_TOKEN)")
    if response.status_code == 401:
        given = "no token was given" if not token else "the service does not know the token given"
        fail(f"{url}{path}: 401: {given}; pass an admin token with --token or $ACTIVELABEL_TOKEN")
    error = data.get("error") if isinstance(data, dict) else None
    if response.status_code >= 400 and isinstance(error, dict) and error.get("problems"):
        # A spec the service refused (e.g. a check on a label only it could see is not there).
        where = spec_file or f"{url}{path}"
        _fail_each([f"{where}: {p}" for p in error["problems"]])
    if response.status_code == 409 and isinstance(error, dict) and error.get("message"):
        fail(f"{url}{path}: 409: {printable(str(error['message']), one_line=True)}")
    if response.status_code >= 400:
        # The service's JSON error ({"code", "message"}) as its message, not as a Python dict.
        detail = (error.get("message") or error.get("code") if isinstance(error, dict) else error) \
            or (data.get("detail") if isinstance(data, dict) else None) or data
        # A refused candidate's errors come inside the error object ({"error": {..., "errors": [...]}}).
        errors = ((error.get("errors") if isinstance(error, dict) else None) or data.get("errors") or []) \
            if isinstance(data, dict) else []
        for e in errors:
            text = (e.get("text") or e.get("message") or str(e)) if isinstance(e, dict) else str(e)
            sys.stderr.write(printable(text, one_line=True) + "\n")
        fail(f"{url}{path}: {response.status_code}: {printable(str(detail), one_line=True)}")
    return data if isinstance(data, dict) else {"result": data}


def _print_status(status: dict[str, Any], as_json: bool) -> None:
    if as_json:
        sys.stdout.write(orjson.dumps(status, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    events = status.get("events") or {}
    lines = [
        f"rollout {status.get('id')}: {status.get('state')} at step {status.get('step')}% of {status.get('steps')}",
        f"events this step: serving {events.get('serving', 0)}, candidate {events.get('candidate', 0)}",
    ]
    if status.get("reason"):
        lines.append(f"reason: {status['reason']}")
    for check in status.get("checks") or []:
        value = "-" if check["value"] is None else f"{check['value']:.4g}"
        lines.append(f"  {check['metric']}: {value} (threshold {check['threshold']}) {check['verdict']}"
                     + (" [dry run]" if check.get("dry_run") else ""))
    # A reason quotes names from the policies (labels, rule ids): never a control character on the terminal.
    sys.stdout.write("\n".join(printable(line, one_line=True) for line in lines) + "\n")


@rollout_app.command("start")
def start(
    candidate: Annotated[Path, typer.Argument(help="The candidate policy file (as the service sees its path).")],
    url: UrlOpt,
    spec: Annotated[Path, typer.Option("--spec", help="The rollout spec YAML (key, steps, interval, analysis...).")],
    token: TokenOpt = None,
    message: Annotated[str, typer.Option("--message", "-m", help="Why, kept in the policy history.")] = "",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Start shadowing CANDIDATE and stepping it up; it must pass validation and its own tests first."""
    import yaml

    from activelabel.errors import RolloutError
    from activelabel.governance.rollout import RolloutSpec

    try:
        raw = yaml.safe_load(spec.read_text(encoding="utf-8"))
        RolloutSpec.from_mapping({} if raw is None else raw)
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read the spec {spec}: {exc}")
    except yaml.YAMLError as exc:
        fail(f"{spec} is not YAML: {exc}")
    except RolloutError as exc:
        _fail_each([f"{spec}: {p}" for p in exc.problems] or [f"{spec}: {exc}"])
    status = _call("POST", url, "/v1/rollout", token,
                   {"candidate": str(candidate.resolve()), "spec": raw, "message": message}, spec_file=spec)
    _print_status(status, as_json)


@rollout_app.command("status")
def status(url: UrlOpt, token: TokenOpt = None, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The rollout's state, step, events per arm and every check with its value and threshold."""
    _print_status(_call("GET", url, "/v1/rollout", token), as_json)


@rollout_app.command("promote")
def promote(url: UrlOpt, token: TokenOpt = None) -> None:
    """Make the candidate the serving policy now (recorded in the history and the audit log)."""
    _print_status(_call("POST", url, "/v1/rollout/promote", token), False)


@rollout_app.command("abort")
def abort(url: UrlOpt, token: TokenOpt = None) -> None:
    """Stop the rollout and keep serving the old policy."""
    _print_status(_call("POST", url, "/v1/rollout/abort", token), False)


@rollout_app.command("resume")
def resume(url: UrlOpt, token: TokenOpt = None) -> None:
    """Leave a pause (Inconclusive) and measure the current step again."""
    _print_status(_call("POST", url, "/v1/rollout/resume", token), False)


@rollout_app.command("report")
def report(
    url: Annotated[str | None, typer.Option("--url", help="Read the report from a running service.")] = None,
    source: Annotated[Path | None, typer.Option("--from", help="Read a saved report (from `label --shadow`).")] = None,
    token: TokenOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    html_out: Annotated[Path | None, typer.Option("--html", help="Also write an HTML page with heatmaps here.")] = None,
) -> None:
    """What the candidate changes, per label: transitions old -> new, why, examples, latency, rule errors."""
    from activelabel.cli._common import writable_output
    from activelabel.governance.rollout_render import report_problem, rollout_html, rollout_text

    if (url is None) == (source is None):
        fail("give exactly one of --url (a running service) or --from (a saved report JSON)", code=2)
    if html_out is not None:
        writable_output(html_out, "--html")  # before a service is asked: a page that cannot be written says so first
    if source is not None:
        try:
            data = orjson.loads(source.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            fail(f"cannot read the report {source}: {exc}")
        problem = report_problem(data)
        if problem is not None:
            fail(f"{source} is not a shadow/rollout report ({problem}); write one with "
                 "`activelabel label ... --shadow CANDIDATE --shadow-report FILE`")
    else:
        data = _call("GET", url or "", "/v1/rollout/report", token)
    if html_out is not None:
        try:
            html_out.write_text(rollout_html(data), encoding="utf-8")
        except OSError as exc:
            fail(f"cannot write --html {html_out}: {exc.strerror or exc}; give a path in a folder you can write")
        sys.stderr.write(f"wrote {html_out}\n")
    if as_json:
        sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(rollout_text(data))
