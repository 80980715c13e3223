"""A training step's time with Houlsby adapters in the top K layers only, against every layer.

    python benchmarks/depth_step.py [--weights DIR] [--depths 6,3,2,1] [--batch 32] [--length 128]
                                    [--rounds 3] [--steps 2] [--json FILE]

One process, one model, a task per depth (`adapter_layers=K`, m = 64, a 5-label head); a step is
`loss_and_grads` (forward, loss, backward: it stops at the lowest layer with an adapter) on the
same random batch. Each round times every depth in a rotating order (`--steps` calls each, the
median kept); the table gives the median over rounds and each depth's ratio to every layer's,
paired within rounds.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from method_latency import median_ms


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", help="checkpoint folder (default: weights/all-MiniLM-L6-v2, fetched)")
    p.add_argument("--depths", default="6,3,2,1")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--length", type=int, default=128)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--json")
    args = p.parse_args(argv)
    import numpy as np

    import minadapt
    from minadapt.compare import machine

    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 30000, size=(args.batch, args.length))
    ids[:, 0] = 101
    mask, labels = np.ones_like(ids), rng.integers(0, 5, size=args.batch)
    model = minadapt.load_model(args.weights)
    depths = [int(k) for k in args.depths.split(",")]
    for k in depths:
        model.add_adapter(f"top{k}", adapter_layers=k)
        model.add_classification_head(f"top{k}", num_labels=5)
    cases = {k: (lambda k=k: model.loss_and_grads(ids, mask, None, labels, adapter=f"top{k}",
                                                  train=True)) for k in depths}
    for fn in cases.values():
        fn()
    rounds, order = [], list(cases)
    for r in range(args.rounds):
        order = order[1:] + order[:1]
        rounds.append({k: median_ms(cases[k], args.steps) for k in order})
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    full = max(depths)
    print(f"training step ms, batch {args.batch} x length {args.length}, Houlsby m = 64 in the top K "
          f"layers (median of {args.rounds} rounds of {args.steps}); ratio to K = {full}")
    table = {}
    for k in depths:
        ms = statistics.median(r[k] for r in rounds)
        ratio = statistics.median(r[k] / r[full] for r in rounds)
        table[k] = {"ms": round(ms, 1), "ratio": round(ratio, 3)}
        print(f"  K = {k}: {ms:8.1f} ms  {ratio:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "command": "python benchmarks/depth_step.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "batch": args.batch, "length": args.length, "table": table, "rounds": rounds}, indent=1) + "\n")


if __name__ == "__main__":
    main()
