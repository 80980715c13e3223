"""Swish / SiLU, the default adapter non-linearity (AdapterHub's "swish").

Forward:   y = x sigmoid(x)
Backward:  dy/dx = s + x s (1 - s),  s = sigmoid(x)
"""
from __future__ import annotations

from typing import NamedTuple

from ..backend import get_xp


class SwishCache(NamedTuple):
    x: object
    s: object  # sigmoid(x)


def forward(x):
    """Inputs: x of any shape. Returns (y, cache)."""
    s = 1.0 / (1.0 + get_xp(x).exp(-x))
    return x * s, SwishCache(x, s)


def backward(dy, cache):
    """Returns (dx,)."""
    x, s = cache
    # in the forward pass this was: y = x s  ->  dy/dx = s + x s (1 - s)
    return (dy * (s + x * s * (1.0 - s)),)
