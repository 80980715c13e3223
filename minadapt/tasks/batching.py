"""Cutting a split into batches: bucketed by length for training, sorted for evaluation.

Each function returns arrays of row indices, so a caller gathers the rows and puts results back
with `out[idx] = batch_result`.
"""
from __future__ import annotations

import numpy as np


def bucketed_batches(
    lengths: np.ndarray, batch_size: int, rng: np.random.Generator, pool_batches: int = 200
) -> list[np.ndarray]:
    """One epoch of training batches: similar lengths inside a batch, random order between them.

    Each batch is padded to its longest row, and the encoder's cost grows with that padded length
    (linearly in the dense layers, quadratically in attention). A random batch of SST-2 (sentence
    lengths 3 to ~60 tokens) is mostly padding; sorting the whole set by length would remove it but
    makes every batch's content predictable and the epoch a march from short to long sentences.
    The middle way, as in fairseq and AllenNLP's bucket iterators:

      1. shuffle all indices;
      2. cut them into pools of `pool_batches * batch_size`;
      3. sort each pool by length and cut it into batches of `batch_size`;
      4. shuffle the list of batches.

    Inputs:
    - lengths: int array of shape (N,), the length of each example (tokens, or any proxy for them)
    - batch_size: rows per batch; only the last batch of the last pool may be smaller
    - rng: the generator that draws both shuffles; the same state gives the same batches
    - pool_batches: batches per pool: 1 is a plain random split, N/batch_size a global sort. The
      larger the pool, the closer neighbours in length are, so the less padding (the share of
      padding per pool size on SST-2 is in benchmarks/README.md, "Length buckets from pools of 200 batches")

    Returns a list of int arrays of indices into `lengths`; together they hold each index once.
    """
    lengths = np.asarray(lengths)
    if lengths.ndim != 1:
        raise ValueError(f"lengths must be 1-D, got shape {lengths.shape}")
    if batch_size < 1 or pool_batches < 1:
        raise ValueError(f"batch_size and pool_batches must be >= 1, got {batch_size}, {pool_batches}")
    perm = rng.permutation(len(lengths))
    pool_size = pool_batches * batch_size
    batches = []
    for start in range(0, len(perm), pool_size):
        pool = perm[start : start + pool_size]
        pool = pool[np.argsort(lengths[pool], kind="stable")]  # short to long
        batches.extend(pool[i : i + batch_size] for i in range(0, len(pool), batch_size))
    order = rng.permutation(len(batches))
    return [batches[i] for i in order]


def sequential_batches(n: int, batch_size: int, lengths: np.ndarray | None = None) -> list[np.ndarray]:
    """Batches for evaluation: every index in 0..n-1 once, in a fixed order.

    Without `lengths`, in order: [0..b-1], [b..2b-1], ... With `lengths` (shape (n,)), the indices are
    sorted by length first, so each batch pads little (the same saving as `bucketed_batches`, with
    no randomness). Either way each batch is an array of indices, so a caller puts results back in
    place with `out[idx] = batch_result`.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if lengths is None:
        order = np.arange(n)
    else:
        lengths = np.asarray(lengths)
        if lengths.shape != (n,):
            raise ValueError(f"lengths must have shape ({n},), got {lengths.shape}")
        order = np.argsort(lengths, kind="stable")
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]
