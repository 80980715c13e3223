"""What fair batches across tasks cost today: one forward per task in a batch.

    python benchmarks/serve_batch_split.py [--weights DIR] [--requests 256]

The server's batcher (minadapt/serve/batcher.py) fills each batch of at most 64 texts from every
waiting request, whatever its task, so a small request waits behind at most one batch; until a
forward takes a task per row (issue 33), a batch holding two tasks runs as two forwards. This
submits --requests requests at once (1, 2 or 4 of the 300 shortest SST-2 dev sentences each, task
"sst2" or "topic" at random, seed 0) straight to a Batcher on the real checkpoint, and times the
whole queue twice: with the fair batches, and with batches of the oldest request's task only (the
earlier server's rule, which gives no bound on a small request's wait).
"""
from __future__ import annotations

import argparse
import os
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights")
    p.add_argument("--requests", type=int, default=256)
    args = p.parse_args()
    import minadapt
    from minadapt.serve import batcher as B

    model = minadapt.load_model(args.weights)
    for name, n in (("sst2", 2), ("topic", 5)):
        model.add_adapter(name, bottleneck=64)
        model.add_classification_head(name, num_labels=n)
    data = Path(os.environ.get("MINADAPT_DATA", REPO / "data")) / "sst2" / "dev.tsv"
    pool = [line.split("\t")[0].strip() for line in data.read_text().splitlines()[1:]]
    pool = sorted(pool, key=lambda t: (len(t.split()), t))[:300]
    rng = np.random.default_rng(0)
    reqs = []
    for _ in range(args.requests):
        n, start = int(rng.choice((1, 2, 4))), int(rng.integers(0, len(pool) - 4))
        reqs.append((("sst2", "topic")[int(rng.integers(0, 2))], pool[start:start + n]))
    fair = B.take_batch

    def oldest_task_only(waiting, cap):
        task = waiting[0].task
        same = deque(r for r in waiting if r.task == task)
        rows = fair(same, cap)
        for r in list(waiting):
            if r.task == task and r not in same:
                waiting.remove(r)
        return rows

    texts = sum(len(t) for _, t in reqs)
    for label, take in (("fair, tasks mixed", fair), ("oldest task only", oldest_task_only)):
        done, left = threading.Event(), [len(reqs)]

        def on_done(outputs, error):
            left[0] -= 1
            if not left[0]:
                done.set()

        B.take_batch = take
        b = B.Batcher(model, 64)
        t0 = time.perf_counter()
        for task, t in reqs:
            b.submit(B.Request(task, t, None, on_done))
        done.wait(600)
        seconds = time.perf_counter() - t0
        b.stop()
        B.take_batch = fair
        print(f"{label}: {texts} texts in {seconds:.1f} s ({texts / seconds:.1f} texts/s), "
              f"{b.batches} batches, {b.forwards} forwards", flush=True)


if __name__ == "__main__":
    main()
