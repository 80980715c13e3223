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


class LayerNormCache(NamedTuple):
    xhat: object  # (..., H) normalised input
    rstd: object  # (..., 1) 1 / standard deviation of each row
    gamma: object  # (H,)
    trainable: bool


def forward(x, gamma, beta, eps=1e-12, trainable=False):
    """Inputs: x (..., H), gamma (H,), beta (H,). Returns (y (..., H), cache)."""
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    rstd = 1.0 / (var + eps) ** 0.5
    xhat = (x - mu) * rstd
    return gamma * xhat + beta, LayerNormCache(xhat, rstd, gamma, trainable)


def backward(dy, cache):
    """Inputs: dy (..., H). Returns (dx, dgamma, dbeta); the last two are None when frozen."""
    xhat, rstd, gamma, trainable = cache
    # in the forward pass this was: y = gamma * xhat + beta
    g = dy * gamma  # the gradient reaching xhat
    # and before it: xhat = (x - mu) * rstd, with mu and rstd functions of the whole row
    dx = rstd * (g - g.mean(axis=-1, keepdims=True) - xhat * (g * xhat).mean(axis=-1, keepdims=True))
    if not trainable:
        return dx, None, None
    H = dy.shape[-1]
    return dx, (dy * xhat).reshape(-1, H).sum(axis=0), dy.reshape(-1, H).sum(axis=0)
