"""Inference time of a merged LoRA against the bare backbone and the unmerged LoRA.

    python benchmarks/merge_lora.py [--weights DIR] [--batch 32] [--length 64] [--rounds 7]
                                    [--json benchmarks/results/merge_lora.json]

Three models answer the same batch (random ordinary wordpieces, no padding, float32):
  bare      the checkpoint with a 2-label head, no adapter (a probe);
  lora      the same with a rank-8 LoRA on query and value, unmerged: each target runs
            x W^T + (alpha/r) (x A^T) B^T, two extra thin products per target and layer;
  merged    model.merge_lora("lora"): W' = W + (alpha/r) B A folded into the weights once.
The merged model runs the bare model's code with other numbers in W, so it should cost what the bare
one costs, and the unmerged one a little more. Each round times all three in a rotating order
(`--steps` calls each, the median kept); the table shows the median over rounds and each model's
ratio to the bare one, paired within rounds. The merged logits are checked against the unmerged ones.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path


def median_ms(fn, steps: int) -> float:
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        times.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(times)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", help="checkpoint folder (default: weights/all-MiniLM-L6-v2, fetched)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--length", type=int, default=64)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=5, help="timed calls per model per round")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    import numpy as np

    import minadapt
    from minadapt.compare import machine

    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 30000, size=(args.batch, args.length))
    ids[:, 0] = 101
    mask = np.ones_like(ids)

    model = minadapt.load_model(args.weights)
    model.add_probe("bare")
    model.add_lora("lora", r=args.rank, alpha=2.0 * args.rank, dropout=0.0)
    model.add_classification_head("lora", num_labels=2)
    # LoRA starts with B = 0 (an exact no-op); give B values so that the merge changes W.
    for name in model.trainable_names("lora"):
        if "lora_B" in name:
            model.params[name][...] = 0.02 * rng.standard_normal(model.params[name].shape)
    merged = model.merge_lora("lora")
    gap = float(np.abs(merged.logits(ids, mask, adapter="lora") - model.logits(ids, mask, adapter="lora")).max())

    runs = {"bare": lambda: model.logits(ids, mask, adapter="bare"),
            "lora": lambda: model.logits(ids, mask, adapter="lora"),
            "merged": lambda: merged.logits(ids, mask, adapter="lora")}
    for fn in runs.values():  # warm-up: first-call allocations, BLAS threads
        fn()
    rounds = []
    order = list(runs)
    for r in range(args.rounds):
        order = order[1:] + order[:1]  # who goes first rotates
        rounds.append({k: median_ms(runs[k], args.steps) for k in order})
        print(f"round {r + 1}/{args.rounds}: " + "  ".join(f"{k} {rounds[-1][k]:.1f} ms" for k in runs),
              file=sys.stderr)

    print(f"inference, batch {args.batch} x length {args.length}, float32, LoRA rank {args.rank} on query "
          f"and value; median of {args.rounds} rounds of {args.steps} calls")
    print(f"{'model':>8} {'ms':>8} {'/ bare':>8}")
    table = {}
    for k in runs:
        ms = statistics.median(r[k] for r in rounds)
        ratio = statistics.median(r[k] / r["bare"] for r in rounds)
        table[k] = {"ms": round(ms, 2), "ratio_to_bare": round(ratio, 3)}
        print(f"{k:>8} {ms:>8.1f} {ratio:>8.3f}")
    print(f"merged vs unmerged logits: max |difference| {gap:.1e}")
    if args.json:
        result = {"command": "python benchmarks/merge_lora.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                  "machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                  "batch": args.batch, "length": args.length, "rank": args.rank, "rounds": rounds,
                  "table": table, "max_logit_gap": gap}
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
