"""Swish / SiLU, the default adapter non-linearity (AdapterHub's "swish").

Forward:   y = x sigmoid(x)
Backward:  dy/dx = s + x s (1 - s),  s = sigmoid(x)
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..backend import get_xp


class SwishCache(NamedTuple):
    x: object
    s: object  # sigmoid(x)


def forward(x):
    """Inputs: x of any shape. Returns (y, cache)."""
    xp = get_xp(x)
    if xp is not np:  # on a GPU: one kernel instead of five (cuda_kernels.py says why)
        from .cuda_kernels import elementwise

        y, s = elementwise("swish_forward", x)
        return y, SwishCache(x, s)
    s = 1.0 / (1.0 + xp.exp(-x))
    return x * s, SwishCache(x, s)


def backward(dy, cache):
    """Returns (dx,)."""
    x, s = cache
    if get_xp(dy) is not np:
        from .cuda_kernels import elementwise

        return (elementwise("swish_backward", x, s, dy),)
    # in the forward pass this was: y = x s  ->  dy/dx = s + x s (1 - s)
    return (dy * (s * (1.0 + x * (1.0 - s))),)
