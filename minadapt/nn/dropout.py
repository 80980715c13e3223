"""Inverted dropout.

Forward (training):  keep each element with probability 1 - p, scale kept ones by 1 / (1 - p),
                     so the expected output equals the input and evaluation needs no rescaling.
Backward:            dx = dy * mask / (1 - p)   (the same mask: dropout is linear in x)
At evaluation (train=False) or p = 0 it is the identity and the cache is None.
"""
from __future__ import annotations

from typing import NamedTuple


class DropoutCache(NamedTuple):
    scale: object  # mask / (1 - p): 0 where dropped, 1/(1-p) where kept


def forward(x, p, rng=None, train=True):
    """Inputs: x any shape, p the drop probability, rng a NumPy (or CuPy) Generator.
    Returns (y, cache)."""
    if not train or p == 0.0:
        return x, None
    keep = rng.random(x.shape) >= p  # True with probability 1 - p
    scale = keep.astype(x.dtype) / (1.0 - p)
    return x * scale, DropoutCache(scale)


def backward(dy, cache):
    """Returns (dx,)."""
    if cache is None:
        return (dy,)
    return (dy * cache.scale,)
