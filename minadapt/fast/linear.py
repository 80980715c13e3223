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

    A copy is keyed by its weight array (which it holds, so the key stays valid). A weight asked for
    with frozen=False is training: its copy, if any, is dropped, and a later frozen call makes a new
    one from the trained values. A frozen weight changed in place by other means would leave a stale
    copy: frozen weights are constants, so nothing does."""

    def __init__(self):
        self._transposed = {}  # id(W) -> (W, contiguous W^T)

    def forward(self, x, w, b=None, frozen=False):
        """As nn.linear.forward; returns (y (..., O), LinearCache)."""
        if not frozen or get_xp(w) is not np:
            self._transposed.pop(id(w), None)
            return reference.forward(x, w, b, frozen)
        kept = self._transposed.get(id(w))
        if kept is None or kept[0] is not w:
            kept = self._transposed[id(w)] = (w, np.ascontiguousarray(w.T))
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
