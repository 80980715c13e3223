"""`minadapt bench`: how long one adapter-training step and one inference step take on this machine.

What is timed, per sequence length L (batch 32, every row L real tokens, float32), as `minadapt
train` runs it (train.py): the batch cut over the cores by parallel.DataParallel, and

    train   dp.loss_and_grads (forward with dropout, loss, backward) + clip_grad_norm + AdamW.step
    infer   dp.logits (dropout off, [CLS]-only last layer)

`warmup` untimed steps, then `steps` timed ones; the median is printed, with [min-max].

The full harness (PyTorch + AdapterHub side by side, a profile per op, the BLAS ceiling of the
step's own matrix products, an SST-2 epoch estimate, JSON output) lives outside the package, in a
source checkout: `python benchmarks/harness.py --help`. It builds its model and steps with the
functions below, so both time the same thing.
"""
from __future__ import annotations

import statistics
import time

CLS_ID = 101  # [CLS] in BERT's uncased vocabulary
MAX_GRAD_NORM = 1.0  # as in minadapt train
HARNESS = ("the PyTorch comparison, a profile per op and the BLAS ceilings are "
           "`python benchmarks/harness.py` from a source checkout")


def random_batch(B, L, vocab_size, num_labels=2, seed=0):
    """Token ids from the ordinary vocabulary ([1000, 30000), [CLS] first), mask all ones, labels."""
    import numpy as np

    rng = np.random.default_rng(seed)
    hi = min(30000, vocab_size)
    lo = min(1000, hi // 2)
    ids = rng.integers(lo, hi, size=(B, L), dtype=np.int64)
    ids[:, 0] = CLS_ID if CLS_ID < vocab_size else 1
    mask = np.ones((B, L), np.int64)
    labels = rng.integers(0, num_labels, size=B, dtype=np.int64)
    return ids, mask, labels


def build(weights=None, device=None, ops="fast", bottleneck=64):
    """The benchmarked model (Houlsby adapters of `bottleneck`, swish, + a 2-label head, task
    "sst2"), its DataParallel and its AdamW, as `minadapt train` makes them."""
    from .model import load_model
    from .optim import AdamW
    from .parallel.cores import DataParallel

    model = load_model(weights, dtype="float32", device=device, ops=ops)
    model.add_adapter("sst2", bottleneck=bottleneck)
    model.add_classification_head("sst2")
    opt = AdamW({k: model.params[k] for k in model.trainable_names("sst2")}, lr=1e-3)
    return model, DataParallel(model, adapter="sst2"), opt


def train_step(model, dp, opt, ids, mask, labels):
    """One training step; returns (loss, seconds in loss_and_grads, seconds in clip + AdamW)."""
    from .backend import synchronize
    from .optim import clip_grad_norm

    t0 = time.perf_counter()
    loss, _, grads = dp.loss_and_grads(ids, mask, None, labels, train=True)
    synchronize(loss)
    t1 = time.perf_counter()
    clip_grad_norm(grads, MAX_GRAD_NORM)
    opt.step(model.params, grads)
    synchronize(next(iter(model.params.values())))
    return loss, t1 - t0, time.perf_counter() - t1


def infer_step(dp, ids, mask):
    """One inference step (logits of the batch); returns seconds."""
    from .backend import synchronize

    t0 = time.perf_counter()
    synchronize(dp.logits(ids, mask))
    return time.perf_counter() - t0


def _ms(seconds: list[float]) -> str:
    ms = [s * 1e3 for s in seconds]
    return f"{statistics.median(ms):8.1f} [{min(ms):.0f}-{max(ms):.0f}]"


def main(args) -> int:
    from .errors import ConfigError
    from .fast.numerics import keep_freed_memory

    keep_freed_memory()  # as `minadapt train` runs: each step reuses the last one's pages
    model, dp, opt = build(args.weights, args.device, args.ops)
    B = args.batch_size
    print(f"minadapt bench: batch {B}, float32, ops={args.ops}, {dp.n} shard(s), "
          f"{args.warmup} warm-up + {args.steps} timed steps; median [min-max]")
    print(f"{'L':>4}  {'train ms/step':>22}  {'sentences/s':>11}  {'infer ms/step':>22}  {'sentences/s':>11}")
    try:
        for L in args.lengths:
            cfg = model.cfg
            if L > cfg.max_tokens:  # RoBERTa's table starts pad_token_id + 1 rows in
                raise ConfigError(f"L={L} exceeds the model's max_position_embeddings "
                                  f"({cfg.max_position_embeddings}" + (f", {cfg.max_tokens} tokens after "
                                  "its position offset" if cfg.position_offset else "") + ")")
            ids, mask, labels = random_batch(B, L, model.cfg.vocab_size)
            train = [sum(train_step(model, dp, opt, ids, mask, labels)[1:])
                     for _ in range(args.warmup + args.steps)][args.warmup:]
            infer = [infer_step(dp, ids, mask) for _ in range(args.warmup + args.steps)][args.warmup:]
            print(f"{L:4d}  {_ms(train):>22}  {B / statistics.median(train):11.1f}  "
                  f"{_ms(infer):>22}  {B / statistics.median(infer):11.1f}")
    finally:
        dp.close()
    print(f"({HARNESS})")
    return 0
