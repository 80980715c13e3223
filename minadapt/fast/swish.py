"""Swish / SiLU as nn/swish.py computes it (the maths is its docstring, which `help()` shows below
this one), in one CUDA kernel each way on a GPU. The cache is the reference's.
"""
from __future__ import annotations

import numpy as np

from ..backend import get_xp
from ..nn import swish as reference
from ..nn.swish import SwishCache

__doc__ += "\n" + reference.__doc__


def forward(x):
    """As nn.swish.forward: x of any shape -> (y, SwishCache)."""
    xp = get_xp(x)
    if xp is not np:  # on a GPU: one kernel instead of five (cuda_kernels.py says why)
        from .cuda_kernels import elementwise

        y, s = elementwise("swish_forward", x)
        return y, SwishCache(x, s)
    s = 1.0 / (1.0 + xp.exp(-x))
    return x * s, SwishCache(x, s)


def backward(dy, cache):
    """As nn.swish.backward: returns (dx,)."""
    x, s = cache
    if get_xp(dy) is not np:
        from .cuda_kernels import elementwise

        return (elementwise("swish_backward", x, s, dy),)
    # in the forward pass this was: y = x s  ->  dy/dx = s + x s (1 - s)
    return (dy * (s * (1.0 + x * (1.0 - s))),)
