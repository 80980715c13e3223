"""What each served task answers: its label names (or a score), read from its adapter file."""
from __future__ import annotations

import json

from ..errors import WeightsError
from .app import TaskInfo


def label_names(model, name: str, path="adapter") -> tuple | None:
    """The names of task `name`'s labels: its file's 'labels' metadata (as `minadapt predict` reads
    it), else its head's label names, else "0", "1", ...; None for a regression head."""
    head = model.heads[name]
    if head.regression:
        return None
    meta = model.metadata.get(name, {})
    names = head.labels
    if "labels" in meta:
        try:
            names = json.loads(meta["labels"])
        except json.JSONDecodeError:
            raise WeightsError(f"{path}: its metadata 'labels' is not JSON: {meta['labels'][:60]!r}") from None
        if not isinstance(names, list) or len(names) != head.num_labels:
            raise WeightsError(f"{path}: its metadata names labels {names!r}, but its head has "
                               f"{head.num_labels}")
    if names is None:
        names = range(head.num_labels)
    return tuple(str(x) for x in names)


def task_infos(model, paths: dict | None = None) -> dict[str, TaskInfo]:
    """A TaskInfo per task the model holds; every task needs a head (a WeightsError names the file
    of one that has none)."""
    paths = paths or {}
    infos = {}
    for name in model.names():
        if name not in model.heads:
            raise WeightsError(f"{paths.get(name, name)}: has no classification head, so it cannot "
                               "label texts (was it saved before add_classification_head?)")
        infos[name] = TaskInfo(name, label_names(model, name, paths.get(name, name)),
                               model.heads[name].regression)
    return infos


