"""Admin routes of policy change: history, rollback, and the rollout API (every one needs the admin scope).

    GET  /v1/policy/history            newest first: version, metadata.version, who, when, outcome, errors
    POST /v1/policy/rollback           {"version": "sha256:…", "message": "..."}: a pointer swap
    POST /v1/rollout                   {"candidate": PATH, "spec": {...}, "message": "..."}
    GET  /v1/rollout                   the status: state, step, events per arm, checks, reason
    POST /v1/rollout/promote | abort | resume
    GET  /v1/rollout/report            per label: compared, changed, transitions, why, examples
"""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response

from activelabel.errors import PolicyError, PolicyNotKnownError, RolloutConflictError, RolloutError
from activelabel.service._http import HttpError, decode_json, json_response, read_body, require_media_type
from activelabel.service.auth import Caller
from activelabel.service.policy_runtime import issue_as_json
from activelabel.service.state import ServiceState, front_door, state_of


def _admin(request: Request) -> tuple[ServiceState, Caller]:
    state = state_of(request)
    return state, state.auth.caller(request.headers, "admin")


async def _body(request: Request, state: ServiceState) -> dict[str, Any]:
    require_media_type(request.headers, ("application/json",))
    body = decode_json(await read_body(request, state.config.max_body_bytes))
    if not isinstance(body, dict):
        raise HttpError(400, "not_an_object", "send a JSON object")
    return body


def _no_rollout(state: ServiceState) -> HttpError:
    return HttpError(404, "no_rollout", "no rollout has been started on this service; start one with "
                                        "`activelabel rollout start CANDIDATE --url URL --spec SPEC.yaml`")


@front_door("admin")
async def history_route(request: Request) -> Response:
    """The policy history, newest first (``?limit=N``; canonical texts are left out: see `policy show`)."""
    state, _ = _admin(request)
    history = state.runtime.history
    if history is None:
        raise HttpError(501, "no_history", "this server keeps no policy history; start it with --record or --history")
    try:
        limit = int(request.query_params.get("limit", "100"))
    except ValueError:
        raise HttpError(400, "bad_limit", "limit is a whole number") from None
    entries = await anyio.to_thread.run_sync(history.entries, limit)
    rows = [{k: v for k, v in e.__dict__.items() if k != "canonical"} for e in entries]
    return json_response({"entries": rows, "serving": state.runtime.current.version,
                          "rollback_to": state.runtime.versions()})


@front_door("admin")
async def rollback_route(request: Request) -> Response:
    """Serve an earlier compiled version again: a pointer swap that cannot fail validation."""
    state, caller = _admin(request)
    body = await _body(request, state)
    version = str(body.get("version") or "")
    if not version:
        raise HttpError(400, "no_version", 'send {"version": "sha256:..."}; see GET /v1/policy/history')
    if state.rollouts is not None and state.rollouts.active() is not None:
        raise HttpError(409, "rollout_active", "a rollout is in progress: abort it (POST /v1/rollout/abort) first")
    try:
        old, new = state.runtime.rollback(version, who=caller.name, message=str(body.get("message") or ""))
    except PolicyNotKnownError as exc:
        raise HttpError(404, "unknown_version", str(exc)) from None
    if state.audit is not None:
        state.audit.log_admin("policy rollback", actor=caller.name, old_version=old, new_version=new,
                              message=str(body.get("message") or ""))
    return json_response({"accepted": True, "old_version": old, "new_version": new})


@front_door("admin")
async def rollout_start_route(request: Request) -> Response:
    """Offer a candidate and start shadowing it; 422 with every error when it fails validation or its tests."""
    state, caller = _admin(request)
    body = await _body(request, state)
    if state.rollouts is None:
        raise HttpError(501, "no_rollouts", "rollouts are not enabled on this server")
    candidate, spec = body.get("candidate"), body.get("spec")
    if not isinstance(candidate, str) or not candidate:
        raise HttpError(400, "no_candidate", 'send {"candidate": "/path/to/policy.yaml", "spec": {...}}')
    manager = state.rollouts
    try:
        # The spec is checked whole (a list, a string, a bad value: every problem with its field path).
        status = await anyio.to_thread.run_sync(
            lambda: manager.start(candidate, {} if spec is None else spec, who=caller.name,
                                  message=str(body.get("message") or "")))
    except PolicyError as exc:
        errors = [issue_as_json(i) for i in exc.issues]
        raise HttpError(422, "candidate_refused", f"the candidate was refused with {len(errors)} error(s); "
                        "it did not enter a rollout", errors=errors) from None
    except RolloutConflictError as exc:
        raise HttpError(409, "rollout_active", str(exc)) from None
    except RolloutError as exc:
        if exc.problems:
            n = len(exc.problems)
            raise HttpError(422, "bad_spec", f"the rollout spec was refused with {n} problem{'s' if n != 1 else ''}; "
                            "no rollout started", problems=list(exc.problems)) from None
        raise HttpError(422, "bad_rollout", str(exc)) from None
    return json_response(status, status=201)


@front_door("admin")
async def rollout_status_route(request: Request) -> Response:
    """State, step, events per arm, every check with its value and threshold, and the reason."""
    state, _ = _admin(request)
    status = state.rollouts.status() if state.rollouts is not None else None
    if status is None:
        raise _no_rollout(state)
    return json_response(status)


@front_door("admin")
async def rollout_report_route(request: Request) -> Response:
    """The whole paired comparison since the rollout began (sensitive labels: counts only)."""
    state, _ = _admin(request)
    report = state.rollouts.report() if state.rollouts is not None else None
    if report is None:
        raise _no_rollout(state)
    return json_response(report)


def _action(name: str) -> Any:
    @front_door("admin")
    async def route(request: Request) -> Response:
        state, caller = _admin(request)
        manager = state.rollouts
        if manager is None or manager.rollout is None:
            raise _no_rollout(state)
        try:
            status = await anyio.to_thread.run_sync(lambda: getattr(manager, name)(caller.name))
        except RolloutConflictError as exc:
            raise HttpError(409, "rollout_finished", str(exc)) from None
        return json_response(status)

    route.__name__ = f"rollout_{name}_route"
    route.__doc__ = f"{name.title()} the rollout."
    return route


rollout_promote_route = _action("promote")
rollout_abort_route = _action("abort")
rollout_resume_route = _action("resume")
