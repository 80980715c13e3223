"""What each served task answers: its label names (or a score), read from its adapter file."""
from __future__ import annotations

from ..errors import WeightsError
from ..predict import apply_stored_labels, label_names as predicted_label_names
from .app import TaskInfo


def label_names(model, name: str, path="adapter") -> tuple | None:
    """The names of task `name`'s labels, read as `minadapt predict` reads them: the file's 'labels'
    metadata given to the head (predict.apply_stored_labels), else the head's names, else "0", "1",
    ...; None for a regression head."""
    apply_stored_labels(model, name, path)
    return predicted_label_names(model, name)


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


