"""Linear (fully connected) layer: y = x W^T + b.

Dimensions: N = any number of leading rows (batch x tokens), D = in features, O = out features.
Weights use the checkpoint's torch layout W: (O, D), so a HuggingFace tensor loads unchanged.

Forward:   y = x W^T + b
Backward:  dx = dy W          (always: the gradient must flow on to the layers below)
           dW = dy^T x,  db = sum over rows of dy      (only when the weight is trainable)

A frozen weight needs no dW, which is half of the layer's backward FLOPs (a third of forward plus
backward), and no saved input: that is the whole reason adapter training is cheap.
"""
from __future__ import annotations

from typing import NamedTuple


class LinearCache(NamedTuple):
    x: object | None  # (N, D) input, kept only when dW is wanted
    w: object  # (O, D)


def forward(x, w, b=None, frozen=False):
    """Inputs: x (..., D), w (O, D), b (O,) or None; frozen=True: no dW will be asked for, so x is
    not kept. Returns (y (..., O), cache)."""
    x2 = x.reshape(-1, x.shape[-1])  # (N, D): one big product instead of a loop over the batch
    y = x2 @ w.T  # (N, O)
    if b is not None:
        y = y + b
    return y.reshape(*x.shape[:-1], w.shape[0]), LinearCache(None if frozen else x2, w)


def backward(dy, cache, need_dx=True):
    """Inputs: dy (..., O) and the cache. Returns (dx (..., D) or None, dw or None, db or None).
    dw and db are None for a frozen layer; dx is None when need_dx=False (nothing below needs it)."""
    x2, w = cache
    dy2 = dy.reshape(-1, dy.shape[-1])  # (N, O)
    # in the forward pass this was: y = x W^T  ->  dx = dy W
    dx = (dy2 @ w).reshape(*dy.shape[:-1], w.shape[1]) if need_dx else None
    if x2 is None:
        return dx, None, None
    # and y_n = sum_d x_nd W_od + b_o  ->  dW = dy^T x (summed over rows), db = sum of dy's rows
    return dx, dy2.T @ x2, dy2.sum(axis=0)
