"""A/B: the same training and inference steps timed on two checkouts of minadapt, interleaved.

    python benchmarks/ab.py OLD_CHECKOUT NEW_CHECKOUT [--lengths 16,64] [--rounds 3] [--steps 5]

Each round runs one subprocess per checkout (PYTHONPATH=that checkout), alternating, so that the
host's drift over minutes hits both alike. A subprocess loads all-MiniLM-L6-v2 in float32, adds a
Houlsby adapter (bottleneck 64) and a 2-label head, and times, at batch 32 and each length,
`--steps` training steps (forward, loss, backward; no optimiser) and inference steps (logits),
after two of each as warm-up, spreading the batch over the cores as `minadapt train` does (the
checkout's own way: Model-internal shards before the redesign, parallel.DataParallel after,
parallel.runner now).
Prints each round's medians and, per length, new / old of the medians over rounds.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, os, sys, time
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "1")
import numpy as np
import minadapt
try:
    from minadapt.fast.numerics import keep_freed_memory
    keep_freed_memory()
except ImportError:
    pass  # before the redesign: done at import
lengths, steps = json.loads(sys.argv[1]), int(sys.argv[2])
model = minadapt.load_model(dtype="float32")
model.add_adapter("a", bottleneck=64)
model.add_classification_head("a", num_labels=2)
try:
    from minadapt.parallel import runner as make_runner  # the training loop's runner
    runner = make_runner(model, "a")
except ImportError:
    try:
        from minadapt.parallel import DataParallel  # the redesign, before parallel/ was a package
        runner = DataParallel(model, adapter="a")
    except ImportError:
        runner = model  # before the redesign the Model cut batches over the cores itself
rng = np.random.default_rng(0)
out = {}
for L in lengths:
    ids = rng.integers(1000, 20000, size=(32, L)); ids[:, 0] = 101; ids[:, -1] = 102
    mask, types, labels = np.ones_like(ids), np.zeros_like(ids), rng.integers(0, 2, 32)
    def train():
        runner.loss_and_grads(ids, mask, types, labels, train=True)
    def infer():
        runner.logits(ids, mask, types)
    for name, fn in (("train", train), ("infer", infer)):
        for _ in range(2):
            fn()
        times = []
        for _ in range(steps):
            t = time.perf_counter(); fn(); times.append(time.perf_counter() - t)
        out[f"{name}@{L}"] = 1000 * float(np.median(times))
print(json.dumps(out))
"""


def run(checkout, lengths, steps):
    env = dict(os.environ, PYTHONPATH=os.path.abspath(checkout))
    r = subprocess.run([sys.executable, "-c", CHILD, json.dumps(lengths), str(steps)], env=env,
                       capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        sys.exit(f"{checkout}: {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("old")
    p.add_argument("new")
    p.add_argument("--lengths", default="16,64")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--json", help="write every round's numbers here")
    args = p.parse_args()
    lengths = [int(x) for x in args.lengths.split(",")]
    rounds = []
    for r in range(args.rounds):
        pair = {}
        for label, checkout in (("old", args.old), ("new", args.new)) if r % 2 == 0 else \
                (("new", args.new), ("old", args.old)):
            pair[label] = run(checkout, lengths, args.steps)
        rounds.append(pair)
        print(f"round {r + 1}: " + "  ".join(f"{k} old {pair['old'][k]:.0f} new {pair['new'][k]:.0f} ms"
                                             for k in pair["old"]), flush=True)
    import statistics

    print(f"{'step':>10} {'old ms':>8} {'new ms':>8} {'new/old':>8}")
    for k in rounds[0]["old"]:
        old = statistics.median(r["old"][k] for r in rounds)
        new = statistics.median(r["new"][k] for r in rounds)
        print(f"{k:>10} {old:>8.1f} {new:>8.1f} {new / old:>8.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"lengths": lengths, "steps": args.steps, "rounds": rounds}, f, indent=1)


if __name__ == "__main__":
    main()
