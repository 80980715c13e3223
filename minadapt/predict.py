"""The one prediction path: tokenised texts in, a task's probabilities (or scores) out, in batches
sorted by length. `minadapt predict`, `eval`, `serve`, the training loop's evaluation and the
lessons all come through here.

    rows = predict_texts(model, "sst2", ["a gorgeous, witty film", "dull"])   # [("positive", 0.98), ...]
    probs = outputs(model, "sst2", ids)                                        # (N, C)
    metrics, probs = evaluate(model, task, ids, types, labels, "sst2")         # {"accuracy": 0.87}
"""
from __future__ import annotations

import json

import numpy as np

from .backend import get_xp, to_numpy
from .errors import WeightsError
from .tasks.batching import sequential_batches


def softmax(z):
    """Class probabilities from logits (..., C), over the last axis (the max shift keeps exp finite)."""
    xp = get_xp(z)
    e = xp.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def stored_task(model, name) -> dict | None:
    """Task `name`'s record as its adapter file keeps it (train.task_record: the task or its files
    and columns, max_length), or None for a file saved without one (save_adapter, other libraries)."""
    record = model.metadata.get(name, {}).get("task")
    return json.loads(record) if record else None


def tokenizer_for(model, name):
    """The model's tokenizer cutting texts where adapter `name` was trained to see them: the
    max_length in its task record (train --max-length), else the tokenizer's own. An adapter trained
    on 256 tokens and read at 128 would see a different, shorter text than it learned from."""
    length = (stored_task(model, name) or {}).get("max_length")
    return model.tokenizer.cutting_at(length) if isinstance(length, int) else model.tokenizer


def encode_split(tokenizer, sentences):
    """Token ids of each sentence (unpadded) and their lengths."""
    ids = tokenizer.ids(sentences)
    return ids, np.array([len(s) for s in ids])


def encode_examples(tokenizer, examples):
    """Token ids and type ids of each example (text, or text pair), unpadded, and their lengths."""
    ids, types = tokenizer.ids_and_types(examples.texts, examples.pairs)
    return ids, types, np.array([len(s) for s in ids])


def outputs(model, adapter, ids, types=None, batch_size=128, runner=None) -> np.ndarray:
    """Task `adapter`'s head on every example: class probabilities (N, C), or the score (N, 1) of
    a regression head. ids (and types): token ids per example, unpadded. runner: what computes a
    batch's logits (minadapt.parallel.runner; default: the model itself)."""
    name = model.resolve(adapter)
    head = model.heads[name]
    logits = runner.logits if runner is not None else (lambda *b: model.logits(*b, adapter=name))
    lengths = np.array([len(s) for s in ids])
    out = np.zeros((len(ids), head.num_labels), np.float64)
    for idx in sequential_batches(len(ids), batch_size, lengths):
        b = model.tokenizer.pad([ids[i] for i in idx], None if types is None else [types[i] for i in idx])
        z = logits(b.input_ids, b.attention_mask, b.token_type_ids)
        out[idx] = to_numpy(z if head.regression else softmax(z))
    return out


def evaluate(model, task, ids, types, labels, adapter=None, runner=None, batch_size=128):
    """({metric: value} for each of task.metrics, outputs (see `outputs`)) on a whole split."""
    from .tasks import evaluate as score, predictions

    out = outputs(model, adapter, ids, types, batch_size, runner)
    return score(task, predictions(task, out), labels), out


def accuracy(model, ids, labels, batch_size=128, adapter=None, runner=None):
    """(accuracy, probabilities (N, C)) of task `adapter` on single texts: the plain measure the
    first lessons use before tasks are introduced."""
    probs = outputs(model, adapter, ids, None, batch_size, runner)
    return float((probs.argmax(1) == np.asarray(labels)).mean()), probs


def predict_texts(model, name, texts, pairs=None, batch_size=64) -> list[tuple]:
    """[(label, probability)] of task `name` for each text (with `pairs`, each text and its pair),
    or [(None, score)] for a regression head."""
    ids, types = tokenizer_for(model, model.resolve(name)).ids_and_types(
        list(texts), None if pairs is None else list(pairs))
    head = model.heads[model.resolve(name)]
    out = outputs(model, name, ids, types, batch_size)
    if head.regression:
        return [(None, float(row[0])) for row in out]
    names = head.labels or tuple(str(k) for k in range(head.num_labels))
    return [(names[int(row.argmax())], float(row.max())) for row in out]


def apply_stored_labels(model, name, where="adapter"):
    """Files that kept their label names in the metadata ('labels'), not in the head: give the
    head those names. A WeightsError naming `where` when they do not fit the head."""
    head = model.heads[name]
    stored = model.metadata.get(name, {}).get("labels")
    if stored in (None, "null") or head.regression:
        return
    try:
        labels = json.loads(stored)
    except json.JSONDecodeError:
        raise WeightsError(f"{where}: its metadata 'labels' is not JSON: {stored[:60]!r}") from None
    if not isinstance(labels, list) or len(labels) != head.num_labels:
        raise WeightsError(f"{where}: its metadata names labels {labels!r}, but its head has "
                           f"{head.num_labels}")
    if head.labels is not None and tuple(map(str, labels)) != head.labels:
        raise WeightsError(f"{where}: its metadata names labels ({', '.join(map(str, labels))}) "
                           f"but its head's are ({', '.join(head.labels)})")
    model.set_labels(name, labels)


def label_names(model, name) -> tuple | None:
    """Task `name`'s label names in logit order ("0", "1", ... where it has none); None for a
    regression head."""
    head = model.heads[name]
    if head.regression:
        return None
    return head.labels or tuple(str(k) for k in range(head.num_labels))


# --- what a task reads: one text or a pair --------------------------------------------------------
def takes_pairs(model, name) -> bool | None:
    """Whether task `name` reads text pairs (its record, or its built-in task, says so); None when
    nothing says (a file saved without a task record: by save_adapter, or by another library)."""
    record = stored_task(model, name)
    if record is not None:
        if record.get("builtin", True):
            from .tasks import TASKS

            task = TASKS.get(record.get("name"))
            return None if task is None else task.text_pair_column is not None
        return record.get("text_pair_column") is not None
    return None  # no record: saved by the library API (save_adapter) or by another library


def pair_problem(model, name, is_pair: bool) -> str | None:
    """Why task `name` cannot read this input (a pair, or a single text), or None when it can."""
    wants = takes_pairs(model, name)
    if wants is None or wants == is_pair:
        return None
    if wants:
        return (f"task {name!r} reads text pairs, and got a single text (give pairs: a TAB between "
                "the two texts of a line; 'pairs' in a /predict request)")
    return (f"task {name!r} reads single texts, and got a pair (give single texts: no TAB in a "
            "line; 'texts' in a /predict request)")


def check_pairs(model, name, is_pair: bool, error=None):
    """Raise `error(message)` (default: DataError) when task `name` reads pairs and gets single
    texts, or the other way round; `minadapt serve` passes its 400 answer."""
    from .errors import DataError

    problem = pair_problem(model, name, is_pair)
    if problem:
        raise (error or DataError)(problem)


# --- predict: lines in, one output per line -------------------------------------------------------
def parse_line(line: str, jsonl: bool, where: str):
    """(text, second text or None) of one input line, or None for a blank line. jsonl: the line is
    an object {"text": ..., "text_pair": ...}; otherwise a TAB separates a pair's two texts."""
    from .errors import DataError

    if not line.strip():
        return None
    if not jsonl:
        first, sep, second = line.partition("\t")
        return (first, second) if sep else (first, None)
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(f"{where}: not a JSON object ({e.msg})") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
        raise DataError(f"{where}: expected an object with a string 'text' (and optionally 'text_pair')")
    pair = obj.get("text_pair")
    if pair is not None and not isinstance(pair, str):
        raise DataError(f"{where}: 'text_pair' must be a string")
    return obj["text"], pair


def route(model, names, items, where) -> dict:
    """{task: [line index, ...]}: the lines each task reads. With one task (or --task) every line
    must fit it; with several, a line goes to the tasks that read its shape (pair or single text),
    and a line no task reads is a DataError naming it."""
    from .errors import DataError

    lines = {name: [] for name in names}
    for i, item in enumerate(items):
        if item is None:
            continue
        fits = [n for n in names if pair_problem(model, n, item[1] is not None) is None]
        if not fits:
            raise DataError(f"{where(i)}: {pair_problem(model, names[0], item[1] is not None)}" +
                            (f" (nor does any of {', '.join(names)} read it)" if len(names) > 1 else ""))
        for n in fits:
            lines[n].append(i)
    return lines


def predict_items(model, names, items, batch_size=64, progress=None) -> list[dict]:
    """One record per item (None for a blank line): {task: {"label", "probability",
    "probabilities": {label: p}} or {"score"}} for every task that reads it. `progress`: a bar
    updated by the number of (task, line) predictions made."""
    records = [None if item is None else {} for item in items]
    for name, idx in route(model, names, items, lambda i: f"line {i + 1}").items():
        labels = label_names(model, name)
        singles = [i for i in idx if items[i][1] is None]
        paired = [i for i in idx if items[i][1] is not None]  # both only for a task of unknown shape
        for group in (singles, paired):
            for start in range(0, len(group), 256):  # chunks, so the bar moves on a large input
                chunk = group[start:start + 256]
                texts = [items[i][0] for i in chunk]
                pairs = [items[i][1] for i in chunk] if group is paired else None
                ids, types = tokenizer_for(model, name).ids_and_types(texts, pairs)
                for i, row in zip(chunk, outputs(model, name, ids, types, batch_size)):
                    if labels is None:
                        records[i][name] = {"score": float(row[0])}
                    else:
                        k = int(row.argmax())
                        records[i][name] = {"label": labels[k], "probability": float(row[k]),
                                            "probabilities": dict(zip(labels, map(float, row)))}
                if progress is not None:
                    progress.update(len(chunk))
    return records
