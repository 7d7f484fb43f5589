"""Render a quality report: rich tables for the terminal, one self-contained HTML page
(plots embedded as PNG data URIs, no network) for people, JSON for machines."""

from __future__ import annotations

import base64
import io
import math
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from activelabel._text import printable
from activelabel.quality.metrics import OTHER, TOP_VALUES


def _f(x: Any, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def _value_name(value: str, figures: dict[str, Any]) -> str:
    """A per-value row's name; the folded row says how many values it stands for."""
    return f"{OTHER}: {figures['values']} more values" if value == OTHER and "values" in figures else value


def _top_sources(sources: dict[str, Any], top: int = TOP_VALUES) -> tuple[dict[str, Any], int]:
    """The ``top`` sources that fired most, and how many more there are (all of them are in the JSON)."""
    ranked = sorted(sources, key=lambda s: (-sources[s]["coverage"], s))
    return {s: sources[s] for s in ranked[:top]}, max(len(ranked) - top, 0)


def _cell(value: str) -> str:
    """A label value as a table cell: markup escaped, control characters as escapes, on one line."""
    return escape(printable(value, one_line=True))


def print_report(report: dict[str, Any], console: Console) -> None:
    """Terminal tables: per label quality, per value F1, per source LF summary, drift."""
    console.print(f"[bold]Quality report[/] · {report['records']} records · {report['ground_truth']} ground-truth items"
                  f" · {escape(report['source'])}")
    overview = Table(title="Labels", show_lines=False)
    for col in ("label", "scored on", "coverage", "judged", "accuracy", "macro-F1", "conflict rate", "drift"):
        overview.add_column(col, justify="right" if col not in ("label", "scored on") else "left")
    for name, lab in report["labels"].items():
        q, d = lab["quality"], report["drift"]["labels"][name]
        overview.add_row(escape(name), {"none": "–"}.get(lab["scored_on"], lab["scored_on"]), _f(lab["coverage"]), str(lab["judged"]),
                         _f(q["accuracy"]), _f(q["macro_f1"]), _f(lab["conflict_rate"], 4),
                         "[red]drift[/]" if d["drifted"] else "ok")
    console.print(overview)
    rows = score_rows(report)
    if rows:
        t = Table(title="What each score is measured on")
        for col in ("label", "scored on", "n", "accuracy", "macro-F1", "macro-F1 over", "read it as"):
            t.add_column(col, justify="right" if col in ("n", "accuracy", "macro-F1") else "left")
        for r in rows:
            t.add_row(escape(r["label"]), r["split"], str(r["n"]), _f(r["accuracy"]), _f(r["macro_f1"]),
                      escape(r["over"]), escape(r["note"]))
        console.print(t)
    for name, lab in report["labels"].items():
        q = lab["quality"]
        if q["per_value"]:
            on = f" on the {'holdout' if lab.get('scored_on') == 'holdout' else 'reviewed items'}"
            t = Table(title=escape(f"{name}: per value{on}" + (f" (top {TOP_VALUES} of {q['values_total']})"
                                                               if OTHER in q["per_value"] else "")))
            for col in ("value", "precision", "recall", "F1", "support"):
                t.add_column(col, justify="right" if col != "value" else "left")
            for v, m in q["per_value"].items():
                t.add_row(_cell(_value_name(v, m)), _f(m["precision"]), _f(m["recall"]), _f(m["f1"]), str(m["support"]))
            console.print(t)
            cm = Table(title=escape(f"{name}: confusion{on} (rows true, columns predicted)"))
            cm.add_column("true \\ pred")
            for v in q["confusion"]["values"]:
                cm.add_column(_cell(v), justify="right")
            for v, row in zip(q["confusion"]["values"], q["confusion"]["matrix"], strict=True):
                cm.add_row(_cell(v), *[str(x) if x else "·" for x in row])
            console.print(cm)
        if lab["sources"]:
            shown, more = _top_sources(lab["sources"])
            on_holdout = ", correct/incorrect on the holdout" if lab["scored_on"] == "holdout" else ""
            s = Table(title=escape(f"{name}: sources (LF summary{on_holdout})"),
                      caption=f"… and {more} more sources (all in --json)" if more else None)
            for col in ("source", "polarity", "coverage", "overlaps", "conflicts", "correct", "incorrect", "emp. acc."):
                s.add_column(col, justify="left" if col in ("source", "polarity") else "right")
            for src, m in shown.items():
                s.add_row(escape(src), escape(", ".join(m["polarity"])), _f(m["coverage"]), _f(m["overlaps"]),
                          _f(m["conflicts"]), str(m["correct"]), str(m["incorrect"]), _f(m["empirical_accuracy"]))
            console.print(s)
    privacy = report.get("privacy")
    if privacy:
        console.print(privacy_line(privacy), highlight=False, markup=False)
    checks = [*report["drift"]["labels"].values(), *report["drift"]["features"].values()]
    if checks:
        t = Table(title=f"Drift: reference ({report['windows']['reference']}) vs current ({report['windows']['current']})")
        for col in ("column", "PSI", "JS distance", "flag"):
            t.add_column(col, justify="left" if col == "column" else "right")
        for c in checks:
            t.add_row(escape(c["name"]), _f(c["psi"]), _f(c["js_distance"]), "[red]drift[/]" if c["drifted"] else "ok")
        console.print(t)
    decisions = report["drift"].get("decisions") or {}
    if decisions:
        t = Table(title="Decision drift: reference → current")
        for col in ("label", "unset share", "mean confidence", "novel share", "flag"):
            t.add_column(col, justify="left" if col == "label" else "right")
        for name, dd in decisions.items():
            (u0, u1), (n0, n1) = dd["shares"]["unset_share"], dd["shares"]["novel_share"]
            mc = dd["checks"]["mean_confidence"]
            fired = ", ".join(dd["fired"])
            t.add_row(escape(name), f"{_f(u0)} → {_f(u1)}", f"{_f(mc['reference'])} → {_f(mc['current'])}",
                      f"{_f(n0)} → {_f(n1)}", f"[red]drift: {escape(fired)}[/]" if dd["drifted"] else "ok")
        console.print(t)


SPLIT_NAMES = {"holdout": "holdout", "holdout_pool": "holdout, pool classes", "holdout_reviewed": "holdout, reviewed classes", "trained_on": "trained on",
               "after_build": "after the build", "reviewed": "reviewed items"}


def score_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Per label, one row per set of ground truth a score was measured on: the holdout first
    (the honest score, and the headline when there is one), then the loop's own figure over
    the classes the reviewed pool has, then feedback the model was trained on (flagged
    optimistic) and feedback that came after the build. The terminal and HTML reports both
    show these rows, so neither can lead with the model's training data unflagged."""
    evaluation = report.get("evaluation") or {}
    rows: list[dict[str, Any]] = []
    for name, lab in report["labels"].items():
        q = lab["quality"]
        splits = (evaluation.get(name) or {}).get("splits") or {}

        def row(split: str, n: int, acc: Any, f1: Any, over: str, note: str, name: str = name) -> None:
            rows.append({"label": name, "split": SPLIT_NAMES[split], "key": split, "n": n, "accuracy": acc,
                         "macro_f1": f1, "over": over, "note": note})

        if lab.get("scored_on") == "holdout":
            row("holdout", lab["judged"], q["accuracy"], q["macro_f1"],
                f"{q['values_total']} values true or predicted", "the honest score: never reviewed or trained on")
            pool = lab.get("holdout_pool_classes")
            if pool:
                row("holdout_pool" if pool["over"] == "the review pool" else "holdout_reviewed", pool["n"], pool["accuracy"], pool["macro_f1"],
                    f"{pool['classes']} classes of {pool['over']}",
                    "the figure `loop` prints: classes review could teach" if pool["over"] == "the review pool"
                    else "classes reviewed so far (the loop recorded no pool classes)")
        elif lab["judged"]:
            trained = "trained_on" in splits
            row("reviewed", lab["judged"], q["accuracy"], q["macro_f1"], f"{q['values_total']} values true or predicted",
                "no holdout in this store" + ("; includes the model's training data: optimistic" if trained else
                                              ": optimistic if a model was trained on these items"))
        for key in ("trained_on", "after_build"):
            s = splits.get(key)
            if s:
                row(key, s["n"], s["accuracy"], s["macro_f1"], f"{s['values_total']} values true or predicted",
                    "optimistic: the model's own training data" if key == "trained_on" else
                    "feedback after the model was built, not trained on yet")
    return rows


def privacy_line(privacy: dict[str, Any]) -> str:
    """One line on what the reader could not see and M9's counts (names and numbers, never values)."""
    shown = ", ".join(privacy["protected_labels"]) or "none"
    return (f"privacy: clearance {privacy['clearance']} · labels shown protected (pseudonym, mask) or left out: {shown} · "
            f"M9: {privacy['declared_leaks']} declared leaks, {privacy['undeclared_pii']} undeclared PII findings (sampled)")


def _short(value: str, width: int = 40) -> str:
    """A plot's tick label: free-form values can be any length, the axes must not grow with them."""
    return value if len(value) <= width else value[:width - 1] + "…"


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _confusion_plot(name: str, confusion: dict[str, Any]) -> str | None:
    import matplotlib.pyplot as plt

    values, matrix = confusion["values"], confusion["matrix"]
    if not values:
        return None
    size = max(3.5, 0.55 * len(values) + 1.5)
    from matplotlib.colors import LogNorm

    fig, ax = plt.subplots(figsize=(size + 1, size))
    # Log colour scale: one majority value would otherwise wash out every mistake.
    masked = [[v if v else float("nan") for v in row] for row in matrix]
    top = max((max(r) for r in matrix), default=0)
    im = ax.imshow(masked, cmap="Blues", norm=LogNorm(vmin=1, vmax=max(top, 2)))
    ax.set_xticks(range(len(values)), [_short(v) for v in values], rotation=45, ha="right")
    ax.set_yticks(range(len(values)), [_short(v) for v in values])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{name}: confusion matrix")
    for i, row in enumerate(matrix):
        for j, v in enumerate(row):
            if v:
                dark = math.log(v + 1) > math.log(top + 1) * 0.6
                ax.text(j, i, str(v), ha="center", va="center", color="white" if dark else "black", fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.046)
    return _png(fig)


def _sources_plot(name: str, sources: dict[str, Any]) -> str | None:
    import matplotlib.pyplot as plt

    if not sources:
        return None
    sources, _ = _top_sources(sources)
    names = list(sources)
    cov = [sources[s]["coverage"] for s in names]
    raw_acc = [sources[s]["empirical_accuracy"] for s in names]
    acc = [a or 0.0 for a in raw_acc]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(names) + 1.5))
    y = range(len(names))
    ax.barh([i + 0.2 for i in y], cov, height=0.4, label="coverage", color="#4c78a8")
    ax.barh([i - 0.2 for i in y], acc, height=0.4, label="empirical accuracy", color="#f58518")
    for i, (c, a, known) in enumerate(zip(cov, acc, raw_acc, strict=True)):
        ax.text(c + 0.01, i + 0.2, f"{c:.1%}", va="center", fontsize=7)
        if known is None:
            ax.text(0.01, i - 0.2, "no ground truth", va="center", fontsize=7, color="#777")
            continue
        ax.text(a + 0.01 if a < 0.9 else a - 0.01, i - 0.2, f"{a:.0%}", va="center", fontsize=7,
                ha="left" if a < 0.9 else "right")
    ax.set_yticks(list(y), [_short(n) for n in names])
    ax.set_xlim(0, 1)
    ax.invert_yaxis()
    ax.legend(loc="lower right")
    ax.set_title(f"{name}: per-source coverage and accuracy")
    return _png(fig)


def _timeline_plot(name: str, timeline: dict[str, Any], drift: dict[str, Any]) -> str | None:
    import matplotlib.pyplot as plt

    if not timeline["buckets"] or not timeline["values"]:
        return None
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 3.8), gridspec_kw={"width_ratios": [2, 1]})
    xs = list(range(len(timeline["buckets"])))
    cols = list(zip(*timeline["shares"], strict=True))
    ax.stackplot(xs, *cols, labels=[_short(v) for v in timeline["values"]])
    ax.set_xticks(xs, timeline["buckets"], rotation=30, ha="right", fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("share")
    ax.set_title(f"{name}: label distribution over time")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    if drift.get("bins"):
        idx = range(len(drift["bins"]))
        ax2.bar([i - 0.2 for i in idx], drift["reference_shares"], width=0.4, label="reference")
        ax2.bar([i + 0.2 for i in idx], drift["current_shares"], width=0.4, label="current")
        ax2.set_xticks(list(idx), [_short(b) for b in drift["bins"]], rotation=45, ha="right", fontsize=7)
        ax2.set_yscale("log")
        ax2.legend(fontsize=7)
        ax2.set_title(f"PSI {drift['psi']:.3f} · JS {drift['js_distance']:.3f}" + (" · DRIFT" if drift["drifted"] else ""))
    fig.tight_layout()
    return _png(fig)


def _drift_plot(report: dict[str, Any]) -> str | None:
    import matplotlib.pyplot as plt

    checks = [c for c in [*report["drift"]["labels"].values(), *report["drift"]["features"].values()]
              if c["psi"] is not None]
    if not checks:
        return None
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(checks) + 1.5))
    y = range(len(checks))
    ax.barh([i + 0.2 for i in y], [c["psi"] for c in checks], height=0.4, label="PSI", color="#54a24b")
    ax.barh([i - 0.2 for i in y], [c["js_distance"] for c in checks], height=0.4, label="JS distance", color="#e45756")
    ax.axvline(checks[0]["psi_threshold"], color="black", linestyle="--", linewidth=1, label="threshold 0.1")
    ax.set_yticks(list(y), [c["name"] for c in checks])
    ax.invert_yaxis()
    ax.legend(loc="lower right")
    ax.set_title("Drift: reference vs current window")
    return _png(fig)


_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>activelabel quality report</title>
<style>
body{font-family:system-ui,sans-serif;margin:2rem;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:.6rem 0 1.4rem}
th,td{border:1px solid #ccc;padding:.25rem .6rem;text-align:right;font-size:.9rem}
th:first-child,td:first-child{text-align:left}
th{background:#f3f3f3}.bad{color:#b00;font-weight:bold}.ok{color:#080}
img{max-width:100%;display:block;margin:.5rem 0 1rem}
h2{border-bottom:2px solid #4c78a8;padding-bottom:.2rem;margin-top:2.2rem}
</style></head><body>
<h1>activelabel quality report</h1>
<p>{{ r.records }} records · {{ r.ground_truth }} ground-truth items · source {{ r.source }} · generated {{ r.generated }}</p>
{% if r.get('privacy') %}<p>{{ privacy_line(r.privacy) }}</p>{% endif %}
<table><tr><th>label</th><th>scored on</th><th>coverage</th><th>judged</th><th>accuracy</th><th>macro-F1</th><th>conflict rate</th><th>drift</th></tr>
{% for name, lab in r.labels.items() %}{% set d = r.drift.labels[name] %}
<tr><td>{{ name }}</td><td>{{ '–' if lab.scored_on == 'none' else lab.scored_on }}</td><td>{{ f(lab.coverage) }}</td><td>{{ lab.judged }}</td><td>{{ f(lab.quality.accuracy) }}</td>
<td>{{ f(lab.quality.macro_f1) }}</td><td>{{ f(lab.conflict_rate, 4) }}</td>
<td class="{{ 'bad' if d.drifted else 'ok' }}">{{ 'drift' if d.drifted else 'ok' }}</td></tr>{% endfor %}
</table>
{% if scores %}<h2>What each score is measured on</h2>
<table><tr><th>label</th><th>scored on</th><th>n</th><th>accuracy</th><th>macro-F1</th><th>macro-F1 over</th><th>read it as</th></tr>
{% for s in scores %}<tr class="{{ 'bad' if s.key == 'trained_on' else '' }}"><td>{{ s.label }}</td><td>{{ s.split }}</td><td>{{ s.n }}</td>
<td>{{ f(s.accuracy) }}</td><td>{{ f(s.macro_f1) }}</td><td>{{ s.over }}</td><td>{{ s.note }}</td></tr>{% endfor %}</table>{% endif %}
{% if plots.drift %}<img alt="drift" src="{{ plots.drift }}">{% endif %}
{% for name, lab in r.labels.items() %}
<h2>{{ name }}</h2>
{% if lab.quality.per_value %}
<table><tr><th>value</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>
{% for v, m in lab.quality.per_value.items() %}<tr><td>{{ value_name(v, m) }}</td><td>{{ f(m.precision) }}</td><td>{{ f(m.recall) }}</td>
<td>{{ f(m.f1) }}</td><td>{{ m.support }}</td></tr>{% endfor %}</table>{% endif %}
{% if plots.confusion[name] %}<img alt="{{ name }} confusion matrix" src="{{ plots.confusion[name] }}">{% endif %}
{% if lab.sources %}
<table><tr><th>source</th><th>polarity</th><th>coverage</th><th>overlaps</th><th>conflicts</th><th>correct</th><th>incorrect</th><th>emp. accuracy</th></tr>
{% for s, m in top_sources(lab.sources)[0].items() %}<tr><td>{{ s }}</td><td>{{ m.polarity|join(', ') }}</td><td>{{ f(m.coverage) }}</td>
<td>{{ f(m.overlaps) }}</td><td>{{ f(m.conflicts) }}</td><td>{{ m.correct }}</td><td>{{ m.incorrect }}</td>
<td>{{ f(m.empirical_accuracy) }}</td></tr>{% endfor %}</table>{% endif %}
{% if plots.sources[name] %}<img alt="{{ name }} sources" src="{{ plots.sources[name] }}">{% endif %}
{% if plots.timeline[name] %}<img alt="{{ name }} over time" src="{{ plots.timeline[name] }}">{% endif %}
{% endfor %}
{% if r.drift.features %}<h2>Feature drift</h2>
<table><tr><th>column</th><th>PSI</th><th>JS distance</th><th>flag</th></tr>
{% for name, d in r.drift.features.items() %}<tr><td>{{ name }}</td><td>{{ f(d.psi) }}</td><td>{{ f(d.js_distance) }}</td>
<td class="{{ 'bad' if d.drifted else 'ok' }}">{{ 'drift' if d.drifted else 'ok' }}</td></tr>{% endfor %}</table>{% endif %}
{% if r.drift.get('decisions') %}<h2>Decision drift: reference → current</h2>
<table><tr><th>label</th><th>unset share</th><th>mean confidence</th><th>novel share</th><th>flag</th></tr>
{% for name, dd in r.drift.decisions.items() %}{% set mc = dd.checks.mean_confidence %}
<tr><td>{{ name }}</td><td>{{ f(dd.shares.unset_share[0]) }} → {{ f(dd.shares.unset_share[1]) }}</td>
<td>{{ f(mc.reference) }} → {{ f(mc.current) }}</td>
<td>{{ f(dd.shares.novel_share[0]) }} → {{ f(dd.shares.novel_share[1]) }}</td>
<td class="{{ 'bad' if dd.drifted else 'ok' }}">{{ ('drift: ' ~ dd.fired|join(', ')) if dd.drifted else 'ok' }}</td></tr>{% endfor %}</table>{% endif %}
</body></html>
"""


def render_html(report: dict[str, Any]) -> str:
    """One HTML page with every plot embedded; opens offline."""
    import matplotlib

    matplotlib.use("Agg")
    import jinja2

    plots = {
        "drift": _drift_plot(report),
        "confusion": {n: _confusion_plot(n, lab["quality"]["confusion"]) for n, lab in report["labels"].items()},
        "sources": {n: _sources_plot(n, lab["sources"]) for n, lab in report["labels"].items()},
        "timeline": {n: _timeline_plot(n, lab["timeline"], report["drift"]["labels"][n])
                     for n, lab in report["labels"].items()},
    }
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return env.from_string(_TEMPLATE).render(r=report, plots=plots, f=_f, value_name=_value_name,
                                             top_sources=_top_sources, privacy_line=privacy_line,
                                             scores=score_rows(report))
