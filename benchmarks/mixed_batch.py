"""Several tasks in one batch against one task, and against a batch per task.

    python benchmarks/mixed_batch.py [--weights DIR] [--tasks 8] [--batch-size 32] [--length 64]
                                     [--rounds 8] [--json FILE]

One backbone holds --tasks Houlsby adapters (bottleneck 64, random up-projections) with 2-label
heads. Each round times, interleaved (the host's speed drifts):
  one task        model.logits(batch, adapter="t0"): every row one task
  mixed           model.logits(batch, adapter=[t0, t1, ..., t7, t0, ...]): a task per row, one forward
  batch per task  the same rows as one forward per task (what a server batching by task runs)
and the same for a training step (model.loss_and_grads, dropout off). Prints each one's median
and fastest time, texts/s from the median, and the ratio to one task.
"""
from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "1")  # as the CLI sets it


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", help="checkpoint folder (default: weights/all-MiniLM-L6-v2, fetched)")
    p.add_argument("--tasks", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--length", type=int, default=64)
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    import numpy as np

    import minadapt

    model = minadapt.load_model(args.weights)
    tasks = [f"t{i}" for i in range(args.tasks)]
    rng = np.random.default_rng(0)
    for i, t in enumerate(tasks):
        model.add_adapter(t, bottleneck=64, seed=i)
        model.add_classification_head(t, num_labels=2, seed=i)
        for k in model.trainable_names(t):
            if "adapter_up" in k:  # away from the identity, so that every adapter does something
                model.params[k][...] = rng.standard_normal(model.params[k].shape) * 0.01
    B, L = args.batch_size, args.length
    ids = rng.integers(1000, 20000, size=(B, L))
    ids[:, 0] = 101
    mask = np.ones((B, L), np.int64)
    labels = rng.integers(0, 2, size=B)
    per_row = [tasks[r % len(tasks)] for r in range(B)]
    groups = {t: [r for r in range(B) if per_row[r] == t] for t in tasks}

    def per_task(train):
        for t, rows in groups.items():
            if train:
                model.loss_and_grads(ids[rows], mask[rows], None, labels[rows], adapter=t, train=False)
            else:
                model.logits(ids[rows], mask[rows], None, adapter=t)

    runs = {
        "inference, one task": lambda: model.logits(ids, mask, None, adapter="t0"),
        "inference, mixed": lambda: model.logits(ids, mask, None, adapter=per_row),
        "inference, batch per task": lambda: per_task(False),
        "training, one task": lambda: model.loss_and_grads(ids, mask, None, labels, adapter="t0", train=False),
        "training, mixed": lambda: model.loss_and_grads(ids, mask, None, labels, adapter=per_row, train=False),
        "training, batch per task": lambda: per_task(True),
    }
    for f in runs.values():
        f()  # warm-up
    times = {k: [] for k in runs}
    for _ in range(args.rounds):
        for k, f in runs.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    out = {}
    print(f"{args.tasks} tasks, batch {B} x {L} tokens, {args.rounds} rounds")
    print(f"{'':28} {'median ms':>10} {'min ms':>8} {'texts/s':>8} {'/ one task':>10}")
    for k, v in times.items():
        base = np.median(times[k.split(",")[0] + ", one task"])
        med = float(np.median(v))
        out[k] = {"median_s": med, "min_s": float(min(v)), "texts_per_s": B / med, "ratio": med / base}
        print(f"{k:28} {1000 * med:>10.1f} {1000 * min(v):>8.1f} {B / med:>8.1f} {med / base:>10.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": out}, f, indent=1)


if __name__ == "__main__":
    main()
