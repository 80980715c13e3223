"""GELU, the exact (erf) form that BERT's checkpoint was trained with.

Forward:   y = x Phi(x),   Phi(x) = (1 + erf(x / sqrt 2)) / 2     (the standard normal CDF)
Backward:  dy/dx = Phi(x) + x phi(x),   phi(x) = exp(-x^2 / 2) / sqrt(2 pi)   (its density)

The tanh approximation 0.5 x (1 + tanh(sqrt(2/pi)(x + 0.044715 x^3))) differs by up to ~1e-3 and
would drift away from the checkpoint: we keep erf (backend.erf: exact in float64, a float32-accurate
rational approximation in float32).
"""
from __future__ import annotations

import math
from typing import NamedTuple

from ..backend import erf, get_xp

_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


class GeluCache(NamedTuple):
    x: object  # the input
    cdf: object  # Phi(x), reused by backward


def forward(x):
    """Inputs: x of any shape. Returns (y, cache), y of the same shape."""
    cdf = erf(x * x.dtype.type(_INV_SQRT2))
    cdf += 1.0
    cdf *= 0.5
    return x * cdf, GeluCache(x, cdf)


def backward(dy, cache):
    """Inputs: dy like x. Returns (dx,)."""
    xp = get_xp(dy)
    x, cdf = cache
    # in the forward pass this was: y = x Phi(x)  ->  dy/dx = Phi(x) + x phi(x)
    pdf = x * x
    pdf *= -0.5
    xp.exp(pdf, out=pdf)
    pdf *= x.dtype.type(_INV_SQRT_2PI)
    pdf *= x
    pdf += cdf
    pdf *= dy
    return (pdf,)
