"""Finite-difference gradient checking: the test every hand-written backward must pass.

For a function y = f(x) and an upstream gradient dy, the backward pass claims to compute
    dx = d/dx sum(f(x) * dy).
Centred differences estimate the same thing one element at a time,
    dx_i ~ (g(x + h e_i) - g(x - h e_i)) / 2h,   g(x) = sum(f(x) * dy),
with error O(h^2) from truncation and O(eps |g| / h) from rounding. The two balance near
h ~ eps^(1/3), about 6e-6 in float64 (eps ~ 2.2e-16), where the error is about eps^(2/3) ~ 4e-11;
h = 1e-6 sits close to that balance, with errors around 1e-10, far below any real mistake: a
flipped sign or a missing term shows up as a relative error near 1.
"""
from __future__ import annotations

import numpy as np

from .backend import get_xp


def numerical_grad(f, x, dy, h=1e-6):
    """Centred-difference estimate of d sum(f(x) * dy) / dx.

    Inputs: f, a function of x alone (close over everything else); x, a float64 array that is
    perturbed in place and restored; dy, an array shaped like f(x). Returns an array shaped like x.
    """
    xp = get_xp(x)
    grad = xp.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)  # views: editing flat edits x
    for i in range(flat.size):
        old = flat[i].item()
        flat[i] = old + h
        plus = float((f(x) * dy).sum())
        flat[i] = old - h
        minus = float((f(x) * dy).sum())
        flat[i] = old
        gflat[i] = (plus - minus) / (2.0 * h)
    return grad


def rel_error(a, b):
    """max |a - b| / max(|a| + |b|): scale-free, and 0 only when the two agree everywhere."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(1e-8, float(np.max(np.abs(a) + np.abs(b)))))


def check(f, x, dy, analytic, h=1e-6):
    """Relative error between an analytic gradient and the centred-difference one."""
    return rel_error(analytic, numerical_grad(f, x, dy, h))
