"""GELU in its tanh form, the one google-research/bert (and so adapter-bert) computes.

Forward:   y = x g(x),   g(x) = (1 + tanh(t)) / 2,   t = c (x + 0.044715 x^3),   c = sqrt(2/pi)
Backward:  dy/dx = g(x) + x (1 - tanh(t)^2) c (1 + 3 * 0.044715 x^2) / 2

It approximates the exact x Phi(x) (nn/gelu.py) to within 4.7e-4 (the largest gap, near |x| = 2.7): fine for an adapter that is
trained with it (adapter-bert's, AdapterHub's "gelu_new"), wrong for BERT's own feed-forward layers,
whose checkpoint was trained with the erf form.
"""
from __future__ import annotations

import math
from typing import NamedTuple

from ..backend import get_xp

C = math.sqrt(2.0 / math.pi)
K = 0.044715


class GeluTanhCache(NamedTuple):
    x: object  # the input
    th: object  # tanh(t), reused by backward


def forward(x):
    """Inputs: x of any shape. Returns (y, cache), y of the same shape."""
    th = get_xp(x).tanh(C * (x + K * x * x * x))
    return 0.5 * x * (1.0 + th), GeluTanhCache(x, th)


def backward(dy, cache):
    """Inputs: dy like x. Returns (dx,)."""
    x, th = cache
    # in the forward pass this was: y = x (1 + tanh(t)) / 2,  t = c (x + k x^3)
    #   ->  dy/dx = (1 + tanh t) / 2 + x (1 - tanh^2 t) c (1 + 3 k x^2) / 2
    dt = C * (1.0 + 3.0 * K * x * x)
    return (dy * (0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * dt),)
