"""The one thread that runs the model, and the fair batches it runs.

A batch is a list of rows, each `(request, i)`: row i of a request, which names its task. A
batch holds at most `max_batch` rows (texts or pairs), whatever the requests' sizes:

    each turn, room = max_batch; the requests waiting, oldest first, share the room equally
    (water-filling: each takes min(what it still has, room // requests still wanting), again
    until the room is full or nobody wants more)

so a large request is split across batches, and a request that arrives while a batch runs is in
the next batch with at least max_batch // (requests waiting) of its rows: a request of that size
or fewer waits behind at most the one batch under way. Nothing starves: every waiting request gets
rows in every batch (while fewer than max_batch requests wait).

A batch runs as one forward whatever its tasks (`answer_rows`: a task per row, issue 33), for the
tasks a mixed batch can hold (bottleneck adapters, their compositions, probes); rows of tasks
adapted otherwise (LoRA, prompt, prefix, IA3, full fine-tuning) run one forward per task
(`answer`), and texts apart from pairs. `answer` and `answer_rows` are where the server calls
the model.
"""
from __future__ import annotations

import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

MAX_BATCH = 64  # texts per batch


def answer(model, task: str, texts: list, pairs: list | None = None) -> np.ndarray:
    """Task `task`'s answer for each text (or pair): class probabilities (n, C), or a regression
    head's score (n, 1), by minadapt.predict (the one prediction path `minadapt predict` takes);
    one forward, padded to the longest text."""
    from ..predict import outputs, tokenizer_for

    ids, types = tokenizer_for(model, task).ids_and_types(texts, pairs)
    return outputs(model, task, ids, types, batch_size=len(ids))


def answer_rows(model, tasks: list, texts: list, pairs: list | None = None) -> list:
    """Each row's answer under its own task, in one forward over all rows (padded to the longest):
    class probabilities (C_task,), or a regression head's score (1,). Every row equals `answer`
    for it alone to float32 rounding."""
    from ..predict import softmax, tokenizer_for

    rows_of: dict[str, list[int]] = {}  # each task's rows, in order
    for r, task in enumerate(tasks):
        rows_of.setdefault(task, []).append(r)
    ids, types = [None] * len(tasks), [None] * len(tasks)
    for task, rows in rows_of.items():  # each task's rows cut at the length it was trained on
        cut = tokenizer_for(model, task).ids_and_types([texts[r] for r in rows],
                                                       None if pairs is None else [pairs[r] for r in rows])
        for r, i, t in zip(rows, *cut):
            ids[r], types[r] = i, t
    b = model.tokenizer.pad(ids, types)
    per_task = model.logits(b.input_ids, b.attention_mask, b.token_type_ids, adapter=list(tasks))
    out = [None] * len(tasks)
    for task, z in per_task.items():
        z = np.asarray(z if model.heads[task].regression else softmax(z), np.float64)
        for j, r in enumerate(rows_of[task]):
            out[r] = z[j]
    return out


def mixes(model, task: str) -> bool:
    """Whether task `task` can share a forward with other tasks (compose.task_block)."""
    from ..compose import task_block
    from ..errors import ConfigError

    try:
        task_block(model, task)
        return True
    except ConfigError:
        return False


def forward_groups(model, rows) -> dict[tuple, list]:
    """The forwards a batch runs: (None, paired) for the rows of every task that mixes, one forward
    whatever their tasks; (task, paired) for each other task. Texts apart from pairs."""
    groups: dict[tuple, list] = {}
    for row in rows:
        req = row[0]
        key = (None if mixes(model, req.task) else req.task, req.pairs is not None)
        groups.setdefault(key, []).append(row)
    return groups


@dataclass(eq=False)
class Request:
    """One request's texts for one task, waiting for the model thread; `on_done(outputs, error)`
    is called from the model thread once every row is answered (or the batch failed)."""
    task: str
    texts: list
    pairs: list | None
    on_done: Callable
    taken: int = 0  # rows handed to a batch so far (rows 0 .. taken-1)
    answered: int = 0  # rows whose outputs are in `outputs`
    outputs: np.ndarray | None = None
    cancelled: bool = False  # the client is gone: rows not yet taken are dropped
    arrived: float = field(default_factory=time.monotonic)

    def __len__(self):
        return len(self.texts)


def take_batch(waiting: deque, max_batch: int) -> list[tuple[Request, int]]:
    """The next batch's rows from the waiting requests (oldest first), by water-filling; a request
    whose rows are all taken leaves `waiting`."""
    want = {id(r): len(r) - r.taken for r in waiting if not r.cancelled}
    share = {id(r): 0 for r in waiting}
    room = max_batch
    while room and any(want.values()):
        hungry = [k for k, w in want.items() if w]
        each = max(1, room // len(hungry))
        for k in hungry:
            n = min(want[k], each, room)
            share[k] += n
            want[k] -= n
            room -= n
            if not room:
                break
    rows = []
    for r in list(waiting):
        n = share[id(r)]
        rows += [(r, i) for i in range(r.taken, r.taken + n)]
        r.taken += n
        if r.cancelled or r.taken == len(r):
            waiting.remove(r)
    return rows


def run_batch(model, rows: list[tuple[Request, int]]) -> None:
    """Answer a batch: one forward for the rows of the tasks that mix, one `answer` per other task
    (forward_groups); each row's output into its request."""
    for (task, paired), group in forward_groups(model, rows).items():
        texts = [req.texts[i] for req, i in group]
        pairs = [req.pairs[i] for req, i in group] if paired else None
        if task is None:
            out = answer_rows(model, [req.task for req, _ in group], texts, pairs)
        else:
            out = answer(model, task, texts, pairs)
        for (req, i), row in zip(group, out):
            if req.outputs is None:
                req.outputs = np.empty((len(req), len(row)), np.float64)
            req.outputs[i] = row
            req.answered += 1


class Batcher:
    """The one thread that calls the model (its parameters and workspaces are not guarded for two
    callers, and BLAS already spreads one matmul over the cores).

    submit(request) queues it, from any thread; stop() answers everything queued, then ends the
    thread. `batches` counts batches run, `forwards` model calls."""

    def __init__(self, model, max_batch: int = MAX_BATCH, run: Callable = run_batch):
        self.model, self.max_batch, self._run = model, max_batch, run
        self.waiting: deque[Request] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self.batches = 0
        self.forwards = 0
        self.thread = threading.Thread(target=self._loop, name="minadapt-model", daemon=True)
        self.thread.start()

    def submit(self, request: Request) -> None:
        with self._cond:
            if self._stopping:
                raise RuntimeError("the model thread has stopped")
            self.waiting.append(request)
            self._cond.notify()

    def run(self, task: str, texts: list, pairs: list | None = None, timeout: float = 300.0):
        """The outputs for these texts, waiting in the calling thread (see `answer`)."""
        done, result = threading.Event(), {}

        def on_done(outputs, error):
            result.update(outputs=outputs, error=error)
            done.set()

        req = Request(task, texts, pairs, on_done)
        self.submit(req)
        if not done.wait(timeout):
            req.cancelled = True
            raise TimeoutError(f"the model did not answer within {timeout:.0f} s")
        if result["error"] is not None:
            raise result["error"]
        return result["outputs"]

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self.thread.join()

    def _loop(self):
        while True:
            with self._cond:
                while not self.waiting and not self._stopping:
                    self._cond.wait()
                if not self.waiting:
                    return
                rows = take_batch(self.waiting, self.max_batch)
            if not rows:
                continue
            requests = list(dict.fromkeys(req for req, _ in rows))
            try:
                self._run(self.model, rows)
                self.batches += 1
                # (a stand-in `run` in the tests has no model: count its batch as one forward)
                self.forwards += len(forward_groups(self.model, rows)) if self.model is not None else 1
                error = None
            except Exception as e:  # the requests get a 500; the server goes on
                traceback.print_exc(file=sys.stderr)
                error = e
            for req in requests:
                if error is not None:
                    if not req.cancelled:
                        req.cancelled = True  # its other rows are dropped
                        req.on_done(None, error)
                elif req.answered == len(req) and not req.cancelled:
                    req.on_done(req.outputs, None)
