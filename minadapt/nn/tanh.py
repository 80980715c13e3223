"""tanh, used by the classification head.

Forward:   y = tanh(x)
Backward:  dy/dx = 1 - y^2     (so the cache keeps the output, not the input)
"""
from __future__ import annotations

from typing import NamedTuple

from ..backend import get_xp


class TanhCache(NamedTuple):
    y: object


def forward(x):
    """Inputs: x of any shape. Returns (y, cache)."""
    y = get_xp(x).tanh(x)
    return y, TanhCache(y)


def backward(dy, cache):
    """Returns (dx,)."""
    y = cache.y
    return (dy * (1.0 - y * y),)
