"""The status page (``GET /ui``): one server-rendered HTML page, no script, no external asset.

In the manner of OpenTelemetry's zpages: what an on-call engineer wants to see
of one process without a dashboard. Policy and version, rollout state, the
doors' traffic and dead letters by reason, per-label coverage and top values,
rule hits and errors, and the latest decisions with their decision path.

Values are shown as a default reader may see them: labels declared pii or
secret show counts only (coverage), never a value; recent decisions go
through the same protection as ``tap`` (``render_entry``).
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from activelabel.governance.sensitivity import DEFAULT_CLEARANCE
from activelabel.observability.labeler_stats import totals_from_stats
from activelabel.observability.tap import DecisionTap, render_entry

TOP_VALUES = 5


@dataclass
class StatusView:
    """Everything the page shows, gathered once per request (``gather``)."""

    process: str
    policy_name: str = ""
    policy_version: str = ""
    ready: bool = False
    rollout: dict[str, Any] | None = None
    doors: list[tuple[str, float, float]] = field(default_factory=list)  # door, events labeled, dead-lettered
    dead_letters: list[tuple[str, str, float]] = field(default_factory=list)  # door, reason, count
    labels: list[dict[str, Any]] = field(default_factory=list)
    rules: list[tuple[str, int, int]] = field(default_factory=list)  # rule, matches, errors
    recent: list[dict[str, Any]] = field(default_factory=list)
    extra: list[tuple[str, str]] = field(default_factory=list)  # (heading, HTML built from escaped parts) a door adds
    uptime_s: float = 0.0
    not_ready_reason: str = ""


def _samples(metric: Any) -> Iterable[Any]:
    for family in metric.collect():
        yield from family.samples


def gather(process: str, runtime: Any, metrics: Any, tap: DecisionTap | None, *, rollout: Any = None,
           started_at: float | None = None, extra: Iterable[tuple[str, str]] = ()) -> StatusView:
    """Read the page's numbers from the runtime (engine counters), the metrics and the tap."""
    view = StatusView(process=process, extra=list(extra))
    if started_at is not None:
        view.uptime_s = time.time() - started_at
    # A rollout manager (``status()`` is None without a rollout), a Rollout, or its status dict.
    status = rollout.status() if hasattr(rollout, "status") else rollout
    if isinstance(status, Mapping):
        view.rollout = dict(status)
    labeled: dict[str, float] = {}
    for s in _samples(metrics.events_labeled):
        if s.name.endswith("_total"):
            labeled[s.labels["door"]] = s.value
    dead: dict[str, float] = {}
    for s in _samples(metrics.events_dead_lettered):
        if s.name.endswith("_total") and s.value:
            view.dead_letters.append((s.labels["door"], s.labels["reason"], s.value))
            dead[s.labels["door"]] = dead.get(s.labels["door"], 0.0) + s.value
    view.doors = [(d, labeled.get(d, 0.0), dead.get(d, 0.0)) for d in sorted(set(labeled) | set(dead))
                  if labeled.get(d) or dead.get(d)]
    view.dead_letters.sort()
    if runtime is None or not runtime.ready:
        return view
    snapshot = runtime.current
    view.ready = True
    view.policy_name, view.policy_version = snapshot.name, snapshot.version
    serving = totals_from_stats(snapshot.labeler.stats())
    values: dict[str, list[tuple[str, int]]] = {}
    for (label, value), n in metrics.drift.value_counts().items():
        values.setdefault(label, []).append((value, n))
    for name in snapshot.label_names:
        sensitivity = snapshot.sensitivity.get(name, "internal")
        n_set = serving.label_set.get(name, 0)
        entry: dict[str, Any] = {
            "name": name, "sensitivity": sensitivity, "set": n_set,
            "coverage": n_set / serving.events if serving.events else None,
            "distinct": serving.distinct.get(name),
            "top": None,
        }
        if name not in snapshot.protected_labels:
            top = sorted(values.get(name, ()), key=lambda kv: (-kv[1], kv[0]))[:TOP_VALUES]
            entry["top"] = top
        view.labels.append(entry)
    totals = runtime.totals()
    # The serving policy's rules in policy order (a rule that never matched shows its 0), then retired ones.
    ordered = [str(r.id) for r in getattr(snapshot.labeler.policy, "rules", ()) or () if getattr(r, "id", None)]
    known = set(ordered)
    ordered += sorted((set(totals.rule_matches) | set(totals.rule_errors)) - known)
    view.rules = [(r, totals.rule_matches.get(r, 0), totals.rule_errors.get(r, 0)) for r in ordered]
    if tap is not None:
        for item in reversed(tap.recent()):
            rendered = render_entry(item, DEFAULT_CLEARANCE)
            if rendered is not None:
                view.recent.append(rendered)
    return view


_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#1d2430;background:#fbfbfd}
h1{font-size:1.4em;margin:0 0 .2em}h2{font-size:1.1em;margin:1.4em 0 .4em;border-bottom:1px solid #d5d9e0}
table{border-collapse:collapse;margin:.2em 0}td,th{padding:.25em .8em .25em 0;text-align:left;vertical-align:top}
th{font-weight:600;color:#4a5363;border-bottom:1px solid #d5d9e0}td.n{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#17663a;font-weight:600}.bad{color:#a4161a;font-weight:600}.muted{color:#6b7380}
code{font:12px ui-monospace,monospace;background:#eef0f4;padding:0 .25em;border-radius:3px}
.nw{white-space:nowrap}
.bar{display:inline-block;height:.7em;background:#4c78a8;vertical-align:middle;margin-right:.4em}
"""


def escape(value: Any) -> str:
    """``value`` as HTML text."""
    return html.escape(str(value), quote=True)


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: float) -> str:
    return f"{int(value):,}" if float(value).is_integer() else f"{value:,.3f}"


def html_table(headers: Iterable[str], rows: Iterable[Iterable[str]], numeric: Iterable[int] = ()) -> str:
    """A table of already escaped cells (``escape`` them); ``numeric`` columns align right."""
    nums = set(numeric)
    titles = list(headers)
    head = "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in titles) + "</tr>" if any(titles) else ""
    body = "".join(
        "<tr>" + "".join(f'<td class="n">{c}</td>' if i in nums else f"<td>{c}</td>" for i, c in enumerate(row)) + "</tr>"
        for row in rows
    )
    return f"<table>{head}{body}</table>"


def render(view: StatusView) -> str:
    """The page as HTML text (every value escaped)."""
    state = '<span class="ok">ready</span>' if view.ready else '<span class="bad">not ready</span>'
    if view.not_ready_reason:
        state += f" ({_e(view.not_ready_reason)})"
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>activelabel {_e(view.process)} status</title><style>{_STYLE}</style></head><body>",
        f"<h1>activelabel {_e(view.process)}</h1>",
        f"<div>{state} &middot; policy <b>{_e(view.policy_name or '-')}</b> version <code>{_e(view.policy_version or '-')}</code>"
        f" &middot; up {_e(_duration(view.uptime_s))}</div>",
    ]
    parts.append("<h2>Rollout</h2>")
    if view.rollout:
        r = view.rollout
        parts.append(html_table(("", ""), [(_e(k), _e(r[k])) for k in ("id", "state", "step", "serving_version", "candidate_version", "reason")
                                       if r.get(k) not in (None, "")]))
    else:
        parts.append('<div class="muted">none</div>')
    for heading, text in view.extra:
        parts.append(f"<h2>{_e(heading)}</h2><div>{text}</div>")  # built by the door from escaped parts
    parts.append("<h2>Traffic</h2>")
    if view.doors:
        parts.append(html_table(("door", "events labeled", "dead-lettered"),
                            ((_e(d), _num(n), _num(x)) for d, n, x in view.doors), (1, 2)))
    else:
        parts.append('<div class="muted">no events yet</div>')
    parts.append("<h2>Dead letters by reason</h2>")
    if view.dead_letters:
        parts.append(html_table(("door", "reason", "events"), ((_e(d), _e(r), _num(n)) for d, r, n in view.dead_letters), (2,)))
    else:
        parts.append('<div class="muted">none</div>')
    parts.append("<h2>Labels (serving policy)</h2>")
    rows: list[tuple[str, ...]] = []
    for lab in view.labels:
        cov = lab["coverage"]
        bar = f'<span class="bar" style="width:{round((cov or 0) * 80)}px"></span>' if cov is not None else ""
        cov_text = f"{bar}{cov:.1%}" if cov is not None else '<span class="muted">-</span>'
        if lab["top"] is None:
            top = '<span class="muted">counts only (sensitive)</span>'
        elif lab["top"]:
            top = ", ".join(f"<code>{_e(v)}</code> {_num(n)}" for v, n in lab["top"])
        else:
            top = '<span class="muted">-</span>'
        distinct = _num(lab["distinct"]) if lab["distinct"] is not None else ""
        rows.append((_e(lab["name"]), _e(lab["sensitivity"]), _num(lab["set"]), cov_text, distinct, top))
    parts.append(html_table(("label", "sensitivity", "set", "coverage", "distinct", "top values"), rows, (2, 4)))
    parts.append("<h2>Rules</h2>")
    if view.rules:
        parts.append(html_table(("rule", "decided its label", "errors"),
                            ((f"<code>{_e(r)}</code>", _num(m), f'<span class="bad">{_num(x)}</span>' if x else "0")
                             for r, m, x in view.rules), (1, 2)))
    else:
        parts.append('<div class="muted">no rule has matched or errored yet</div>')
    parts.append("<h2>Recent decisions</h2>")
    if view.recent:
        rows = []
        for d in view.recent:
            labels = ", ".join(f'<span class="nw">{_e(k)}=<code>{_e(v)}</code></span>' for k, v in d["labels"].items()) or '<span class="muted">none</span>'
            steps = "; ".join(
                f'<span class="nw">{_e(k)} &larr; {_e(s.get("source") or "none")}</span>'
                + (f' <span class="muted">(lost: {_e(", ".join(s["lost"]))})</span>' if s.get("lost") else "")
                for k, s in d["path"].items())
            rows.append((f'<span class="nw">{_e(d["time"])}</span>', _e(d["door"]), labels, steps))
        parts.append(html_table(("time (UTC)", "door", "labels", "decision path"), rows))
    else:
        parts.append('<div class="muted">no decision yet</div>')
    parts.append("</body></html>")
    return "\n".join(parts)


def _duration(seconds: float) -> str:
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    return f"{s // 3600}h {s % 3600 // 60}m"
