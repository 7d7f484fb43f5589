"""`activelabel tap`: watch the decisions of a running `serve` or stream worker as they are made.

In the manner of ``vector tap``: one JSON object per line in a pipe or a file, a
readable line per decision on a terminal. Sensitive values arrive protected (the
server protects them for the token's clearance).
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import orjson
import typer

from activelabel.cli._common import err, fail
from activelabel.cli.main import app


@app.command()
def tap(
    url: Annotated[str, typer.Option("--url", help="Base URL of a `serve` (http://HOST:8080) or a stream worker's ops port (http://HOST:9464).")],
    label: Annotated[str | None, typer.Option("--label", help="Only decisions where label NAME has VALUE (NAME=VALUE, as shown).")] = None,
    rule: Annotated[str | None, typer.Option("--rule", help="Only decisions where rule ID matched (whether it won or lost).")] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Stop after this many decisions.", min=1)] = None,
    token: Annotated[str | None, typer.Option("--token", help="Admin bearer token for `serve` (default: $ACTIVELABEL_TOKEN).")] = None,
    as_json: Annotated[bool | None, typer.Option("--json/--lines", help="JSON lines (default when not a terminal) or readable lines.")] = None,
) -> None:
    """Stream sampled decisions with their decision path (which rule set each label, which lost) until --limit or Ctrl-C."""
    import httpx

    from activelabel.observability.tap import format_line

    token = token or os.environ.get("ACTIVELABEL_TOKEN")
    params = {k: v for k, v in {"label": label, "rule": rule, "limit": limit}.items() if v is not None}
    headers = {"authorization": f"Bearer {token}"} if token else {}
    readable = sys.stdout.isatty() if as_json is None else not as_json
    endpoint = url.rstrip("/") + "/v1/tap"
    try:
        with httpx.stream("GET", endpoint, params=params, headers=headers, timeout=httpx.Timeout(10.0, read=None)) as response:
            if response.status_code != 200:
                response.read()
                fail(_refusal(endpoint, response.status_code, response.text))
            for line in response.iter_lines():
                if not line:
                    continue
                entry = orjson.loads(line)
                if "notice" in entry:
                    err.print(entry["notice"], highlight=False, markup=False)  # said once, on stderr: stdout stays data
                    continue
                typer.echo(format_line(entry) if readable else line)
                sys.stdout.flush()
    except httpx.HTTPError as exc:
        fail(f"cannot tap {endpoint}: {exc}; is `activelabel serve` (or a stream worker with --metrics-port) running there?")
    except KeyboardInterrupt:
        pass


def _refusal(endpoint: str, status: int, body: str) -> str:
    try:
        message = orjson.loads(body)["error"]["message"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        message = body.strip()[:200]
    if status == 401:
        return f"{endpoint}: 401: tapping needs a token with the admin scope (--token or $ACTIVELABEL_TOKEN)"
    if status == 403:
        return f"{endpoint}: 403 forbidden: tapping needs a token with the admin scope ({message})"
    return f"{endpoint}: {status}: {message}"
