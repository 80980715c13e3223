"""GELU, the exact (erf) form that BERT's checkpoint was trained with.

Forward:   y = x Phi(x),   Phi(x) = (1 + erf(x / sqrt 2)) / 2     (the standard normal CDF)
Backward:  dy/dx = Phi(x) + x phi(x),   phi(x) = exp(-x^2 / 2) / sqrt(2 pi)   (its density)

The tanh approximation 0.5 x (1 + tanh(sqrt(2/pi)(x + 0.044715 x^3))) (nn/gelu_tanh.py) differs
from it by up to 4.7e-4 (at |x| near 2.7), which would drift away from the checkpoint, so erf it is
(backend.erf: NumPy has none).
"""
from __future__ import annotations

import math
from typing import NamedTuple

from ..backend import erf, get_xp


class GeluCache(NamedTuple):
    x: object  # the input
    cdf: object  # Phi(x), reused by backward


def forward(x):
    """Inputs: x of any shape. Returns (y, cache), y of the same shape."""
    cdf = 0.5 * (1.0 + erf(x / math.sqrt(2.0)))  # Phi(x)
    return x * cdf, GeluCache(x, cdf)


def backward(dy, cache):
    """Inputs: dy like x. Returns (dx,)."""
    xp = get_xp(dy)
    x, cdf = cache
    # in the forward pass this was: y = x Phi(x)  ->  dy/dx = Phi(x) + x phi(x)
    pdf = xp.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)  # phi(x)
    return (dy * (cdf + x * pdf),)
