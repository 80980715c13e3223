"""Inference cost of each way of adapting the backbone against the bare backbone, merged and not.

    python benchmarks/merge_lora.py [--weights DIR] [--batches 1,32] [--length 64] [--rounds 7]
                                    [--virtual-tokens 20] [--json benchmarks/results/family_cost.json]

Every model answers the same batch (random ordinary wordpieces, no padding, float32) with a 2-label
head, at each batch size:
  bare          the checkpoint, no adapter (a probe);
  lora          a rank-8 LoRA on query and value, unmerged: two extra thin products per target and layer;
  lora merged   model.merged("lora"): W' = W + (alpha/r) B A, folded into the weights once;
  ia3           IA3's four scales per layer (k, v, and the inputs of both output projections), unmerged;
  ia3 merged    model.merged("ia3"): the scales folded into the rows and columns of W;
  prompt        prompt tuning with n virtual tokens: every sequence is n rows longer in every layer;
  prefix        prefix tuning with n virtual tokens: every attention has n more keys and values.
A merged model runs the bare model's code with other numbers in W, so it should cost what the bare
one costs. Prompt and prefix tuning cannot be merged: their cost is the price of the method. Each
round times all models in a rotating order (`--steps` calls each, the median kept); the table shows
the median over rounds and each model's ratio to the bare one, paired within rounds. Merged logits are
checked against the unmerged ones.
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


def build(args, rng):
    """One model holding every task, and the merged models: {row name: (model, task)}, and the
    merged-vs-unmerged logit gaps."""
    import numpy as np

    import minadapt

    model = minadapt.load_model(args.weights)
    model.add_probe("bare")
    for name, method, options in (("lora", "lora", dict(r=args.rank, alpha=2.0 * args.rank, dropout=0.0)),
                                  ("ia3", "ia3", {}),
                                  ("prompt", "prompt", dict(virtual_tokens=args.virtual_tokens)),
                                  ("prefix", "prefix", dict(virtual_tokens=args.virtual_tokens))):
        model.add_classification_head(name, num_labels=2)
        model.add(name, method=method, **options)
    # LoRA starts with B = 0 and IA3 at one (exact no-ops): give them values so that merging changes W
    for k in model.trainable_names("lora"):
        if "lora_B" in k:
            model.params[k][...] = 0.02 * rng.standard_normal(model.params[k].shape)
    for k in model.trainable_names("ia3"):
        if ".ia3_l." in k:
            model.params[k][...] = 1 + 0.1 * rng.standard_normal(model.params[k].shape)
    merged = {m: model.merged(m) for m in ("lora", "ia3")}
    rows = {"bare": (model, "bare"), "lora": (model, "lora"), "lora merged": (merged["lora"], "lora"),
            "ia3": (model, "ia3"), "ia3 merged": (merged["ia3"], "ia3"), "prompt": (model, "prompt"),
            "prefix": (model, "prefix")}
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", help="checkpoint folder (default: weights/all-MiniLM-L6-v2, fetched)")
    p.add_argument("--batches", default="1,32", help="batch sizes, comma-separated (default: 1,32)")
    p.add_argument("--length", type=int, default=64)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--virtual-tokens", type=int, default=20, help="n of prompt and prefix tuning")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=5, help="timed calls per model per round")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    import numpy as np

    from minadapt.compare import machine

    rng = np.random.default_rng(0)
    rows = build(args, rng)
    results, gaps = {}, {}
    for batch in (int(b) for b in args.batches.split(",")):
        ids = rng.integers(1000, 30000, size=(batch, args.length))
        ids[:, 0] = 101
        mask = np.ones_like(ids)
        runs = {k: (lambda m=m, t=t: m.logits(ids, mask, adapter=t)) for k, (m, t) in rows.items()}
        for m in ("lora", "ia3"):
            gaps[f"{m} batch {batch}"] = float(np.abs(runs[m + " merged"]() - runs[m]()).max())
        for fn in runs.values():  # warm-up: first-call allocations, BLAS threads
            fn()
        rounds = []
        order = list(runs)
        for r in range(args.rounds):
            order = order[1:] + order[:1]  # who goes first rotates
            rounds.append({k: median_ms(runs[k], args.steps) for k in order})
            print(f"batch {batch} round {r + 1}/{args.rounds}: "
                  + "  ".join(f"{k} {rounds[-1][k]:.1f} ms" for k in runs), file=sys.stderr)
        table = {}
        for k in runs:
            table[k] = {"ms": round(statistics.median(r[k] for r in rounds), 2),
                        "ratio_to_bare": round(statistics.median(r[k] / r["bare"] for r in rounds), 3)}
        results[batch] = {"rounds": rounds, "table": table}

    print(f"inference (Model.logits), length {args.length}, float32; LoRA rank {args.rank} on query and value; "
          f"prompt and prefix with {args.virtual_tokens} virtual tokens; median of {args.rounds} rounds of "
          f"{args.steps} calls")
    batches = list(results)
    print(f"{'model':>12} " + " ".join(f"{'ms b' + str(b):>10} {'/ bare':>7}" for b in batches))
    for k in rows:
        print(f"{k:>12} " + " ".join(f"{results[b]['table'][k]['ms']:>10.1f} "
                                     f"{results[b]['table'][k]['ratio_to_bare']:>7.3f}" for b in batches))
    for k, g in gaps.items():
        print(f"merged vs unmerged logits, {k}: max |difference| {g:.1e}")
    if args.json:
        result = {"command": "python benchmarks/merge_lora.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                  "machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                  "length": args.length, "rank": args.rank, "virtual_tokens": args.virtual_tokens,
                  "batches": {str(b): r for b, r in results.items()}, "max_logit_gap": gaps}
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
