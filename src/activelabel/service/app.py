"""The ASGI app of ``activelabel serve``: routes, lifespan, reload triggers.

``create_app`` loads and checks the policy before returning, so a service
never starts on a bad policy. Reload triggers (all serialized by the runtime):
``POST /v1/policy/reload`` (admin scope), SIGHUP (when ``handle_sighup``), and
a watch on the policy file and every file it depends on (``watch_policy``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from activelabel.errors import PolicyError, PolicyIssue, RolloutConflictError
from activelabel.governance.protect import Protector
from activelabel.observability.metrics import ServiceMetrics
from activelabel.observability.windows import LabelDrift
from activelabel.service import routes_core, routes_edge, routes_ops, routes_otlp, routes_rollout
from activelabel.service._http import Authenticator, HttpError, too_large
from activelabel.service.auth import AuthConfigError, TokenTable
from activelabel.service.config import ServiceConfig
from activelabel.service.policy_runtime import (
    LabelerLoader,
    PolicyRuntime,
    ReloadOutcome,
    issue_fields,
    load_checked_labeler,
)
from activelabel.service.recording import feedback_route, open_store
from activelabel.service.routes_edge import ext_authz_asgi
from activelabel.service.routes_label import label_asgi
from activelabel.service.state import ServiceState

log = logging.getLogger("activelabel.service")


def create_app(
    policy_path: Path | str,
    *,
    config: ServiceConfig | None = None,
    tokens: TokenTable | None = None,
    no_auth: bool = False,
    registry: CollectorRegistry | None = None,
    handle_sighup: bool = False,
    loader: LabelerLoader | None = None,
    tokens_source: Callable[[], TokenTable | None] | None = None,
    history_path: Path | str | None = None,
    audit: Callable[[Any], Any] | None = None,
    rollout_state_file: Path | str | None = None,
) -> LabelService:
    """Build the service for ``policy_path``.

    Raises ``PolicyError`` (every issue) if the policy is refused, and
    ``AuthConfigError`` if neither ``tokens`` nor ``no_auth`` is given.
    ``tokens_source`` re-reads the token table on every reload (SIGHUP, API,
    watch) so tokens rotate without a restart; a table that fails to load is
    logged and the old one kept.

    Every policy loaded or offered is kept in a policy history: ``history_path``, else the
    decision store's file (``store.path``), else in memory. ``audit(policy)`` opens the
    decision audit log (``--audit DIR``). A rollout's state is persisted in
    ``rollout_state_file`` (default: ``<store or history>.rollout.json``) and resumed here.
    """
    config = config or ServiceConfig()
    if tokens is None and not no_auth:
        raise AuthConfigError(
            "refusing to start without authentication: pass --tokens FILE, set "
            f"${config.tokens_env}, or pass --no-auth for local use"
        )
    metrics = ServiceMetrics(registry)
    metrics.drift = LabelDrift(config.drift_window_events, config.drift_sample_every)
    if loader is None:
        loader = functools.partial(load_checked_labeler, track_conflicts=config.track_conflicts)
    state: ServiceState | None = None  # set once the first policy is in

    def on_reload(outcome: ReloadOutcome) -> None:
        metrics.observe_reload(outcome.accepted, outcome.trigger)
        if state is None:
            return  # the first load
        if state.audit is not None:
            state.audit.log_admin("reload", actor=outcome.trigger, accepted=outcome.accepted,
                                  old_version=outcome.old_version, new_version=outcome.new_version,
                                  errors=len(outcome.errors))
        if outcome.accepted and state.rollouts is not None and state.rollouts.active() is not None:
            # The rollout compares against the policy it started with; a new serving policy ends it.
            with contextlib.suppress(RolloutConflictError):  # it finished on its own in between: nothing to abort
                state.rollouts.abort(f"a reload ({outcome.trigger}) made {outcome.new_version} the serving policy")
        if outcome.accepted and state.store is not None:
            # Feedback is validated against the labels of the policy now serving.
            state.store.register_policy(state.runtime.current.labeler.policy)
        if tokens_source is not None:
            _rotate_tokens(state, tokens_source)

    # A named key that is missing or unreadable stops the service here, before it serves anything.
    protector = Protector.configured(config.pseudonym_key_file)
    from activelabel.governance.history import PolicyHistory
    from activelabel.service.rollout_service import RolloutManager, restore_serving

    history_file = history_path or config.store.path
    history = PolicyHistory(history_file or ":memory:")
    before = history.last_serving()  # what served before this start (read before it records its own row)
    runtime = PolicyRuntime(policy_path, loader=loader, on_reload=on_reload, protector=protector, history=history)
    first = runtime.reload("start")
    if not first.accepted:
        raise PolicyError(issues=[PolicyIssue(**issue_fields(e)) for e in first.errors])
    # A promote, rollback or reload before the restart still holds: the store, the audit log's
    # start record and the rollout all see the policy that serves.
    restored = restore_serving(runtime, before)
    metrics.follow_runtime(runtime)
    state = ServiceState(runtime=runtime, metrics=metrics, auth=Authenticator(None if no_auth else tokens), config=config)
    if config.store.path:
        state.store = open_store(config.store.path, runtime.current.labeler.policy, protector, metrics.pii)
        metrics.follow_store(state.store, window_s=config.accuracy_window_s)
        store = state.store
        # Feedback is validated against the labels of the policy now serving, after a promote or a rollback too.
        runtime.on_serve.append(lambda snapshot: store.register_policy(snapshot.labeler.policy))
    if audit is not None:
        state.audit = audit(runtime.current.labeler.policy)
        state.audit.log_admin("start", actor="serve", version=runtime.current.version, policy=str(policy_path),
                              **({"loaded": first.new_version} if restored is not None else {}))
    if rollout_state_file is None and history_file:
        rollout_state_file = f"{history_file}.rollout.json"
    state.rollouts = RolloutManager(runtime, state_file=rollout_state_file, audit=state.audit)
    state.rollouts.resume_persisted(restored)
    metrics.registry.register(_RolloutCollector(state.rollouts))

    # /v1/label and ext_authz are dispatched by LabelService before Starlette.
    routes = [
        Route("/v1/traces", routes_otlp.otlp_traces_route, methods=["POST"]),
        Route("/v1/logs", routes_otlp.otlp_logs_route, methods=["POST"]),
        Route("/v1/admission", routes_edge.admission_route, methods=["POST"]),
        Route("/healthz", routes_core.healthz_route, methods=["GET"]),
        Route("/readyz", routes_core.readyz_route, methods=["GET"]),
        Route("/metrics", routes_core.metrics_route, methods=["GET"]),
        Route("/v1/policy", routes_core.policy_route, methods=["GET"]),
        Route("/v1/policy/reload", routes_core.reload_route, methods=["POST"]),
        Route("/v1/feedback", feedback_route, methods=["POST"]),
        Route("/v1/tap", routes_ops.tap_route, methods=["GET"]),
        Route("/ui", routes_ops.ui_route, methods=["GET"]),
        Route("/v1/policy/history", routes_rollout.history_route, methods=["GET"]),
        Route("/v1/policy/rollback", routes_rollout.rollback_route, methods=["POST"]),
        Route("/v1/rollout", routes_rollout.rollout_start_route, methods=["POST"]),
        Route("/v1/rollout", routes_rollout.rollout_status_route, methods=["GET"]),
        Route("/v1/rollout/report", routes_rollout.rollout_report_route, methods=["GET"]),
        Route("/v1/rollout/promote", routes_rollout.rollout_promote_route, methods=["POST"]),
        Route("/v1/rollout/abort", routes_rollout.rollout_abort_route, methods=["POST"]),
        Route("/v1/rollout/resume", routes_rollout.rollout_resume_route, methods=["POST"]),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        stop_watching = asyncio.Event()
        tasks: list[asyncio.Task[None]] = []
        if config.otlp.forward_endpoint:
            state.forward_client = httpx.AsyncClient(timeout=config.otlp.forward_timeout_s)
        if handle_sighup:
            _install_sighup(runtime)
        if config.watch_policy:
            tasks.append(asyncio.create_task(_watch_policy(runtime, stop_watching)))
        tasks.append(asyncio.create_task(_tick_rollouts(state)))
        try:
            yield
        finally:
            stop_watching.set()
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            if state.forward_client is not None:
                await state.forward_client.aclose()
            if state.store is not None:
                state.store.close()
            if state.audit is not None:
                state.audit.log_admin("stop", actor="serve", version=runtime.current.version)
                state.audit.close()
            history.close()

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={404: _json_http_error, 405: _json_http_error},
    )
    app.state.activelabel = state
    return LabelService(app, state)


class LabelService:
    """The ASGI app: ``/v1/label`` and ext_authz checks go straight to their handlers, the rest to Starlette.

    ``starlette`` is the inner app (routes, lifespan); ``state`` what the routes share.
    """

    def __init__(self, starlette: Starlette, state: ServiceState) -> None:
        self.starlette = starlette
        self.state = state
        self.in_flight = 0
        self._limit = state.config.max_in_flight
        self._authz_prefix = state.config.ext_authz.path_prefix.rstrip("/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in _ALWAYS_ANSWERED:
            await self.starlette(scope, receive, send)
            return
        # The whole body first, within a deadline, and only then does the request count
        # as in flight: a client trickling bodies must not fill the in-flight limit.
        first = await _read_whole_body(self.state, scope, receive, send)
        if first is None:
            return  # already answered (408 / 413) or the client left
        if self._limit and self.in_flight >= self._limit:
            await _overloaded(self.state, scope, send)
            return
        # One event loop: the counter needs no lock.
        self.in_flight += 1
        try:
            replay = _replay(first, receive)
            path = scope["path"]
            if path == "/v1/label":
                await label_asgi(self.state, scope, replay, send)
            elif path == self._authz_prefix or path.startswith(self._authz_prefix + "/"):
                await ext_authz_asgi(self.state, scope, replay, send)
            else:
                await self.starlette(scope, replay, send)
        finally:
            self.in_flight -= 1


async def _read_whole_body(state: ServiceState, scope: Scope, receive: Receive, send: Send) -> Message | None:
    """The request's body as one ``http.request`` message, or None once the request is answered.

    The raw (still compressed) body is held to ``max_body_bytes``, as the handlers'
    own check does after decompression; ``body_timeout_s`` bounds the whole read.
    """
    limit = state.config.max_body_bytes
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            await _answer_early(state, scope, send, too_large(limit), close=True)
            return None
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(state.config.body_timeout_s):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return None
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    await _answer_early(state, scope, send, too_large(limit), close=True)
                    return None
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
    except TimeoutError:
        error = HttpError(408, "request_timeout",
                          f"the request body did not arrive within {state.config.body_timeout_s:g}s; send the whole body at once")
        await _answer_early(state, scope, send, error, close=True)
        return None
    return {"type": "http.request", "body": chunks[0] if len(chunks) == 1 else b"".join(chunks), "more_body": False}


def _replay(first: Message, receive: Receive) -> Receive:
    """A ``receive`` giving the body already read, then whatever the client sends next (a disconnect)."""
    pending: list[Message] = [first]

    async def replay() -> Message:
        if pending:
            return pending.pop()
        return await receive()

    return replay


async def _answer_early(state: ServiceState, scope: Scope, send: Send, error: HttpError, *, close: bool) -> None:
    state.metrics.observe_error(_door_of(scope["path"], state.config), error.code)
    body = error.body()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        # The rest of the body is unread: the connection cannot carry another request.
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# A tap stays open as long as its reader: it must not hold one of the max_in_flight slots.
_ALWAYS_ANSWERED = frozenset({"/healthz", "/readyz", "/metrics", "/v1/tap", "/ui"})


def _door_of(path: str, config: ServiceConfig) -> str:
    if path.startswith(config.ext_authz.path_prefix):
        return "ext_authz"
    return {"/v1/traces": "otlp_traces", "/v1/logs": "otlp_logs", "/v1/admission": "admission"}.get(path, "label")


async def _overloaded(state: ServiceState, scope: Scope, send: Send) -> None:
    """Shed load early (before reading the body) so a saturated labeler stays responsive."""
    error = HttpError(
        503, "overloaded", f"more than {state.config.max_in_flight} requests in flight; retry shortly"
    )
    state.metrics.observe_error(_door_of(scope["path"], state.config), error.code)
    body = error.body()
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), (b"retry-after", b"1")],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _json_http_error(request: Request, exc: Exception) -> Response:
    """Unknown paths and wrong methods answer in the same JSON shape as every other error."""
    status = getattr(exc, "status_code", 500)
    if status == 404:
        message = f"no such endpoint {request.url.path!r}; see docs/service.md for the endpoints"
        return HttpError(404, "not_found", message).response()
    return HttpError(status, "method_not_allowed", f"{request.method} is not allowed on {request.url.path!r}").response()


def _rotate_tokens(state: ServiceState, tokens_source: Callable[[], TokenTable | None]) -> None:
    try:
        table = tokens_source()
    except AuthConfigError as exc:
        log.error("token table not reloaded, keeping the current one: %s", exc)
        return
    if table is None:
        log.error("token table not reloaded: the source is now empty; keeping the current one")
        return
    state.auth.replace_tokens(table)
    log.info("token table reloaded: %d token(s)", len(table))


class _RolloutCollector:
    """The ``activelabel_rollout_*`` families, read from the rollout at scrape time."""

    def __init__(self, manager: Any) -> None:
        self.manager = manager

    def collect(self) -> Any:
        return self.manager.collect()

    def describe(self) -> list[Any]:
        return []  # families appear and go with rollouts: nothing to check at registration


async def _tick_rollouts(state: ServiceState) -> None:
    """Evaluate the rollout a few times per interval (off the event loop: analysis sorts latencies)."""
    manager = state.rollouts
    while True:
        rollout = manager.active()
        period = 1.0 if rollout is None else min(1.0, max(0.05, rollout.spec.interval_s / 5))
        await asyncio.sleep(period)
        if rollout is not None:
            try:
                await anyio.to_thread.run_sync(manager.tick)
            except Exception:  # a failed evaluation must not stop later ones; it is logged
                log.exception("rollout evaluation failed; retrying at the next tick")


def _install_sighup(runtime: PolicyRuntime) -> None:
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGHUP"):
        log.warning("SIGHUP reload not available (not the main thread); use POST /v1/policy/reload")
        return
    loop = asyncio.get_running_loop()
    running: set[asyncio.Task[object]] = set()  # the loop keeps only weak references to tasks

    def on_sighup() -> None:
        # Reload off the event loop: compiling a policy must not stall requests.
        task = loop.create_task(anyio.to_thread.run_sync(runtime.reload, "sighup"))
        running.add(task)
        task.add_done_callback(running.discard)

    loop.add_signal_handler(signal.SIGHUP, on_sighup)


def _watched_files(runtime: PolicyRuntime) -> frozenset[Path]:
    """The policy file and everything it depends on (includes, tables, models), resolved."""
    files = {runtime.policy_path.resolve()}
    if runtime.ready:
        policy = runtime.current.labeler.policy
        files.update(Path(p).resolve() for p in getattr(policy, "dependencies", ()) or ())
    return frozenset(files)


def _watch_filter(files: frozenset[Path], policy_path: Path) -> Callable[[object, str], bool]:
    """A watchfiles filter passing only changes to the policy's own files (or a ConfigMap swap).

    Filtering inside watchfiles, not after it, is what keeps an unrelated file in the
    policy's folder (a log being appended) from waking the watcher at all.
    """
    link = policy_path.absolute()  # a symlink swapped to another version is a change too
    names = frozenset(f.name for f in files) | {"..data", link.name}

    def keep(_change: object, path: str) -> bool:
        p = Path(path)
        # The cheap name test first: resolving every path of a busy folder costs syscalls.
        return p.name in names and (p.name == "..data" or p == link or p.resolve() in files)

    return keep


async def _watch_policy(runtime: PolicyRuntime, stop: asyncio.Event) -> None:
    from watchfiles import awatch

    # watchfiles logs every batch of changes ("1 change detected") at INFO: that is
    # the watcher's chatter, not the service's news (reloads are logged by the runtime).
    chatter = logging.getLogger("watchfiles")
    if chatter.getEffectiveLevel() > logging.DEBUG:
        chatter.setLevel(logging.WARNING)
    while not stop.is_set():
        files = _watched_files(runtime)
        # Watch directories, not files: editors and Kubernetes ConfigMap updates
        # replace files (rename / `..data` symlink swap), which a file watch misses.
        # The unresolved policy directory too: a ConfigMap mount swaps its `..data`
        # symlink there while the resolved files sit in a directory that vanishes.
        parents = {f.parent for f in files} | {runtime.policy_path.absolute().parent}
        directories = sorted(str(d) for d in parents if d.exists())
        async for _changes in awatch(*directories, watch_filter=_watch_filter(files, runtime.policy_path), stop_event=stop, debounce=300, step=50):
            await anyio.to_thread.run_sync(runtime.reload, "watch")
            if _watched_files(runtime) != files:
                break  # the new policy depends on other files: watch those
