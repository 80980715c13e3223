"""Layer normalisation over the last (hidden) axis.

Dimensions: N = rows (batch x tokens), H = hidden size.

Forward:   mu = mean(x),  var = mean((x - mu)^2),  rstd = 1 / sqrt(var + eps)
           xhat = (x - mu) rstd,   y = gamma * xhat + beta
Backward:  with g = dy * gamma (the gradient reaching xhat),
           dx = rstd * (g - mean(g) - xhat * mean(g * xhat))
           dgamma = sum over rows of dy * xhat,   dbeta = sum over rows of dy
The two means are what is left of differentiating mu and var: every x_j moves every y_i of its row.
"""
from __future__ import annotations

from typing import NamedTuple

from ..backend import get_xp


class LayerNormCache(NamedTuple):
    xhat: object  # (..., H) normalised input
    rstd: object  # (..., 1) 1 / standard deviation of each row
    gamma: object  # (H,)
    trainable: bool


def forward(x, gamma, beta, eps=1e-12, trainable=False):
    """Inputs: x (..., H), gamma (H,), beta (H,). Returns (y (..., H), cache)."""
    xp = get_xp(x)
    xhat = x - x.mean(axis=-1, keepdims=True)
    var = (xhat * xhat).mean(axis=-1, keepdims=True)
    rstd = 1.0 / xp.sqrt(var + eps)
    xhat *= rstd
    y = xhat * gamma
    y += beta
    return y, LayerNormCache(xhat, rstd, gamma, trainable)


def backward(dy, cache):
    """Inputs: dy (..., H). Returns (dx, dgamma, dbeta); the last two are None when frozen."""
    xhat, rstd, gamma, trainable = cache
    # in the forward pass this was: y = gamma * xhat + beta
    g = dy * gamma
    # and before it: xhat = (x - mu) * rstd, with mu and rstd functions of the whole row
    dx = g - g.mean(axis=-1, keepdims=True)
    dx -= xhat * (g * xhat).mean(axis=-1, keepdims=True)
    dx *= rstd
    if not trainable:
        return dx, None, None
    rows = dy.reshape(-1, dy.shape[-1])
    dgamma = (rows * xhat.reshape(rows.shape)).sum(axis=0)
    dbeta = rows.sum(axis=0)
    return dx, dgamma, dbeta
