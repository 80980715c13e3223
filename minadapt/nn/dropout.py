"""Inverted dropout.

Forward (training):  keep each element with probability 1 - p, scale kept ones by 1 / (1 - p),
                     so the expected output equals the input and evaluation needs no rescaling.
Backward:            dx = dy * mask / (1 - p)   (the same mask: dropout is linear in x)
At evaluation (train=False) or p = 0 it is the identity and the cache is None.
"""
from __future__ import annotations

from typing import NamedTuple

from ..backend import get_xp


class DropoutCache(NamedTuple):
    scale: object  # mask / (1 - p): 0 where dropped, 1/(1-p) where kept


def make_scale(shape, p, rng, dtype, xp):
    """The mask already multiplied by 1/(1-p); `rng` is a numpy (or cupy) Generator."""
    keep = rng.random(shape, dtype=dtype) >= p
    return keep.astype(dtype) * dtype.type(1.0 / (1.0 - p))


def forward(x, p, rng=None, train=True, scale=None):
    """Inputs: x any shape, p drop probability, rng a Generator; `scale` may be given (tests).
    Returns (y, cache)."""
    if (not train or p == 0.0) and scale is None:
        return x, None
    if scale is None:
        scale = make_scale(x.shape, p, rng, x.dtype, get_xp(x))
    return x * scale, DropoutCache(scale)


def backward(dy, cache):
    """Returns (dx,)."""
    if cache is None:
        return (dy,)
    return (dy * cache.scale,)
