"""GELU, the exact (erf) form that BERT's checkpoint was trained with.

Forward:   y = x Phi(x),   Phi(x) = (1 + erf(x / sqrt 2)) / 2     (the standard normal CDF)
Backward:  dy/dx = Phi(x) + x phi(x),   phi(x) = exp(-x^2 / 2) / sqrt(2 pi)   (its density)

The tanh approximation 0.5 x (1 + tanh(sqrt(2/pi)(x + 0.044715 x^3))) differs by up to ~1e-3 and
would drift away from the checkpoint: we keep erf (backend.normal_cdf: exact in float64, a
float32-accurate rational approximation of erf in float32).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from ..backend import get_xp
from .numerics import blockwise, normal_cdf

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


class GeluCache(NamedTuple):
    x: object  # the input
    cdf: object  # Phi(x), reused by backward


def forward(x, grad=True):
    """Inputs: x of any shape. Returns (y, cache), y of the same shape.
    grad=False: no backward follows (inference), so the cache is None and Phi(x) is computed in
    y's own memory instead of an array of its own (one large array fewer to write and read)."""
    xp = get_xp(x)
    if xp is not np:  # on a GPU: the same maths in one kernel (cuda_kernels.py says why)
        from .cuda_kernels import elementwise

        y, cdf = elementwise("gelu_forward", x)
        return y, GeluCache(x, cdf) if grad else None
    rows = lambda t: t.reshape(-1, t.shape[-1])  # noqa: E731
    y = xp.empty_like(x)
    if not grad:
        blockwise(_forward_block_no_cache, rows(x), rows(y))
        return y, None
    cdf = xp.empty_like(x)
    blockwise(_forward_block, rows(x), rows(y), rows(cdf))  # cache-sized row blocks
    return y, GeluCache(x, cdf)


def _forward_block(x, y, cdf):
    normal_cdf(x, out=cdf)  # Phi(x)
    get_xp(x).multiply(x, cdf, out=y)


def _forward_block_no_cache(x, y):
    normal_cdf(x, out=y)  # Phi(x), then y = x Phi(x) in place
    y *= x


def backward(dy, cache):
    """Inputs: dy like x. Returns (dx,)."""
    x, cdf = cache
    if get_xp(dy) is not np:
        from .cuda_kernels import elementwise

        return (elementwise("gelu_backward", x, cdf, dy),)
    dx = get_xp(dy).empty_like(dy)
    rows = lambda t: t.reshape(-1, t.shape[-1])  # noqa: E731
    blockwise(_backward_block, rows(x), rows(cdf), rows(dy), rows(dx))
    return (dx,)


def _backward_block(x, cdf, dy, dx):
    xp = get_xp(x)
    # in the forward pass this was: y = x Phi(x)  ->  dy/dx = Phi(x) + x phi(x)
    xp.multiply(x, x, out=dx)
    dx *= -0.5
    xp.exp(dx, out=dx)
    dx *= x.dtype.type(_INV_SQRT_2PI)  # phi(x)
    dx *= x
    dx += cdf
    dx *= dy
