"""Layer normalisation as nn/layernorm.py computes it, in cache-sized row blocks (the maths,
forward and backward, is nn/layernorm.py's docstring, which `help()` shows below this one).

Both directions run in cache-sized row blocks (`numerics.blockwise`): about eight passes over a
row each, which would otherwise each stream the whole (N, H) array through memory. Each row's
means are BLAS matrix-vector products (`numerics.row_sums`). The cache is the reference's.
"""
from __future__ import annotations

import numpy as np

from ..backend import get_xp
from ..nn import layernorm as reference
from ..nn.layernorm import LayerNormCache
from .numerics import blockwise, row_sums

__doc__ += "\n" + reference.__doc__


def forward(x, gamma, beta, eps=1e-12, trainable=False):
    """As nn.layernorm.forward: x (..., H), gamma (H,), beta (H,) -> (y (..., H), LayerNormCache)."""
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
    """As nn.layernorm.backward: dy (..., H) -> (dx, dgamma, dbeta), the last two None when frozen."""
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
