"""What a task is (its labels, text columns, whether it takes pairs, its max length), kept beside an
adapter saved in another library's layout.

A minadapt adapter file carries its task in its safetensors metadata (train.task_record), so that
eval and predict need nothing else. AdapterHub's and PEFT's directories have no place for it; minadapt
writes it there as one more file, `minadapt_task.json` (the same string -> string dict the metadata
holds), which both libraries ignore, and reads it back on load. A directory without it (made by
AdapterHub or PEFT themselves) still loads: its labels come from its head config, and a task that
takes pairs cannot be told from one that does not.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import WeightsError

SIDECAR = "minadapt_task.json"
KEYS = ("task", "labels", "training", "dev_metrics", "steps", "kept")  # what travels with the adapter


def renamed(meta: dict, name: str) -> dict:
    """File metadata `meta` with its own-data task's record named `name` (a task loaded under a new
    name is evaluated and predicted under it); a built-in task keeps its name, which says which
    data set it is."""
    if "task" not in meta:
        return dict(meta)
    task = json.loads(meta["task"])
    if task.get("builtin", True) or task.get("name") == name:
        return dict(meta)
    return {**meta, "task": json.dumps({**task, "name": name})}


def write_task_record(model, name: str, directory: Path) -> None:
    """Task `name`'s record (model.metadata[name], from the file it was loaded from or the run that
    trained it), renamed to `name`, as directory/minadapt_task.json; nothing when there is none."""
    meta = renamed(getattr(model, "metadata", {}).get(name) or {}, name)
    record = {k: meta[k] for k in KEYS if k in meta}
    if record:
        (Path(directory) / SIDECAR).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def read_task_record(directory: Path) -> dict:
    """The record written by write_task_record, or {} when the directory has none."""
    path = Path(directory) / SIDECAR
    if not path.is_file():
        return {}
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise WeightsError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(record, dict) or not all(isinstance(v, str) for v in record.values()):
        raise WeightsError(f"{path}: expected a JSON object of strings (as minadapt writes it)")
    return record
