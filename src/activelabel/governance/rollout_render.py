"""Render a rollout report: plain text for terminals and pipes, one self-contained HTML page.

The HTML page draws each label's old → new transition matrix as a heatmap (a table
whose cells are shaded by count: no script, no network), next to the checks with the
measured value beside its threshold (flagger#1304). Sensitive labels show counts only.
"""

from __future__ import annotations

import html
from typing import Any

from activelabel._text import printable, text_table


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def rollout_text(report: dict[str, Any]) -> str:
    """The report as plain, unwrapped lines (no colour codes), the same in a terminal and a file."""
    status = report.get("status") or {}
    lines = [
        f"rollout {status.get('id', '?')}: {status.get('state', '?')} at step {_fmt(status.get('step'))}% "
        f"of {status.get('steps')}",
        f"serving {status.get('serving_version', '?')}  candidate {status.get('candidate_version', '?')}",
    ]
    if status.get("reason"):
        lines.append(f"reason: {status['reason']}")
    lines.append(f"events compared: {report['events']}, changed: {report['events_changed']}")
    lines.append("")
    rows = [[name, str(lab["compared"]), str(lab["changed"]), f"{lab['change_rate']:.4f}",
             ", ".join(f"{src} ({n})" for src, n in list(lab["changed_because"].items())[:3]) or "-"]
            for name, lab in report["labels"].items()]
    lines += text_table(["label", "compared", "changed", "change rate", "changed because (top 3)"], rows)
    for name, lab in report["labels"].items():
        if not lab["transitions"]:
            continue
        lines.append("")
        title = f"{name}: transitions old -> new"
        lines.append(title + (" (sensitive: values hidden)" if lab["sensitive"] else ""))
        lines += text_table(["from", "to", "count", "examples"],
                        [[t["from"], t["to"], str(t["count"]), ", ".join(t["examples"]) or "-"]
                         for t in lab["transitions"][:20]])
        if len(lab["transitions"]) > 20:
            lines.append(f"... and {len(lab['transitions']) - 20} more transitions (see --json)")
    checks = status.get("checks") or []
    if checks:
        lines.append("")
        lines += text_table(["check", "value", "threshold", "verdict"],
                        [[c["metric"] + (" (dry run)" if c.get("dry_run") else ""), _fmt(c["value"]), c["threshold"],
                          c["verdict"]] for c in checks])
    lines.append("")
    lines += text_table(["version", *VERSION_COLUMNS], version_rows(report))
    # Every line, not only the tables' cells: ids, versions and reasons come from the data too.
    return "\n".join(printable(line, one_line=True) for line in lines) + "\n"


#: Per version: latency, and the two kinds of rule evaluation that did not match, told apart
#: as the `label` summary tells them: a read of a field with no value (normal for optional
#: fields and lookup misses) is not an error.
VERSION_COLUMNS = ("latency p99 (ms)", "rule errors (wrong type or value)", "reads of a field with no value")


def version_rows(report: dict[str, Any]) -> list[list[str]]:
    """One row per version (serving, candidate) under :data:`VERSION_COLUMNS`; ``-`` where a report has no count."""
    p99 = report.get("latency_p99_ms") or {}
    errors = report.get("rule_errors") or {}
    absent = report.get("rule_absent") or {}  # a report written before the two were told apart has none
    return [[arm, _fmt(p99.get(arm)), _fmt(errors.get(arm, 0)), _fmt(absent.get(arm))]
            for arm in ("serving", "candidate")]


def _heatmap(name: str, lab: dict[str, Any]) -> str:
    sources = sorted({t["from"] for t in lab["transitions"]})[:25]
    targets = sorted({t["to"] for t in lab["transitions"]})[:25]
    counts = {(t["from"], t["to"]): t["count"] for t in lab["transitions"]}
    top = max(counts.values(), default=1)
    head = "".join(f"<th>{html.escape(t)}</th>" for t in targets)
    rows = []
    for s in sources:
        cells = []
        for t in targets:
            n = counts.get((s, t), 0)
            shade = 0.0 if not n else 0.15 + 0.85 * n / top
            colour = f"rgba(200, 40, 40, {shade:.2f})"
            cells.append(f'<td style="background:{colour}" title="{html.escape(s)} → {html.escape(t)}: {n}">'
                         f"{n or ''}</td>")
        rows.append(f"<tr><th>{html.escape(s)}</th>{''.join(cells)}</tr>")
    note = " <small>(sensitive label: values hidden, counts only)</small>" if lab["sensitive"] else ""
    return (f'<section class="label"><h3>{html.escape(name)}: old → new{note}</h3>'
            f'<table class="heatmap"><tr><th>old \\ new</th>{head}</tr>{"".join(rows)}</table></section>')


def rollout_html(report: dict[str, Any]) -> str:
    """One self-contained page: status, checks with thresholds, per-label table and heatmaps."""
    status = report.get("status") or {}
    esc = html.escape
    checks = "".join(
        f"<tr><td>{esc(c['metric'])}{' (dry run)' if c.get('dry_run') else ''}</td><td>{esc(_fmt(c['value']))}</td>"
        f"<td>{esc(c['threshold'])}</td><td class=\"{esc(c['verdict'].lower())}\">{esc(c['verdict'])}</td></tr>"
        for c in status.get("checks") or [])
    labels = "".join(
        f"<tr><td>{esc(name)}</td><td>{lab['compared']}</td><td>{lab['changed']}</td>"
        f"<td>{lab['change_rate']:.4f}</td></tr>" for name, lab in report["labels"].items())
    heatmaps = "".join(_heatmap(name, lab) for name, lab in report["labels"].items() if lab["transitions"])
    version_head = "".join(f"<th>{esc(c)}</th>" for c in ("version", *VERSION_COLUMNS))
    versions = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in version_rows(report))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>activelabel rollout {esc(str(status.get('id', '')))}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; }}
td, th {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
.failed {{ color: #b00; font-weight: bold; }} .successful {{ color: #070; }} .inconclusive {{ color: #a60; }}
.heatmap td {{ min-width: 3em; text-align: center; }}
</style></head><body>
<h1>Rollout {esc(str(status.get('id', '')))}: {esc(str(status.get('state', '')))}</h1>
<p>Step {esc(_fmt(status.get('step')))}% of {esc(str(status.get('steps')))} · serving
<code>{esc(str(status.get('serving_version', '')))}</code> · candidate
<code>{esc(str(status.get('candidate_version', '')))}</code></p>
<p>{esc(str(status.get('reason') or ''))}</p>
<p>{report['events']} events compared on both versions, {report['events_changed']} changed.</p>
<h2>Checks</h2>
<table><tr><th>check</th><th>measured</th><th>threshold</th><th>verdict</th></tr>{checks}</table>
<h2>Versions</h2>
<table><tr>{version_head}</tr>{versions}</table>
<h2>Labels</h2>
<table><tr><th>label</th><th>compared</th><th>changed</th><th>change rate</th></tr>{labels}</table>
<h2>Transitions</h2>
{heatmaps or '<p>No label changed.</p>'}
</body></html>
"""


def report_problem(data: Any) -> str | None:
    """Why ``data`` is not a shadow/rollout report the renderers can show (None: it is one).

    ``rollout report --from FILE`` reads any JSON: a file of another kind is named as such,
    not met half-way through rendering as a missing key.
    """
    if not isinstance(data, dict):
        return f"the JSON is {type(data).__name__}, not an object"
    for key in ("events", "events_changed"):
        if not isinstance(data.get(key), int):
            return f"no `{key}` count"
    labels = data.get("labels")
    if not isinstance(labels, dict):
        return "no `labels` object"
    for name, lab in labels.items():
        if not isinstance(lab, dict):
            return f"label {name!r} is not an object"
        for key, kind in (("compared", int), ("changed", int), ("change_rate", (int, float)), ("transitions", list),
                          ("changed_because", dict), ("sensitive", bool)):
            if not isinstance(lab.get(key), kind):
                return f"label {name!r} has no `{key}`"
        for t in lab["transitions"]:
            if not (isinstance(t, dict) and isinstance(t.get("from"), str) and isinstance(t.get("to"), str)
                    and isinstance(t.get("count"), int) and isinstance(t.get("examples"), list)
                    and all(isinstance(e, str) for e in t["examples"])):
                return f"label {name!r} has a transition that is not {{from, to, count, examples}}"
    status = data.get("status", {})
    if not isinstance(status, dict):
        return "`status` is not an object"
    checks = status.get("checks") or []
    if not isinstance(checks, list) or not all(
            isinstance(c, dict) and all(isinstance(c.get(k), str) for k in ("metric", "threshold", "verdict"))
            and (c.get("value") is None or isinstance(c.get("value"), (int, float))) for c in checks):
        return "`status.checks` is not a list of {metric, value, threshold, verdict}"
    for key in ("latency_p99_ms", "rule_errors", "rule_absent"):
        if not isinstance(data.get(key) or {}, dict):
            return f"`{key}` is not an object"
    return None
