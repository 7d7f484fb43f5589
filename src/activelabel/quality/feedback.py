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


def read_label_studio_export(data: Any, *, source: str = "export") -> tuple[list[FeedbackItem], int]:
    """Items from a Label Studio JSON export, and how many annotations were cancelled (skipped).

    Per task, the most recent annotation that was not cancelled wins; its ``choices``
    result gives the value, its ``from_name`` the label, ``completed_by`` the annotator.
    """
    if not isinstance(data, list):
        raise FeedbackError(f"{source}: a Label Studio export is a JSON list of tasks, got {type(data).__name__}")
    items: list[FeedbackItem] = []
    cancelled = 0
    for index, task in enumerate(data):
        name = f"task {task.get('id', f'#{index}') if isinstance(task, dict) else f'#{index}'}"
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            raise FeedbackError(f"{source}: {name}: expected an object with a 'data' object "
                                "(export the project as JSON, not JSON-MIN or CSV)")
        record_id = task["data"].get(ID_KEY)
        if record_id is None:
            raise FeedbackError(f"{source}: {name}: data has no {ID_KEY!r}; was it exported by `activelabel review export`?")
        annotations = task.get("annotations", [])
        if not isinstance(annotations, list):
            raise FeedbackError(f"{source}: {name}: 'annotations' must be a list")
        live = []
        for ann in annotations:
            if not isinstance(ann, dict) or not isinstance(ann.get("result", []), list):
                raise FeedbackError(f"{source}: {name}: each annotation must be an object with a 'result' list")
            if ann.get("was_cancelled"):
                cancelled += 1
                continue
            live.append(ann)
        if not live:
            continue
        ann = max(live, key=lambda a: str(a.get("updated_at") or a.get("created_at") or ""))
        for res in ann.get("result", []):
            if not isinstance(res, dict) or res.get("type") not in ("choices", "textarea"):
                continue
            # A pii or secret label is reviewed in a free-text box (no value is offered as a choice).
            key = "choices" if res.get("type") == "choices" else "text"
            choices = (res.get("value") or {}).get(key)
            if not isinstance(choices, list) or len(choices) != 1:
                raise FeedbackError(f"{source}: {name}: a {res.get('type')} result must hold exactly one {'choice' if key == 'choices' else 'text'}, "
                                    f"got {len(choices) if isinstance(choices, list) else type(choices).__name__}")
            label = str(res.get("from_name") or task["data"].get(LABEL_KEY) or "")
            items.append(FeedbackItem(str(record_id), label, choices[0], _annotator(ann.get("completed_by")),
                                      "label-studio", f"{source}: {name}"))
    return items, cancelled


def read_feedback_file(path: str | Path) -> tuple[list[FeedbackItem | FeedbackError], int]:
    """A JSONL feedback file or a Label Studio export (a JSON list), told apart by content."""
    p = Path(path)
    raw = p.read_bytes()
    if raw.lstrip().startswith(b"["):
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise FeedbackError(f"{p.name}: not valid JSON: {exc}") from exc
        items, cancelled = read_label_studio_export(data, source=p.name)
        return list(items), cancelled
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
        try:
            store.add_ground_truth(item.record_id, item.label, item.value, who=item.who or who, how=item.how)
        except FeedbackError as exc:
            result.rejected.append((item.where, str(exc)))
            continue
        result.accepted += 1
        result.accepted_items.append(item)
    return result
