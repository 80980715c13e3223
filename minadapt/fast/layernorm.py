"""Layer normalisation over the last (hidden) axis.

Dimensions: N = rows (batch x tokens), H = hidden size.

Forward:   mu = mean(x),  var = mean((x - mu)^2),  rstd = 1 / sqrt(var + eps)
           xhat = (x - mu) rstd,   y = gamma * xhat + beta
Backward:  with g = dy * gamma (the gradient reaching xhat),
           dx = rstd * (g - mean(g) - xhat * mean(g * xhat))
           dgamma = sum over rows of dy * xhat,   dbeta = sum over rows of dy
The two means are what is left of differentiating mu and var: every x_j moves every y_i of its row.

Both directions run in cache-sized row blocks (`backend.blockwise`): about eight
passes over a row each, which would otherwise each stream the whole (N, H) array through memory.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..backend import get_xp
from .numerics import blockwise, row_sums


class LayerNormCache(NamedTuple):
    xhat: object  # (..., H) normalised input
    rstd: object  # (..., 1) 1 / standard deviation of each row
    gamma: object  # (H,)
    trainable: bool


def forward(x, gamma, beta, eps=1e-12, trainable=False):
    """Inputs: x (..., H), gamma (H,), beta (H,). Returns (y (..., H), cache)."""
    xp = get_xp(x)
    if xp is not np:  # on a GPU: the same maths in one kernel (cuda_kernels.py says why)
        from .cuda_kernels import layernorm_forward

        y, xhat, rstd = layernorm_forward(x, gamma, beta, eps)
        return y, LayerNormCache(xhat, rstd, gamma, trainable)
    rows = x.reshape(-1, x.shape[-1])
    xhat, y = xp.empty_like(rows), xp.empty_like(rows)
    rstd = xp.empty((rows.shape[0], 1), x.dtype)

    inv_h = 1.0 / x.shape[-1]

    def block(x, xhat, rstd, y):
        mu = row_sums(x, inv_h)  # the row means (row_sums: BLAS beats NumPy's mean on short rows)
        xp.subtract(x, mu, out=xhat)
        var = row_sums(xhat * xhat, inv_h)
        xp.sqrt(var + eps, out=rstd)
        xp.divide(1.0, rstd, out=rstd)
        xhat *= rstd
        xp.multiply(xhat, gamma, out=y)
        y += beta

    blockwise(block, rows, xhat, rstd, y)
    return y.reshape(x.shape), LayerNormCache(xhat.reshape(x.shape), rstd, gamma, trainable)


def backward(dy, cache):
    """Inputs: dy (..., H). Returns (dx, dgamma, dbeta); the last two are None when frozen."""
    xhat, rstd, gamma, trainable = cache
    xp = get_xp(dy)
    dy_rows, xhat_rows = dy.reshape(-1, dy.shape[-1]), xhat.reshape(-1, dy.shape[-1])

    inv_h = 1.0 / dy.shape[-1]

    def block(dy, xhat, rstd, dx):
        # in the forward pass this was: y = gamma * xhat + beta
        xp.multiply(dy, gamma, out=dx)  # g, the gradient reaching xhat
        # and before it: xhat = (x - mu) * rstd, with mu and rstd functions of the whole row
        g_xhat = row_sums(dx * xhat, inv_h)  # mean(g * xhat) of each row
        dx -= row_sums(dx, inv_h)  # - mean(g)
        dx -= xhat * g_xhat
        dx *= rstd

    if xp is np:
        dx = xp.empty_like(dy_rows)
        blockwise(block, dy_rows, xhat_rows, rstd, dx)
    else:  # on a GPU: the same maths in one kernel
        from .cuda_kernels import layernorm_backward

        dx = layernorm_backward(dy_rows, xhat_rows, rstd, gamma)
    dx = dx.reshape(dy.shape)
    if not trainable:
        return dx, None, None
    dgamma = (dy_rows * xhat_rows).sum(axis=0)
    dbeta = dy_rows.sum(axis=0)
    return dx, dgamma, dbeta
