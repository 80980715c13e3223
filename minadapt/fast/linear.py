"""The linear layer with a transposed copy of each frozen weight (nn/linear.py is the reference).

y = x W^T + b computes the same numbers from W^T, a view, or from a contiguous copy of W^T; but
BLAS first copies ("packs") its second operand into blocks, and from a transposed view that copy is
a strided gather, slow enough to show at the few hundred rows of a shard of short sentences
(benchmarks/README.md). A frozen weight is a constant, so its contiguous W^T is made once and kept.
Backward's dy W reads W itself, row-major as stored, and is unchanged. On CuPy, cuBLAS reads a
transposed operand at no cost, so no copy is made there.
"""
from __future__ import annotations

import numpy as np

from ..backend import get_xp
from ..nn import linear as reference
from ..nn.linear import LinearCache, backward  # noqa: F401  (backward is the reference's)


class Linear:
    """`forward` and `backward` as nn.linear's, keeping W^T copies of frozen weights.

    A copy is keyed by where its weight's numbers are: address, shape and strides, so that a view
    made afresh on every call (the last layer's W_q = Wqkv[:H]) finds its copy. The entry holds the
    weight, so that memory cannot be freed and reused by another array while the key stands. A weight asked for
    with frozen=False is training: its copy, if any, is dropped, and a later frozen call makes a new
    one from the trained values. A frozen weight changed in place by other means would leave a stale
    copy: frozen weights are constants, so nothing does."""

    def __init__(self):
        self._transposed = {}  # key(W) -> (W, contiguous W^T)

    def forward(self, x, w, b=None, frozen=False):
        """As nn.linear.forward; returns (y (..., O), LinearCache)."""
        if get_xp(w) is not np:
            return reference.forward(x, w, b, frozen)
        key = (w.__array_interface__["data"][0], w.shape, w.strides, w.dtype.str)
        if not frozen:
            self._transposed.pop(key, None)
            return reference.forward(x, w, b, frozen)
        kept = self._transposed.get(key)
        if kept is None:
            kept = self._transposed[key] = (w, np.ascontiguousarray(w.T))
        x2 = x.reshape(-1, x.shape[-1])
        y = x2 @ kept[1]  # (N, O)
        if b is not None:
            y += b  # in place: y is new
        return y.reshape(*x.shape[:-1], w.shape[0]), LinearCache(None, w)

    backward = staticmethod(backward)

    @property
    def copies(self) -> int:
        """How many W^T copies are held (tests)."""
        return len(self._transposed)
