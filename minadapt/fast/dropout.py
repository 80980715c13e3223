"""Inverted dropout as nn/dropout.py defines it (the maths is its docstring, which `help()` shows
below this one), with a cheaper mask. The cache is the reference's.

On NumPy the mask is drawn as 16 random bits per element (numerics.keep_mask) rather than a float32
uniform each (benchmarks/README.md has the timing); so p is rounded to a multiple of 1/65536 (0.1
becomes 0.100006) and the scale uses that rounded p, which keeps E[y] = x exact. On CuPy: float32
uniforms, then mask and product in one kernel.
"""
from __future__ import annotations

import numpy as np

from ..backend import get_xp
from ..nn import dropout as reference
from ..nn.dropout import DropoutCache, backward  # noqa: F401  (backward is the reference's)
from .numerics import keep_mask

__doc__ += "\n" + reference.__doc__


def make_scale(shape, p, rng, dtype, xp):
    """The mask already multiplied by 1/(1-p); `rng` is a numpy (or cupy) Generator."""
    keep, p_used = keep_mask(rng, shape, p, xp)
    return xp.multiply(keep, dtype.type(1.0 / (1.0 - p_used)), dtype=dtype)


def forward(x, p, rng=None, train=True, scale=None):
    """Inputs: x any shape, p drop probability, rng a Generator; `scale` may be given (tests).
    Returns (y, cache)."""
    if (not train or p == 0.0) and scale is None:
        return x, None
    xp = get_xp(x)
    if scale is None and xp is not np:  # on a GPU: draw uniforms, then mask and scale in one kernel
        from .cuda_kernels import elementwise

        y, scale = elementwise("dropout_forward", rng.random(x.shape, dtype=xp.float32), x,
                               xp.float32(p), x.dtype.type(1.0 / (1.0 - p)))
        return y, DropoutCache(scale)
    if scale is None:
        scale = make_scale(x.shape, p, rng, x.dtype, xp)
    return x * scale, DropoutCache(scale)
