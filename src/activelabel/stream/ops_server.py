"""Operations of the stream worker: its SLIs, consumer lag, readiness, policy reload, tap and status page.

``StreamOps`` is what ``StreamWorker(..., ops=...)`` reports to (on the worker
thread, once per batch) and what the ops port serves (``OpsServer``, on its own
threads, stdlib ``http.server``):

- ``GET /metrics``: every door SLI for ``door="stream"`` through ``DoorMetrics``
  (M1 batch latency, M6 dead letters by reason, M10 CPU), the engine's counters
  of the serving policy (M3 coverage, M4, M5, M6 rule errors), drift (M7) and
  ``activelabel_stream_consumer_lag{topic,partition}``;
- ``GET /healthz`` (the process is up), ``GET /readyz`` (a policy is loaded and
  the broker answered with every topic);
- ``GET /v1/tap``: decisions as they are made (NDJSON, protected for a default
  reader: the ops port has no tokens);
- ``GET /ui``: the status page.

Reload: SIGHUP and a watch of the policy's own files (``--watch``) call the same
``PolicyRuntime.reload`` as ``serve``: a refused candidate is logged and counted,
the serving policy keeps labeling; an accepted one takes over at the next batch.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from activelabel.governance.sensitivity import DEFAULT_CLEARANCE
from activelabel.observability.metrics import LabelTimer, ServiceMetrics
from activelabel.observability.status_page import escape, gather, html_table, render
from activelabel.observability.tap import render_entry
from activelabel.service.policy_runtime import PolicyRuntime, PolicySnapshot, ReloadOutcome, load_checked_labeler
from activelabel.stream.config import StreamConfig

log = logging.getLogger("activelabel.stream.ops")

DOOR = "stream"


class StreamOps:
    """The worker's operational state; ``runtime`` holds the serving policy (reloadable).

    Example::

        ops = StreamOps(config, "policy.yaml")       # nothing loaded yet: /readyz says so
        server = ops.serve(9464)                      # /metrics /healthz /readyz /ui /v1/tap
        ops.load()                                    # PolicyError: every issue of a refused policy
        StreamWorker(ops.runtime.current.labeler, config, ops=ops).run()
    """

    def __init__(self, config: StreamConfig, policy_path: Path | str, *, registry: CollectorRegistry | None = None,
                 track_conflicts: bool = True, lag_interval_s: float = 5.0, sample_interval_s: float = 2.0,
                 observe_labels: bool = True) -> None:
        self.config = config
        self.metrics = ServiceMetrics(registry)
        self.door = self.metrics.door(DOOR)
        self.tap = self.metrics.tap
        self.runtime = PolicyRuntime(policy_path, on_reload=self._on_reload,
                                     loader=lambda p: load_checked_labeler(p, track_conflicts=track_conflicts))
        self.metrics.follow_runtime(self.runtime)
        self.lag_interval_s = lag_interval_s
        self.sample_interval_s = sample_interval_s
        # Reading the labels back (M7, top values) costs a parse per message: off when nothing is served.
        self.observe_labels = observe_labels
        self.broker_ready = False
        self.lag: dict[int, int] = {}
        self._lag_at = float("-inf")
        self._sampled_at = float("-inf")
        self._lag_children: dict[int, Any] = {}
        self._lag_consumer: Any = None
        self._stop_watch = threading.Event()

    # ---- the policy ---------------------------------------------------------

    def load(self) -> ReloadOutcome:
        """The first load; ``PolicyError`` with every issue when the policy is refused."""
        from activelabel.errors import PolicyError, PolicyIssue
        from activelabel.service.policy_runtime import issue_fields

        outcome = self.runtime.reload("start")
        if not outcome.accepted:
            raise PolicyError(issues=[PolicyIssue(**issue_fields(e)) for e in outcome.errors])
        return outcome

    def _on_reload(self, outcome: ReloadOutcome) -> None:
        self.metrics.observe_reload(outcome.accepted, outcome.trigger)

    def snapshot(self) -> PolicySnapshot:
        return self.runtime.current

    # ---- worker hooks (the worker thread) -----------------------------------

    def wants_decisions(self) -> bool:
        """Label this batch through whole Decisions: someone taps, or the status page's sample is stale."""
        if self.tap.tapped:
            return True
        now = time.monotonic()
        if now - self._sampled_at >= self.sample_interval_s:
            self._sampled_at = now
            return True
        return False

    def decision_hook(self, snapshot: PolicySnapshot) -> Callable[[dict[str, Any], Any], None]:
        """The record loop's ``on_decision`` for a batch labeled by ``snapshot``'s policy."""
        offer = self.tap.offer

        def on_decision(_event: dict[str, Any], decision: Any) -> None:
            offer(DOOR, snapshot, decision)

        return on_decision

    def set_broker_ready(self, ready: bool) -> None:
        self.broker_ready = ready

    def batch_timer(self) -> LabelTimer:
        return LabelTimer()

    def observe_output(self, output: Any) -> Any:
        """Wrap a batch's record output to keep the labels of what was produced (for M7 drift and top values)."""
        return ObservedOutput(output, self.config.labels_field) if self.observe_labels else output

    def observe_batch(self, snapshot: PolicySnapshot, spent: tuple[float, float], labeled: int,
                      dead_letter_kinds: dict[str, int], observed: Any) -> None:
        """One batch committed: M1 labeling latency and M10 CPU of the batch, M6 dead letters by reason, M7 drift."""
        seconds, cpu_seconds = spent
        self.door.observe_labeled(seconds, labeled, dead_letter_kinds, cpu_seconds=cpu_seconds)
        if isinstance(observed, ObservedOutput) and observed.labels:
            self.metrics.observe_decisions(snapshot, observed.labels)

    def measure_lag(self, partitions: Sequence[int], *, force: bool = False) -> None:
        """Measure the lag of ``partitions`` (those the worker holds) at most every ``lag_interval_s``."""
        if not force and time.monotonic() - self._lag_at < self.lag_interval_s:
            return
        self._lag_at = time.monotonic()
        lag = self._read_lag(partitions) if partitions else {}
        if lag is not None:
            self.observe_lag(lag)

    def _read_lag(self, partitions: Sequence[int]) -> dict[int, int] | None:
        """Committed offset of the group vs high watermark, per partition; None when the broker does not say.

        Through a consumer of its own that never joins the group (an offset fetch for the
        group id is not a membership), so the worker's consumer is left alone.
        """
        from confluent_kafka import Consumer, KafkaException, TopicPartition

        cfg = self.config
        try:
            if self._lag_consumer is None:
                settings = {**cfg.consumer_options, "bootstrap.servers": cfg.bootstrap_servers, "group.id": cfg.group_id,
                            "enable.auto.commit": False}
                self._lag_consumer = Consumer(settings)
            consumer = self._lag_consumer
            topic, timeout = cfg.input_topic, cfg.metadata_timeout_s
            lag: dict[int, int] = {}
            for tp in consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=timeout):
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=timeout, cached=False)
                start = tp.offset if tp.offset >= 0 else (low if cfg.auto_offset_reset == "earliest" else high)
                lag[tp.partition] = max(0, high - start)
        except (KafkaException, RuntimeError) as exc:
            # Lag is a metric, never a reason to stop labeling.
            log.warning("consumer lag of %s not measured: %s", cfg.input_topic, exc)
            return None
        return lag

    def observe_lag(self, lag: dict[int, int]) -> None:
        """The consumer lag of each partition this worker holds (partitions it lost leave the gauge)."""
        topic = self.config.input_topic
        gauge = self.metrics.stream_consumer_lag
        for partition in set(self._lag_children) - set(lag):
            gauge.remove(topic, str(partition))
            del self._lag_children[partition]
        for partition, n in lag.items():
            child = self._lag_children.get(partition)
            if child is None:
                child = self._lag_children[partition] = gauge.labels(topic, str(partition))
            child.set(n)
        self.lag = dict(lag)

    # ---- reload triggers ----------------------------------------------------

    def reload_in_background(self, trigger: str) -> threading.Thread:
        """Reload off the worker's thread (compiling a policy must not stall labeling)."""
        thread = threading.Thread(target=self.runtime.reload, args=(trigger,), name=f"activelabel-reload-{trigger}", daemon=True)
        thread.start()
        return thread

    def install_sighup(self) -> Callable[[], None] | None:
        """SIGHUP reloads the policy; returns how to restore the previous handler (None off the main thread)."""
        if not hasattr(signal, "SIGHUP") or threading.current_thread() is not threading.main_thread():
            log.warning("SIGHUP reload not available (not the main thread)")
            return None
        previous = signal.getsignal(signal.SIGHUP)
        signal.signal(signal.SIGHUP, lambda _signum, _frame: self.reload_in_background("sighup"))

        def restore() -> None:
            signal.signal(signal.SIGHUP, previous)

        return restore

    def start_watch(self) -> threading.Thread:
        """Reload when the policy file or a file it depends on changes (until ``close``)."""
        thread = threading.Thread(target=self._watch, name="activelabel-policy-watch", daemon=True)
        thread.start()
        return thread

    def _watch(self) -> None:
        from watchfiles import watch

        from activelabel.service.app import _watched_files  # one home for "which files make a policy"

        while not self._stop_watch.is_set():
            files = _watched_files(self.runtime)
            # Directories, as `serve` does: editors and ConfigMap updates replace files by rename.
            parents = {f.parent for f in files} | {self.runtime.policy_path.absolute().parent}
            directories = sorted(str(d) for d in parents if d.exists())
            for changes in watch(*directories, stop_event=self._stop_watch, debounce=300, step=50, rust_timeout=500,
                                 yield_on_timeout=False):
                if any(Path(p).resolve() in files or Path(p).name == "..data" for _, p in changes):
                    self.runtime.reload("watch")
                    if _watched_files(self.runtime) != files:
                        break

    # ---- the ops port -------------------------------------------------------

    def ready(self) -> tuple[bool, str]:
        if not self.runtime.ready:
            return False, "no policy loaded"
        if not self.broker_ready:
            return False, f"the broker {self.config.bootstrap_servers} has not answered with the topics yet"
        return True, ""

    def serve(self, port: int, host: str = "0.0.0.0") -> OpsServer:
        """Start the ops port (0 picks a free one: see ``OpsServer.port``)."""
        return OpsServer(self, host, port)

    def close(self) -> None:
        self._stop_watch.set()
        consumer, self._lag_consumer = self._lag_consumer, None
        if consumer is not None:
            consumer.close()

    def status_html(self) -> str:
        cfg = self.config
        rows = [("input topic", escape(cfg.input_topic)), ("output topic", escape(cfg.output_topic)),
                ("dead-letter topic", escape(cfg.dead_letter_topic)), ("consumer group", escape(cfg.group_id)),
                ("brokers", escape(cfg.bootstrap_servers))]
        rows += [(f"lag, partition {p}", f"{n:,}") for p, n in sorted(self.lag.items())] or [("lag", "no partition assigned")]
        view = gather("stream worker", self.runtime, self.metrics, self.tap, started_at=self.metrics.started_at,
                      extra=[("Kafka", html_table(("", ""), rows))])
        view.ready, view.not_ready_reason = self.ready()
        return render(view)


class ObservedOutput:
    """A ``RecordOutput`` that passes everything on and keeps the labels object of each produced record."""

    def __init__(self, inner: Any, labels_field: str) -> None:
        self.inner = inner
        self.labels_field = labels_field
        self.labels: list[dict[str, Any]] = []

    def write_many(self, where: list[Any], lines: list[bytes]) -> list[tuple[int, str, str]]:
        refused: list[tuple[int, str, str]] = self.inner.write_many(where, lines)
        skip = {i for i, _kind, _reason in refused}
        field, loads, keep = self.labels_field, orjson.loads, self.labels.append
        for i, line in enumerate(lines):
            if i not in skip:
                labels = loads(line).get(field)
                keep(labels if isinstance(labels, dict) else {})
        return refused

    def dead_letter(self, where: Any, raw: bytes | None, kind: str, reason: str) -> None:
        self.inner.dead_letter(where, raw, kind, reason)


class OpsServer:
    """The ops HTTP port of one worker, on daemon threads; ``close()`` stops it."""

    def __init__(self, ops: StreamOps, host: str, port: int) -> None:
        handler = type("Handler", (_OpsHandler,), {"ops": ops})
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="activelabel-ops-port", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _OpsHandler(BaseHTTPRequestHandler):
    ops: StreamOps
    server_version = "activelabel-stream"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("ops port: " + format, *args)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        route = {"/metrics": self._metrics, "/healthz": self._healthz, "/readyz": self._readyz,
                 "/ui": self._ui, "/v1/tap": self._tap}.get(url.path)
        if route is None:
            self._json(404, {"error": {"code": "not_found", "message": f"no such endpoint {url.path!r}; "
                                       "the ops port serves /metrics /healthz /readyz /ui /v1/tap"}})
            return
        route(dict(parse_qsl(url.query)))

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.send_header("cache-control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, body: Any) -> None:
        self._send(status, orjson.dumps(body), "application/json")

    def _metrics(self, _params: dict[str, str]) -> None:
        self._send(200, generate_latest(self.ops.metrics.registry), CONTENT_TYPE_LATEST)

    def _healthz(self, _params: dict[str, str]) -> None:
        self._json(200, {"status": "ok"})

    def _readyz(self, _params: dict[str, str]) -> None:
        ready, why = self.ops.ready()
        if not ready:
            self._json(503, {"status": "not ready", "reason": why})
            return
        self._json(200, {"status": "ready", "policy_version": self.ops.runtime.current.version})

    def _ui(self, _params: dict[str, str]) -> None:
        self._send(200, self.ops.status_html().encode(), "text/html; charset=utf-8")

    def _tap(self, params: dict[str, str]) -> None:
        from activelabel.service.routes_ops import tap_query

        try:
            tap_filter, limit = tap_query(params)
        except ValueError as exc:
            self._json(400, {"error": {"code": "bad_tap_query", "message": f"{exc}; use ?label=NAME=VALUE&rule=ID&limit=N"}})
            return
        tap = self.ops.tap
        subscriber = tap.subscribe(tap_filter, backlog=False)
        self.send_response(200)
        self.send_header("content-type", "application/x-ndjson")
        self.send_header("cache-control", "no-store")
        self.end_headers()  # HTTP/1.0: the body ends when the connection closes
        sent = 0
        try:
            self._line({"notice": f"tapping stream worker {self.ops.config.input_topic}: decisions as they are made"})
            while limit is None or sent < limit:
                entries, dropped = subscriber.take()
                if dropped:
                    self._line({"notice": f"{dropped} decisions dropped: this reader was slower than the traffic"})
                for entry in entries:
                    shown = render_entry(entry, DEFAULT_CLEARANCE, tap_filter)
                    if shown is not None:
                        self._line(shown)
                        sent += 1
                        if limit is not None and sent >= limit:
                            return
                if not entries:
                    subscriber.wait(0.5)
        except (BrokenPipeError, ConnectionResetError):
            return  # the reader left
        finally:
            tap.unsubscribe(subscriber)

    def _line(self, body: Any) -> None:
        self.wfile.write(orjson.dumps(body, default=str) + b"\n")
        self.wfile.flush()
