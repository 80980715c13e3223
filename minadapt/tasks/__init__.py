"""Tasks as data: what to read, how to label it, how to score it (see task.py for the built-ins).

    from minadapt.tasks import get_task, load_task, evaluate
    task = get_task("rte")                  # or task_from_files("train.csv", "dev.csv", ...)
    data = load_task(task, data_dir=None)   # {"train": Examples, "dev": Examples}
    texts, pairs, labels = data["dev"]      # pairs is None for single-text tasks
    scores = evaluate(task, predictions(task, logits), labels)   # {"accuracy": 0.71}
"""
from minadapt.tasks.batching import bucketed_batches, sequential_batches
from minadapt.tasks.load import (evaluate, fetch_task, find_task_data, load_task, predictions)
from minadapt.tasks.read import Examples, format_of, read_examples
from minadapt.tasks.task import TASKS, Task, get_task, task_from_files

__all__ = ["TASKS", "Task", "Examples", "get_task", "task_from_files", "load_task", "find_task_data",
           "fetch_task", "read_examples", "format_of", "predictions", "evaluate", "bucketed_batches",
           "sequential_batches"]
