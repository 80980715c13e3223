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
    ids, types = model.tokenizer.ids_and_types(list(texts), None if pairs is None else list(pairs))
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
