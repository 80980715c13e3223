"""Linear (fully connected) layer: y = x W^T + b.

Dimensions: N = any number of leading rows (batch x tokens), D = in features, O = out features.
Weights use the checkpoint's torch layout W: (O, D), so a HuggingFace tensor loads unchanged.

Forward:   y = x W^T + b
Backward:  dx = dy W          (always: the gradient must flow on to the layers below)
           dW = dy^T x,  db = sum over rows of dy      (only when the weight is trainable)

A frozen weight needs no dW, which is half of the layer's backward FLOPs (a third of forward plus
backward), and no saved input: that is the whole reason adapter training is cheap.

The forward may be given `w_t`, a contiguous copy of W^T (D, O), for the same product. BLAS copies
("packs") its second operand into blocks before multiplying; from W.T, a transposed view, that copy
is a strided gather, and at the few hundred rows of a shard of short sentences it costs 10-25% of
the product (measured here: 66-77 against 92-97 GFLOP/s at 64 rows, 87-90 against 95-99 at 224).
Backward's dy W reads W itself, row-major as stored. So a frozen weight can be kept both ways.
"""
from __future__ import annotations

from typing import NamedTuple


class LinearCache(NamedTuple):
    x: object | None  # (N, D) input, kept only when dW is wanted
    w: object  # (O, D)


def forward(x, w, b=None, frozen=False, w_t=None):
    """Inputs: x (..., D), w (O, D), b (O,) or None; frozen=True skips saving x; w_t: None or
    a contiguous copy of w.T (D, O) (see above). Returns (y (..., O), cache)."""
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1])  # one big GEMM instead of a loop over the batch
    y = x2 @ (w.T if w_t is None else w_t)  # (N, O)
    if b is not None:
        y += b
    return y.reshape(*lead, w.shape[0]), LinearCache(None if frozen else x2, w)


def backward(dy, cache, need_dx=True):
    """Inputs: dy (..., O) and the cache. Returns (dx (..., D) or None, dw or None, db or None).
    dw and db are None for a frozen layer; dx is None when need_dx=False (nothing below needs it)."""
    x2, w = cache
    lead = dy.shape[:-1]
    dy2 = dy.reshape(-1, dy.shape[-1])  # (N, O)
    # in the forward pass this was: y = x W^T  ->  dx = dy W
    dx = (dy2 @ w).reshape(*lead, w.shape[1]) if need_dx else None
    if x2 is None:
        return dx, None, None
    dw = dy2.T @ x2  # (O, D)
    db = dy2.sum(axis=0)  # (O,)
    return dx, dw, db
