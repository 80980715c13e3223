"""Inverted dropout.

Forward (training):  keep each element with probability 1 - p, scale kept ones by 1 / (1 - p),
                     so the expected output equals the input and evaluation needs no rescaling.
Backward:            dx = dy * mask / (1 - p)   (the same mask: dropout is linear in x)
At evaluation (train=False) or p = 0 it is the identity and the cache is None.

On NumPy the mask is drawn as 16 random bits per element (backend.keep_mask), about three times as
fast as a float32 uniform draw; so p is rounded to a multiple of 1/65536 (0.1 becomes 0.100006) and
the scale uses that rounded p, which keeps E[y] = x exact. On CuPy: float32 uniforms, then mask and
product in one kernel.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..backend import get_xp
from .numerics import keep_mask


class DropoutCache(NamedTuple):
    scale: object  # mask / (1 - p): 0 where dropped, 1/(1-p) where kept


def make_scale(shape, p, rng, dtype, xp):
    """The mask already multiplied by 1/(1-p); `rng` is a numpy (or cupy) Generator."""
    keep, p_used = keep_mask(rng, shape, p, xp)
    return xp.multiply(keep, dtype.type(1.0 / (1.0 - p_used)), dtype=dtype)


def forward(x, p, rng=None, train=True, scale=None):
    """Inputs: x any shape, p drop probability, rng a Generator; `scale` may be given (tests).
    Returns (y, cache)."""
    if (not train or p == 0.0) and scale is None:
        return x, None
    xp = get_xp(x)
    if scale is None and xp is not np:  # on a GPU: draw uniforms, then mask and scale in one kernel
        from .cuda_kernels import elementwise

        y, scale = elementwise("dropout_forward", rng.random(x.shape, dtype=xp.float32), x,
                               xp.float32(p), x.dtype.type(1.0 / (1.0 - p)))
        return y, DropoutCache(scale)
    if scale is None:
        scale = make_scale(x.shape, p, rng, x.dtype, xp)
    return x * scale, DropoutCache(scale)


def backward(dy, cache):
    """Returns (dx,)."""
    if cache is None:
        return (dy,)
    return (dy * cache.scale,)
