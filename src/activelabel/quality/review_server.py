"""Two small HTTP servers on the decision store, for teams that answer review items:

* ``ReviewPage`` — the built-in review page (``activelabel review serve``): server-rendered
  HTML, one item at a time with its explanation; keys 1–9 pick a value, ``n`` types a
  new one (open labels), ``s`` skips. No build step, no network, works without
  JavaScript too (the keys are a convenience over plain forms).
* ``LabelStudioBackend`` — Label Studio's ML backend protocol
  (``HumanSignal/label-studio-ml-backend``): ``GET /health``, ``POST /setup``,
  ``POST /predict`` (our labels as predictions with ``score``), ``POST /webhook``
  (``ANNOTATION_CREATED`` / ``ANNOTATION_UPDATED`` become ground truth, and online
  models learn from them).

Both are ``http.server`` servers: one process, threads per request, loopback by
default. A refused answer is shown (or returned) with its reason and kept in the
store's refusals, as every other feedback door does.
"""

from __future__ import annotations

import html
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

from activelabel.errors import FeedbackError
from activelabel.quality.review import ID_KEY, LABEL_KEY, TEXT_KEY, select_for_review
from activelabel.quality.store import DecisionStore, StoredDecision

MAX_BODY = 8 * 1024 * 1024


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _BaseApp:
    """A server running in a thread; ``url`` once started."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host, self._port = host, port
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    def handle(self, method: str, path: str, query: dict[str, list[str]], body: bytes,
               headers: Mapping[str, str]) -> tuple[int, str, bytes, dict[str, str]]:
        return 404, "text/plain; charset=utf-8", b"not found\n", {}  # each app answers its own routes

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        app = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet: the CLI prints what matters
                return

            def _serve(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY:
                    self._send(413, "application/json", b'{"error":"body too large"}', {})
                    return
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                try:
                    status, ctype, payload, extra = app.handle(method, parts.path, parse_qs(parts.query), body,
                                                               dict(self.headers.items()))
                except Exception as exc:  # noqa: BLE001 - a bug must not kill the server thread: answer 500 with the reason
                    status, ctype, extra = 500, "application/json", {}
                    payload = orjson.dumps({"error": f"{type(exc).__name__}: {exc}"})
                self._send(status, ctype, payload, extra)

            def _send(self, status: int, ctype: str, payload: bytes, extra: Mapping[str, str]) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(payload)))
                for k, v in extra.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

        return Handler

    def start(self) -> str:
        self._httpd = _Server((self._host, self._port), self._handler())
        self._thread = threading.Thread(target=self._httpd.serve_forever, name=type(self).__name__, daemon=True)
        self._thread.start()
        return self.url

    @property
    def url(self) -> str:
        assert self._httpd is not None, "start() first"
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def serve_forever(self) -> None:
        self._httpd = _Server((self._host, self._port), self._handler())
        self._httpd.serve_forever()

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()


def _json(status: int, obj: Any) -> tuple[int, str, bytes, dict[str, str]]:
    return status, "application/json", orjson.dumps(obj, default=str), {}


# -- the review page ----------------------------------------------------------------------------------

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>review {label}</title>
<style>
body {{ font: 15px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; color: #222; }}
.item {{ background: #f5f5f0; border-left: 4px solid #4c78a8; padding: .8rem 1rem; white-space: pre-wrap;
        font: 14px/1.4 ui-monospace, monospace; overflow-wrap: anywhere; }}
.why {{ color: #555; font-size: 13px; }} .why td {{ padding: 0 .8rem 0 0; }}
.choices button {{ margin: .2rem; padding: .35rem .7rem; font-size: 15px; border: 1px solid #888; border-radius: 4px;
                   background: #fff; cursor: pointer; }}
.choices button.current {{ border-color: #f58518; background: #fff3e6; }}
kbd {{ font: 12px ui-monospace, monospace; background: #eee; border: 1px solid #bbb; border-radius: 3px; padding: 0 .3rem; }}
.msg {{ padding: .5rem 1rem; }} .ok {{ background: #e6f4e6; }} .bad {{ background: #fde8e8; }}
</style></head><body>
<h1>Review: {label}</h1>
<p class="why">{progress}</p>
{message}
{body}
<script>
document.addEventListener("keydown", function (e) {{
  var box = document.getElementById("new-value");
  if (document.activeElement === box) {{ if (e.key === "Escape") box.blur(); return; }}
  if (e.key >= "1" && e.key <= "9") {{
    var b = document.querySelector('button[data-key="' + e.key + '"]'); if (b) {{ e.preventDefault(); b.click(); }}
  }} else if (e.key === "s") {{ var s = document.getElementById("skip"); if (s) {{ e.preventDefault(); s.click(); }}
  }} else if (e.key === "n" && box) {{ e.preventDefault(); box.focus(); }}
}});
</script>
</body></html>
"""


class ReviewPage(_BaseApp):
    """The built-in review page over a store: the next item by ``strategy``, answered in place."""

    def __init__(self, store: DecisionStore, label: str, *, strategy: str = "uncertainty",
                 text_field: str | None = None, who: str | None = None, dedup: Callable[[StoredDecision], str] | None = None,
                 host: str = "127.0.0.1", port: int = 0, seed: int = 0,
                 ranking: Callable[[list[StoredDecision]], dict[str, Any]] | None = None) -> None:
        super().__init__(host, port)
        self.store, self.label, self.strategy = store, label, strategy
        # What the strategy reads beyond the store (the model's distributions, novelty), per page view.
        self.ranking = ranking
        self.text_field, self.who, self.dedup, self.seed = text_field, who, dedup, seed
        self.skipped: set[str] = set()
        self.answered = 0
        self._lock = threading.Lock()

    def _values(self) -> tuple[list[str], bool]:
        from activelabel.quality.review import label_choices

        return label_choices(self.store, self.label)

    def next_item(self) -> Any:
        exclude = {g.record_id for g in self.store.ground_truth(self.label)} | self.store.holdout_ids(self.label) | self.skipped
        registry = self.store.registry()
        decisions = list(self.store.decisions())
        extra = self.ranking(decisions) if self.ranking is not None and self.strategy != "random" else {}
        items = select_for_review(decisions, label=self.label, budget=1, strategy=self.strategy,
                                  exclude=exclude, dedup=self.dedup, seed=self.seed,
                                  rule_values=registry.rule_values if registry else {}, **extra)
        return items[0] if items else None

    def _render(self, message: str = "", ok: bool = True) -> bytes:
        item = self.next_item()
        reviewed = len(self.store.ground_truth(self.label))
        progress = (f"{reviewed} reviewed so far ({self.answered} on this page, {len(self.skipped)} skipped); "
                    f"strategy {html.escape(self.strategy)}. Keys: <kbd>1</kbd>–<kbd>9</kbd> pick, "
                    "<kbd>n</kbd> new value, <kbd>s</kbd> skip.")
        msg = f'<p class="msg {"ok" if ok else "bad"}" id="message">{html.escape(message)}</p>' if message else ""
        if item is None:
            body = '<p id="done">Nothing left to review for this label.</p>'
        else:
            body = self._item_html(item)
        return _PAGE.format(label=html.escape(self.label), progress=progress, message=msg, body=body).encode()

    def _item_html(self, item: Any) -> str:
        from activelabel.quality.report import field_value

        d = item.decision
        text = field_value(d.event, self.text_field) if self.text_field else None
        if not isinstance(text, str):
            text = orjson.dumps(d.event, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2, default=str).decode()
        exp = (d.explain.get("labels") or {}).get(self.label) or {}
        # The store keeps `matched` as source strings ("rule:tlb"); older explanations held mappings.
        matched = ", ".join(str(m.get("rule") or m.get("source") or m) if isinstance(m, Mapping) else str(m)
                            for m in exp.get("matched", []) or []) or "none"
        conf = "-" if item.confidence is None else f"{float(item.confidence):.3f}"
        current = "unset" if item.predicted is None else str(item.predicted)
        source = "no rule or model decided" if item.source is None else str(item.source)
        values, open_set = self._values()
        rid = html.escape(d.record_id, quote=True)
        buttons = []
        for n, v in enumerate(values, 1):
            key = f' data-key="{n}"' if n <= 9 else ""
            hint = f"<kbd>{n}</kbd> " if n <= 9 else ""
            cur = ' class="current"' if item.predicted is not None and str(item.predicted) == v else ""
            buttons.append(f'<button type="submit" name="value" value="{html.escape(v, quote=True)}"{key}{cur}>'
                           f"{hint}{html.escape(v)}</button>")
        new_box = ('<p><label for="new-value"><kbd>n</kbd> or type a new value: </label>'
                   '<input id="new-value" name="new_value" autocomplete="off"> '
                   '<button type="submit" id="submit-new">save new value</button></p>') if open_set else ""
        return (
            f'<div class="item" id="item" data-id="{rid}">{html.escape(text)}</div>\n'
            '<table class="why"><tr><td>record</td><td id="record-id">' + html.escape(d.record_id) + "</td></tr>"
            f"<tr><td>current value</td><td id=\"current\">{html.escape(current)}</td></tr>"
            f"<tr><td>confidence</td><td>{conf}</td></tr>"
            f"<tr><td>source</td><td>{html.escape(source)}</td></tr>"
            f"<tr><td>rules matched</td><td>{html.escape(matched)}</td></tr>"
            f"<tr><td>why here</td><td>{html.escape(self.strategy)} score {item.score:.3f}</td></tr></table>\n"
            f'<form method="post" action="/answer" class="choices"><input type="hidden" name="id" value="{rid}">'
            + "".join(buttons) + new_box + "</form>\n"
            f'<form method="post" action="/skip"><input type="hidden" name="id" value="{rid}">'
            '<button type="submit" id="skip"><kbd>s</kbd> skip</button></form>'
        )

    def handle(self, method: str, path: str, query: dict[str, list[str]], body: bytes,
               headers: Mapping[str, str]) -> tuple[int, str, bytes, dict[str, str]]:
        if method == "GET" and path == "/health":
            return _json(200, {"status": "UP"})
        if method == "GET" and path == "/":
            msg = (query.get("msg") or [""])[0]
            ok = (query.get("ok") or ["1"])[0] == "1"
            return 200, "text/html; charset=utf-8", self._render(msg, ok), {}
        if method == "POST" and path in ("/answer", "/skip"):
            form = {k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
            rid = form.get("id", "")
            if path == "/skip":
                with self._lock:
                    self.skipped.add(rid)
                return self._redirect(f"skipped {rid}")
            value = (form.get("new_value") or "").strip() or form.get("value")
            if not value:
                return self._redirect("pick a value or type one", ok=False)
            try:
                truth = self.store.add_ground_truth(rid, self.label, value, who=self.who, how="review-page")
            except FeedbackError as exc:
                return self._redirect(f"refused: {exc}", ok=False)
            with self._lock:
                self.answered += 1
            return self._redirect(f"saved {rid}: {self.label} = {truth.value}")
        return 404, "text/plain; charset=utf-8", b"not found\n", {}

    @staticmethod
    def _redirect(message: str, ok: bool = True) -> tuple[int, str, bytes, dict[str, str]]:
        from urllib.parse import urlencode

        return HTTPStatus.SEE_OTHER, "text/plain", b"", {"Location": "/?" + urlencode({"msg": message, "ok": int(ok)})}


# -- Label Studio ML backend --------------------------------------------------------------------------

TRAIN_EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED")


def config_names(label_config: str | None, label: str) -> tuple[str, str]:
    """(from_name, to_name) of the config's ``<Choices>`` for ``label`` (or its first one), else our defaults."""
    if label_config:
        try:
            root = ET.fromstring(label_config)
        except ET.ParseError:
            return label, TEXT_KEY
        choices = [el for el in root.iter("Choices")]
        pick = next((c for c in choices if c.get("name") == label), choices[0] if choices else None)
        if pick is not None and pick.get("name") and pick.get("toName"):
            return str(pick.get("name")), str(pick.get("toName"))
    return label, TEXT_KEY


class LabelStudioBackend(_BaseApp):
    """Label Studio's ML backend protocol over a policy and a store (see the module docstring)."""

    def __init__(self, policy: Path, store: DecisionStore, label: str, *, host: str = "127.0.0.1", port: int = 0,
                 learn: bool = True) -> None:
        super().__init__(host, port)
        from activelabel.engine import Labeler

        self.policy_path = Path(policy).resolve()
        self.labeler = Labeler.from_file(self.policy_path)
        self.store, self.label, self.learn = store, label, learn
        store.register_policy(self.labeler.policy)
        self.received: list[dict[str, Any]] = []

    @property
    def model_version(self) -> str:
        return f"activelabel:{self.labeler.version}"

    def predict(self, tasks: list[Any], label_config: str | None) -> list[dict[str, Any]]:
        from_name, to_name = config_names(label_config, self.label)
        events = []
        for task in tasks:
            data = task.get("data") if isinstance(task, dict) else None
            data = dict(data) if isinstance(data, dict) else {}
            for k in (ID_KEY, LABEL_KEY):
                data.pop(k, None)
            events.append(data)
        decisions = self.labeler.label_batch(events)
        results = []
        for d in decisions:
            if self.label not in d.labels:
                results.append({"result": [], "score": 0.0, "model_version": self.model_version})
                continue
            results.append({
                "result": [{"from_name": from_name, "to_name": to_name, "type": "choices",
                            "value": {"choices": [str(d.labels[self.label])]}}],
                "score": float(d.confidences.get(self.label, 0.0)),
                "model_version": d.sources.get(self.label) or self.model_version,
            })
        return results

    def webhook(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        from activelabel.quality.feedback import annotation_items, apply_feedback

        task, ann = payload.get("task"), payload.get("annotation")
        if not isinstance(task, dict) or not isinstance(ann, dict):
            raise FeedbackError("a Label Studio webhook carries 'task' and 'annotation' objects")
        if ann.get("was_cancelled"):
            return {"accepted": 0, "rejected": [], "cancelled": 1}
        # A task made in Label Studio itself carries no record id: refused with the reason, counted.
        items = annotation_items(task, ann, source=f"webhook {payload.get('action')}")
        result = apply_feedback(self.store, items)
        learned = self._learn(result.accepted_items) if self.learn and result.accepted_items else 0
        return {"accepted": result.accepted, "rejected": [r for _, r in result.rejected], "learned_online": learned}

    def _learn(self, items: list[Any]) -> int:
        from activelabel.models import build_model_labelers
        from activelabel.quality.features import bindings_for
        from activelabel.quality.training import learn_online

        learned = 0
        for lab in build_model_labelers(self.labeler.policy):
            if lab.predictor.kind != "river":
                continue
            pairs = [(lab.compute_features(bindings_for(d, hide_label=lab.label)), it.value) for it in items
                     if it.label == lab.label and (d := self.store.decision(it.record_id)) is not None]
            learned += learn_online(lab, pairs)
        return learned

    def handle(self, method: str, path: str, query: dict[str, list[str]], body: bytes,
               headers: Mapping[str, str]) -> tuple[int, str, bytes, dict[str, str]]:
        if method == "GET" and path in ("/", "/health"):
            return _json(200, {"status": "UP", "model_class": "ActiveLabelBackend"})
        if method == "GET" and path == "/metrics":
            return _json(200, {})
        if method != "POST" or path not in ("/predict", "/setup", "/webhook"):
            return _json(404, {"error": f"no route {method} {path}"})
        try:
            data = orjson.loads(body or b"{}")
        except orjson.JSONDecodeError as exc:
            return _json(400, {"error": f"body is not JSON: {exc}"})
        if not isinstance(data, dict):
            return _json(400, {"error": "body must be a JSON object"})
        if path == "/setup":
            return _json(200, {"model_version": self.model_version})
        if path == "/predict":
            tasks = data.get("tasks")
            if not isinstance(tasks, list):
                return _json(400, {"error": "predict needs 'tasks': a list of Label Studio tasks"})
            return _json(200, {"results": self.predict(tasks, data.get("label_config"))})
        action = data.get("action")
        self.received.append(data)
        if action not in TRAIN_EVENTS:
            return _json(200, {"status": "Unknown event"})
        try:
            result = self.webhook(data)
        except FeedbackError as exc:
            return _json(400, {"status": "error", "error": str(exc)})
        return _json(201, {"status": "ok", "result": result})
