"""ReLU.

Forward:   y = max(x, 0)
Backward:  dy/dx = 1 where x > 0, else 0
"""
from __future__ import annotations

from typing import NamedTuple


class ReluCache(NamedTuple):
    positive: object  # boolean mask x > 0


def forward(x):
    """Inputs: x of any shape. Returns (y, cache)."""
    positive = x > 0
    return x * positive, ReluCache(positive)


def backward(dy, cache):
    """Returns (dx,). A fresh array: the upstream gradient is never edited in place."""
    return (dy * cache.positive,)
