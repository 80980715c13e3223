"""Inference cost of every method against the bare backbone, merged and not, at several batch sizes.

    python benchmarks/method_latency.py [--weights DIR] [--batches 1,8,32] [--length 64]
                                        [--rounds 5] [--steps 3]
                                        [--json benchmarks/results/method_latency.json]

Each method that `compare` runs (Method.compare: a method added later appears by itself;
AdapterFusion, which needs trained adapters to fuse, is left out) gets a task with its default
options and a 2-label head, and answers the same batch (random ordinary wordpieces, no padding,
float32, the inference ops: the last layer for [CLS] only where the method allows it):
  probe          the bare backbone + the head: every ratio is to it;
  houlsby, ...   the method unmerged: its extra work in every layer;
  lora merged    a method that can be merged (Method.merge: LoRA, IA3) also answers as
                 model.merged(name): W' = W + (alpha/r) B A, or IA3's scales folded into the rows and
                 columns of W. The bare backbone's code with other numbers in W: it should cost what
                 the probe costs, and its logits are checked against the unmerged ones;
  prompt         n virtual tokens: every sequence is n rows longer in every layer;
  prefix         n more keys and values in every attention;
  full           full fine-tuning, on a model of its own (it changes the backbone): the probe's cost.
Prompt and prefix tuning cannot be merged: their cost is the price of the method.

Every trainable number of a method but its head gets a small random value (LoRA's B and the
up-projections start at zero, IA3 at one): nothing is an exact no-op, so merging changes W.
One process; each round times every (method, batch) in a rotating order (`--steps` calls each,
the median kept); the table gives the median over rounds and each one's ratio to the probe at the
same batch, paired within rounds.
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


def models(weights, rng):
    """{label: (model, task name)}: one task per method (each on the shared model, or its own
    when it trains the backbone), and each mergeable one merged."""
    import minadapt
    from minadapt.methods import METHODS

    shared = minadapt.load_model(weights)
    out = {}
    for name, m in METHODS.items():
        if not m.compare:  # AdapterFusion needs trained adapters to fuse: mixed_batch.py times composition
            continue
        model = minadapt.load_model(weights) if m.trains_backbone else shared
        model.add_classification_head(name, num_labels=2)
        model.add_method(name, m, m.make_config(name), seed=0)
        if not m.trains_backbone:  # nothing left at an exact no-op (adapter_up, lora_B, IA3's ones)
            for k in model.trainable_names(name):
                if not k.startswith("heads."):
                    model.params[k][...] += 0.02 * rng.standard_normal(model.params[k].shape)
        out[name] = (model, name)
        if m.merge is not None:
            out[f"{name} merged"] = (model.merged(name), name)
    return out


def merge_gaps(found, inputs):
    """{"lora merged": max |merged logits - unmerged logits|, ...}: a merge must not change the answer."""
    import numpy as np

    ids, mask = inputs
    return {label: float(np.abs(m.logits(ids, mask, adapter=n)
                                - found[label.removesuffix(" merged")][0].logits(ids, mask, adapter=n)).max())
            for label, (m, n) in found.items() if label.endswith(" merged")}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", help="checkpoint folder (default: weights/all-MiniLM-L6-v2, fetched)")
    p.add_argument("--batches", default="1,8,32", help="batch sizes, comma-separated")
    p.add_argument("--length", type=int, default=64)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=3, help="timed calls per (method, batch) per round")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    import numpy as np

    from minadapt.compare import machine

    rng = np.random.default_rng(0)
    batches = [int(b) for b in args.batches.split(",")]
    inputs = {}
    for b in batches:
        ids = rng.integers(1000, 30000, size=(b, args.length))
        ids[:, 0] = 101
        inputs[b] = (ids, np.ones_like(ids))
    found = models(args.weights, rng)
    gaps = merge_gaps(found, inputs[batches[-1]])
    for label, gap in gaps.items():
        print(f"{label}: max |logits - unmerged logits| = {gap:.2e}", file=sys.stderr)
        if gap > 1e-4:  # float32 sums in another order differ by ~1e-6; a wrong merge by ~1e-2
            raise SystemExit(f"{label}: the merged model answers differently ({gap:.2e}): not timing it")
    cases = {(label, b): (lambda m=m, n=n, b=b: m.logits(*inputs[b], adapter=n))
             for label, (m, n) in found.items() for b in batches}
    for fn in cases.values():  # warm-up: first-call allocations, BLAS threads
        fn()
    rounds, order = [], list(cases)
    for r in range(args.rounds):
        order = order[1:] + order[:1]  # who goes first rotates
        rounds.append({k: median_ms(cases[k], args.steps) for k in order})
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)

    print(f"inference ms (median of {args.rounds} rounds of {args.steps} calls), length {args.length}, "
          "float32; in brackets: / probe (the bare backbone + head) at the same batch")
    print(f"{'method':>16} " + " ".join(f"{'batch ' + str(b):>18}" for b in batches))
    table = {}
    for label in found:
        cells = []
        for b in batches:
            ms = statistics.median(r[(label, b)] for r in rounds)
            ratio = statistics.median(r[(label, b)] / r[("probe", b)] for r in rounds)
            table.setdefault(label, {})[b] = {"ms": round(ms, 2), "ratio_to_probe": round(ratio, 3)}
            cells.append(f"{ms:>9.1f} ({ratio:.3f})")
        print(f"{label:>16} " + " ".join(f"{c:>18}" for c in cells))
    if args.json:
        result = {"command": "python benchmarks/method_latency.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                  "machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                  "length": args.length, "batches": batches, "table": table, "merge_gaps": gaps,
                  "rounds": [{f"{k[0]}|{k[1]}": v for k, v in r.items()} for r in rounds]}
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
