"""What every route shares: the policy runtime, metrics, auth and config.

``front_door`` wraps a route so that every accepted request ends as exactly one
of: labeled (counted by the route) or answered with a JSON error (counted here).
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import Response

from activelabel.observability.metrics import LabelTimer, ServiceMetrics
from activelabel.service._http import Authenticator, HttpError
from activelabel.service.config import ServiceConfig
from activelabel.service.policy_runtime import (
    NotReadyError,
    PolicyRuntime,
    PolicySnapshot,
)

log = logging.getLogger("activelabel.service")

Handler = Callable[[Request], Awaitable[Response]]


@dataclass
class ServiceState:
    runtime: PolicyRuntime
    metrics: ServiceMetrics
    auth: Authenticator
    config: ServiceConfig
    forward_client: httpx.AsyncClient | None = None
    store: Any = None  # activelabel.quality.store.DecisionStore when decisions are recorded
    rollouts: Any = None  # activelabel.service.rollout_service.RolloutManager
    audit: Any = None  # activelabel.governance.audit.AuditLog with --audit DIR

    def snapshot(self) -> PolicySnapshot:
        try:
            return self.runtime.current
        except NotReadyError:
            raise HttpError(503, "not_ready", "no policy is loaded yet; retry after /readyz answers 200") from None


def state_of(request: Request) -> ServiceState:
    return request.app.state.activelabel  # type: ignore[no-any-return]


def front_door(door: str) -> Callable[[Handler], Handler]:
    """Count and render every refusal of the wrapped route as a JSON error (never a dropped worker)."""

    def wrap(handler: Handler) -> Handler:
        async def route(request: Request) -> Response:
            state = state_of(request)
            try:
                return await handler(request)
            except HttpError as exc:
                state.metrics.observe_error(door, exc.code)
                return exc.response()
            except Exception as exc:  # noqa: BLE001 - the last line of defence keeps the worker alive
                return internal_error(state, door, exc).response()

        route.__name__ = handler.__name__
        route.__doc__ = handler.__doc__
        return route

    return wrap


def internal_error(state: ServiceState, door: str, exc: BaseException) -> HttpError:
    """Log and count an unexpected failure; the 500 it becomes names no event content."""
    # Log where, not what: exception messages may quote event values.
    frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    where = f"{frame.filename}:{frame.lineno}" if frame else "?"
    log.error("internal error on %s door: %s at %s", door, type(exc).__name__, where)
    state.metrics.observe_error(door, "internal")
    return HttpError(500, "internal", f"internal error ({type(exc).__name__}); see the server log")


# Wall and CPU time of one labeling (M1, M10); the name the routes know it by.
Stopwatch = LabelTimer


def label_one(snapshot: PolicySnapshot, event: Any) -> Any:
    """Label one event with the snapshot's labeler (one place to adapt if the engine API moves)."""
    return snapshot.labeler.label(event)


def label_many(snapshot: PolicySnapshot, events: list[Any]) -> list[Any]:
    if not events:
        return []
    return list(snapshot.labeler.label_batch(events))
