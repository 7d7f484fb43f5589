"""Live debugging routes of ``serve``: ``GET /v1/tap`` (NDJSON stream of decisions) and ``GET /ui`` (status page).

Both need the ``admin`` scope: they show decisions as they are made. Values of
labels above the caller's clearance are protected as on ``/v1/label``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import orjson
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response, StreamingResponse

from activelabel.observability.status_page import gather, render
from activelabel.observability.tap import TapFilter, render_entry
from activelabel.service._http import HttpError
from activelabel.service.label_output import clearance_of
from activelabel.service.state import state_of

#: How often an idle tap looks for new decisions (seconds).
TAP_POLL_S = 0.05
MAX_TAP_LIMIT = 1_000_000


def tap_query(params: dict[str, str]) -> tuple[TapFilter, int | None]:
    """The filter and limit of a tap request; ``ValueError`` says which parameter is wrong."""
    tap_filter = TapFilter.parse(params.get("label"), params.get("rule"))
    raw = params.get("limit")
    limit: int | None = None
    if raw:
        try:
            limit = int(raw)
        except ValueError:
            raise ValueError(f"limit {raw!r} is not a whole number") from None
        if not 1 <= limit <= MAX_TAP_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_TAP_LIMIT}")
    return tap_filter, limit


async def tap_route(request: Request) -> Response:
    """Stream decisions as they are made, one JSON object per line, until ``limit`` or the client leaves."""
    state = state_of(request)
    try:
        caller = state.auth.caller(request.headers, "admin")
        try:
            tap_filter, limit = tap_query(dict(request.query_params))
        except ValueError as exc:
            raise HttpError(400, "bad_tap_query", f"{exc}; use ?label=NAME=VALUE&rule=ID&limit=N") from None
    except HttpError as exc:
        return exc.response()
    clearance = clearance_of(caller)
    tap = state.metrics.tap

    async def lines() -> AsyncIterator[bytes]:
        subscriber = tap.subscribe(tap_filter, backlog=False)
        sent = 0
        try:
            yield orjson.dumps({"notice": f"tapping {state.runtime.current.name or 'the policy'}: decisions as they are made"}) + b"\n"
            while limit is None or sent < limit:
                entries, dropped = subscriber.take()
                if dropped:
                    yield orjson.dumps({"notice": f"{dropped} decisions dropped: this reader was slower than the traffic"}) + b"\n"
                for entry in entries:
                    shown = render_entry(entry, clearance, tap_filter)
                    if shown is None:
                        continue
                    yield orjson.dumps(shown, default=str) + b"\n"
                    sent += 1
                    if limit is not None and sent >= limit:
                        return
                if not entries:
                    await anyio.sleep(TAP_POLL_S)
        finally:
            tap.unsubscribe(subscriber)

    return StreamingResponse(lines(), media_type="application/x-ndjson", headers={"cache-control": "no-store"})


async def ui_route(request: Request) -> Response:
    """The status page: policy, rollout, traffic, dead letters, labels, rules, recent decisions."""
    state = state_of(request)
    try:
        state.auth.caller(request.headers, "admin")
    except HttpError as exc:
        return exc.response()
    # `rollouts` (a RolloutManager) is set by the rollout wiring when it is present; else "none".
    view = gather("serve", state.runtime, state.metrics, state.metrics.tap,
                  rollout=getattr(state, "rollouts", None), started_at=state.metrics.started_at)
    return HTMLResponse(render(view), headers={"cache-control": "no-store"})
