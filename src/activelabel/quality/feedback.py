"""Ground truth coming back: JSONL of {id, label, value} and Label Studio exports.

Each item is accepted or refused on its own with the reason; a refused item is
counted and kept by the store, and never stops the rest of the file.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from activelabel.errors import FeedbackError
from activelabel.quality.review import ID_KEY, LABEL_KEY
from activelabel.quality.store import DecisionStore


@dataclass(frozen=True)
class FeedbackItem:
    """One true value to add: where it came from is kept for error messages."""

    record_id: str
    label: str
    value: Any
    who: str | None = None
    how: str = "import"
    where: str = ""


@dataclass
class FeedbackResult:
    """What an import did: counts, and each refusal with its reason."""

    accepted: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)
    cancelled: int = 0
    accepted_items: list[FeedbackItem] = field(default_factory=list)


def read_jsonl_feedback(path: Path) -> Iterator[FeedbackItem | FeedbackError]:
    """Items from a JSONL file of {id, label, value[, who]}; a bad line yields its error instead."""
    with path.open("rb") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path.name}:{n}"
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                yield FeedbackError(f"{where}: not valid JSON: {exc}")
                continue
            if not isinstance(obj, dict) or not {"id", "label", "value"} <= obj.keys():
                yield FeedbackError(f"{where}: expected an object with id, label and value")
                continue
            yield FeedbackItem(str(obj["id"]), str(obj["label"]), obj["value"], obj.get("who"), "jsonl", where)


def _annotator(completed_by: Any) -> str | None:
    if isinstance(completed_by, Mapping):
        return str(completed_by.get("email") or completed_by.get("id") or "") or None
    return None if completed_by is None else str(completed_by)


NEW_VALUE_SUFFIX = "__new"


def read_label_studio_export(data: Any, *, source: str = "export") -> tuple[list[FeedbackItem | FeedbackError], int]:
    """Items from a Label Studio JSON export, and how many annotations were cancelled (skipped).

    Per task, the most recent annotation that was not cancelled wins; its ``choices``
    result gives the value (a ``textarea`` result named ``<label>__new`` — the free-text
    box of an open label — wins over the choice), its ``from_name`` the label,
    ``completed_by`` the annotator. A task that cannot be read (not ours, no data,
    several choices) yields a FeedbackError naming it, and the other tasks go on.
    """
    if not isinstance(data, list):
        raise FeedbackError(f"{source}: a Label Studio export is a JSON list of tasks, got {type(data).__name__}")
    items: list[FeedbackItem | FeedbackError] = []
    cancelled = 0
    for index, task in enumerate(data):
        got, n_cancelled = _task_items(task, index, source)
        items.extend(got)
        cancelled += n_cancelled
    return items, cancelled


def task_items(task: Any, *, source: str = "label-studio") -> list[FeedbackItem | FeedbackError]:
    """The items of one Label Studio task (as a webhook or an export carries it)."""
    return _task_items(task, 0, source)[0]


def annotation_items(task: Mapping[str, Any], annotation: Mapping[str, Any], *,
                     source: str = "label-studio") -> list[FeedbackItem | FeedbackError]:
    """The items of one annotation of a task (a webhook's ``task`` and ``annotation``)."""
    return _task_items({**task, "annotations": [annotation]}, 0, source)[0]


def _task_items(task: Any, index: int, source: str) -> tuple[list[FeedbackItem | FeedbackError], int]:
    name = f"task {task.get('id', f'#{index}') if isinstance(task, dict) else f'#{index}'}"
    where = f"{source}: {name}"
    if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
        return [FeedbackError(f"{where}: expected an object with a 'data' object "
                              "(export the project as JSON, not JSON-MIN or CSV); task skipped")], 0
    record_id = task["data"].get(ID_KEY)
    if record_id is None:
        return [FeedbackError(f"{where}: data has no {ID_KEY!r} (not a task from `activelabel review export`); "
                              "task skipped")], 0
    annotations = task.get("annotations", [])
    if not isinstance(annotations, list):
        return [FeedbackError(f"{where}: 'annotations' must be a list; task skipped")], 0
    live = []
    cancelled = 0
    for ann in annotations:
        if not isinstance(ann, dict) or not isinstance(ann.get("result", []), list):
            return [FeedbackError(f"{where}: each annotation must be an object with a 'result' list; task skipped")], 0
        if ann.get("was_cancelled"):
            cancelled += 1
            continue
        live.append(ann)
    if not live:
        return [], cancelled
    ann = max(live, key=lambda a: str(a.get("updated_at") or a.get("created_at") or ""))
    who = _annotator(ann.get("completed_by"))
    values: dict[str, Any] = {}
    typed: dict[str, Any] = {}
    out: list[FeedbackItem | FeedbackError] = []
    for res in ann.get("result", []):
        if not isinstance(res, dict):
            continue
        label = str(res.get("from_name") or task["data"].get(LABEL_KEY) or "")
        value = res.get("value") or {}
        if res.get("type") == "textarea":
            text = value.get("text") if isinstance(value, dict) else None
            text = text[0] if isinstance(text, list) and len(text) == 1 else text
            if label.endswith(NEW_VALUE_SUFFIX):
                if isinstance(text, str) and text.strip():
                    typed[label[: -len(NEW_VALUE_SUFFIX)]] = text.strip()
            elif isinstance(text, str) and text.strip():
                # A pii or secret label is reviewed in a free-text box (no value is offered as a choice).
                values[label] = text.strip()
            else:
                out.append(FeedbackError(f"{where}: a textarea result must hold exactly one text; task skipped"))
            continue
        if res.get("type") != "choices":
            continue
        choices = value.get("choices") if isinstance(value, dict) else None
        if not isinstance(choices, list) or len(choices) != 1:
            out.append(FeedbackError(f"{where}: a choices result must hold exactly one choice, got {choices!r}; "
                                     "task skipped"))
            continue
        values[label] = choices[0]
    values.update(typed)
    for label, value in values.items():
        out.append(FeedbackItem(str(record_id), label, value, who, "label-studio", where))
    return out, cancelled


def read_feedback_file(path: str | Path) -> tuple[list[FeedbackItem | FeedbackError], int]:
    """A JSONL feedback file or a Label Studio export (a JSON list), told apart by content."""
    p = Path(path)
    raw = p.read_bytes()
    if raw.lstrip().startswith(b"["):
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise FeedbackError(f"{p.name}: not valid JSON: {exc}") from exc
        return read_label_studio_export(data, source=p.name)
    return list(read_jsonl_feedback(p)), 0


def apply_feedback(store: DecisionStore, items: Iterable[FeedbackItem | FeedbackError], *,
                   who: str | None = None) -> FeedbackResult:
    """Add each item to the store; refusals are counted with their reason, the rest go on."""
    result = FeedbackResult()
    for item in items:
        if isinstance(item, FeedbackError):
            store.record_rejection(str(item), how="import")
            result.rejected.append(("", str(item)))
            continue
        if item.label.endswith(NEW_VALUE_SUFFIX):
            item = FeedbackItem(item.record_id, item.label[: -len(NEW_VALUE_SUFFIX)], item.value, item.who,
                                item.how, item.where)
        try:
            store.add_ground_truth(item.record_id, item.label, item.value, who=item.who or who, how=item.how)
        except FeedbackError as exc:
            result.rejected.append((item.where, str(exc)))
            continue
        result.accepted += 1
        result.accepted_items.append(item)
    return result
