"""GELU as nn/gelu.py computes it, the exact (erf) form (the maths is its docstring, which `help()`
shows below this one), in cache-sized row blocks.

Phi(x) comes from numerics.normal_cdf: exact in float64, a float32-accurate rational approximation
of erf in float32 (NumPy has no erf of its own). The tanh form is another function (nn/gelu_tanh.py),
not a stand-in: BERT's checkpoint was trained with erf. The cache is the reference's.
"""
from __future__ import annotations

import math

import numpy as np

from ..backend import get_xp
from ..nn import gelu as reference
from ..nn.gelu import GeluCache
from .numerics import blockwise, normal_cdf

__doc__ += "\n" + reference.__doc__

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def forward(x, grad=True):
    """As nn.gelu.forward: x of any shape -> (y, GeluCache), y of the same shape.
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
    """As nn.gelu.backward: dy like x -> (dx,)."""
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
