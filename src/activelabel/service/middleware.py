"""ASGI middleware: label every incoming HTTP request in-process.

    from activelabel import Labeler
    from activelabel.service import LabelingMiddleware

    app = Starlette(routes=...)
    app.add_middleware(LabelingMiddleware, labeler=Labeler.from_file("policy.yaml"), response_headers=True)
    # or, to reload without restarting: labeler=PolicyRuntime.load("policy.yaml"), then runtime.reload()

    async def handler(request):
        request.state.labels          # {"priority": "critical", ...}
        request.state.label_decision  # the full Decision (explain(), confidences, ...)

The handler sees every label. With ``response_headers=True`` the labels also go
back to the client as ``x-label-<name>`` headers — except ``pii`` and ``secret``
ones, which never leave the process this way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from activelabel.observability.metrics import LabelTimer, ServiceMetrics
from activelabel.service.http_event import event_from_asgi_scope
from activelabel.service.label_output import header_name, header_value
from activelabel.service.policy_runtime import PolicySnapshot, snapshot_source

log = logging.getLogger("activelabel.service.middleware")


class LabelingMiddleware:
    """Labels each HTTP request; the labels land in ``request.state.labels``.

    ``labeler`` is a ``Labeler`` or a ``PolicyRuntime`` (whose current policy is used).
    """

    def __init__(
        self,
        app: ASGIApp,
        labeler: Any,
        *,
        response_headers: bool = False,
        header_prefix: str = "x-label-",
        event_of: Callable[[Scope], dict[str, Any]] = event_from_asgi_scope,
        metrics: ServiceMetrics | None = None,
    ) -> None:
        self.app = app
        self.response_headers = response_headers
        self.header_prefix = header_prefix.lower()
        self.event_of = event_of
        self.metrics = metrics
        self._snapshot = snapshot_source(labeler)
        # Which labels may go out as headers is fixed by each policy: decide once per policy.
        self._exportable_for: tuple[PolicySnapshot | None, frozenset[str]] = (None, frozenset())

    def _exportable(self, snapshot: PolicySnapshot) -> frozenset[str]:
        cached_for, names = self._exportable_for
        if cached_for is not snapshot:
            names = frozenset(snapshot.label_names) - snapshot.protected_labels
            self._exportable_for = (snapshot, names)
        return names

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        timer = LabelTimer()
        snapshot = self._snapshot()
        try:
            decision = snapshot.labeler.label(self.event_of(scope))
        except Exception as exc:  # noqa: BLE001 - labeling must never take the app down
            log.error("request labeling failed: %s", type(exc).__name__)
            if self.metrics is not None:
                self.metrics.observe_error("middleware", "internal", failed_events=1)
            await self.app(scope, receive, send)
            return
        if self.metrics is not None:
            self.metrics.observe_labeled("middleware", timer.seconds(), 1, cpu_seconds=timer.cpu_seconds())
            self.metrics.observe_decisions(snapshot, (decision.labels,))
        state = scope.setdefault("state", {})
        state["labels"] = decision.labels
        state["label_decision"] = decision
        if not self.response_headers:
            await self.app(scope, receive, send)
            return
        exportable = self._exportable(snapshot)
        extra = [
            (header_name(self.header_prefix, name).encode("latin-1"), header_value(value).encode("latin-1"))
            for name, value in decision.labels.items()
            if name in exportable
        ]

        async def send_with_labels(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_labels)
