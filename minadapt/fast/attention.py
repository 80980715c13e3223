"""Attention as nn/attention.py computes it (the maths is there), arranged to run faster.

Dimensions: B = batch, Tq = query tokens, Tk = key tokens, H = hidden, nh = heads,
hs = H / nh = head size. Usually Tq = Tk = T; cls_attention.py asks for the [CLS] query alone.

What changes against the reference:
- Dropout and softmax backward fold into one step that needs no mask: a * mask / (1 - p) is a~,
  so with t = da~ * a~,   ds = t - a * sum_j t_j.
- The elementwise work on the (B, nh, Tq, Tk) scores (mask, softmax; and its backward) runs one
  sentence-block at a time through `numerics.blockwise`, so it stays in cache; softmax picks a
  cheap shift (see `_softmax_block`).
- Layout: the per-head operands are copied into contiguous arrays, q as (B, nh, Tq, hs) and k
  already transposed, (B, nh, hs, Tk), because OpenBLAS multiplies many small matrices faster when
  they are contiguous than as strided views of the fused Q|K|V output, and slower when the second
  one is a transposed view (A @ B^T); so backward copies k and v^T too (benchmarks/README.md has
  the measurements). The copy of q also applies 1/sqrt(hs), so the larger (Tq, Tk) scores never
  need a scaling pass, forward or backward.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from ..backend import get_xp
from ..row_generators import RowGenerators
from ..nn.attention import mask_bias, merge_heads, split_heads  # noqa: F401
from . import dropout
from .numerics import blockwise, keep_mask, row_sums


class AttentionCache(NamedTuple):
    q: object  # (B, nh, Tq, hs), already multiplied by 1/sqrt(hs)
    k_t: object  # (B, nh, hs, Tk), k transposed
    v: object  # (B, nh, Tk, hs)
    a: object  # (B, nh, Tq, Tk) attention probabilities, before dropout
    a_drop: object  # the same after dropout (a itself at evaluation)
    drop: object  # dropout cache of a on a GPU (None at evaluation, and always on NumPy)


# Over the many short rows of the scores (64 keys, say), NumPy's row reductions cost more than the
# arithmetic, while the maximum over each head's whole (Tq, Tk) matrix, and the row sums as the
# matrix-vector product s @ 1 (numerics.row_sums), are cheap. The softmax below uses those two.
_FAR_BELOW = 60.0  # exp(-60) ~ 1e-26 is still a normal float32: nothing that matters underflows


def _softmax_block(s, bias):
    """In place on a block of sentences: s <- softmax(s + bias) along the last axis."""
    xp = get_xp(s)
    if bias.any():  # some key in the block is [PAD]; a block of full sentences skips this pass
        s += bias
    # softmax(s) = softmax(s - c) for any c; c only has to keep exp(s - c) in range. The usual c,
    # each row's maximum, is slow to find; each head's maximum is fast and just as good unless some
    # row's own maximum lies so far below it that the row's exps underflow. A row's maximum is at
    # least its score for key 0 ([CLS]), so when every row's first score is within _FAR_BELOW of c,
    # all is well; otherwise (a padded key 0, or scores never seen in practice) use the rows' maxima.
    # And when no head's maximum is above _FAR_BELOW and no row's first score below -_FAR_BELOW,
    # c = 0 is just as good: no exp overflows, no row's largest underflows, and the pass s - c is
    # saved (a broadcast pass over these short rows costs more than a plain one: benchmarks/README.md,
    # "The softmax skips two broadcast passes"). Trained BERTs' scores
    # sit within +-20, so this is the usual case.
    c = s.max(axis=(-2, -1), keepdims=True)  # (..., 1, 1)
    first = s[..., :1]
    if c.max() > _FAR_BELOW or first.min() < -_FAR_BELOW:
        if (c - first).max() > _FAR_BELOW:
            c = s.max(axis=-1, keepdims=True)
        s -= c
    xp.exp(s, out=s)
    s /= row_sums(s)


def _softmax_dropout_block(s, bias, s_drop, p_drop, rng):
    """Softmax in place, then dropout of the block while it is still in cache: s_drop <- s * mask
    / (1 - p), the same masks and numbers as dropout.forward (keep_mask). Backward needs no mask
    (see the docstring), so none is kept."""
    xp = get_xp(s)
    _softmax_block(s, bias)
    keep, p_used = keep_mask(rng, s.shape, p_drop, xp)
    xp.multiply(s, keep, out=s_drop)
    s_drop *= s.dtype.type(1.0 / (1.0 - p_used))


def _softmax_backward_block(a, a_drop, da):
    """In place: da (the gradient w.r.t. a~ = dropout(a), or a itself) <- the gradient w.r.t. the
    scores, through dropout and softmax at once: with t = da * a~, ds = t - a * sum_j t_j."""
    da *= a_drop  # t
    da -= a * row_sums(da)


def scaled_query_heads(q, n_heads):
    """(B, Tq, H) -> q / sqrt(hs) as a contiguous (B, nh, Tq, hs) array: the copy and the scaling
    in one pass, so the larger (Tq, Tk) scores never need a scaling pass."""
    B, Tq, H = q.shape
    hs = H // n_heads
    return get_xp(q).multiply(split_heads(q, n_heads), q.dtype.type(1.0 / math.sqrt(hs)),
                              out=get_xp(q).empty((B, n_heads, Tq, hs), q.dtype))


def forward(q, k, v, bias, n_heads, p_drop=0.0, rng=None, train=False):
    """Inputs: q (B, Tq, H), k and v (B, Tk, H), bias (B, 1, 1, Tk) from `mask_bias`.
    Returns (context (B, Tq, H), cache)."""
    xp = get_xp(q)
    # contiguous per-head copies (see "Layout" above); the scale rides along with q's copy
    q_h = scaled_query_heads(q, n_heads)
    k_t = xp.ascontiguousarray(split_heads(k, n_heads).transpose(0, 1, 3, 2))
    v_h = xp.ascontiguousarray(split_heads(v, n_heads))
    a, a_drop, drop = probabilities(q_h @ k_t, bias, p_drop, rng, train)  # from q k^T / sqrt(hs)
    c = a_drop @ v_h  # (B, nh, Tq, hs)
    return merge_heads(c), AttentionCache(q_h, k_t, v_h, a, a_drop, drop)


def probabilities(s, bias, p_drop=0.0, rng=None, train=False):
    """The scaled scores s (B, nh, Tq, Tk), overwritten, -> (a, a~, drop): a = softmax(s + bias),
    a~ = dropout(a) (a itself at evaluation), drop = what `scores_gradient` needs of the dropout."""
    xp = get_xp(s)
    if xp is np and train and p_drop > 0:  # softmax, then dropout, one cache-sized block at a time
        a_drop = xp.empty_like(s)
        if isinstance(rng, RowGenerators):  # one generator per sentence: sliced with the block
            blockwise(lambda s, m, sd, r: _softmax_dropout_block(s, m, sd, p_drop, r), s, bias,
                      a_drop, rng)
        else:
            blockwise(lambda s, m, sd: _softmax_dropout_block(s, m, sd, p_drop, rng), s, bias, a_drop)
        return s, a_drop, None  # backward needs a and a_drop only
    if xp is np:
        blockwise(_softmax_block, s, bias)  # now the probabilities
    else:  # on a GPU: the same maths, one kernel
        from .cuda_kernels import softmax_forward

        softmax_forward(s, bias, 1.0)
    a_drop, drop = dropout.forward(s, p_drop, rng, train)
    return s, a_drop, drop


def scores_gradient(da, a, a_drop, drop):
    """In place: da, the gradient w.r.t. a~ = dropout(softmax(s)), becomes the gradient w.r.t. s.
    Returns it."""
    if get_xp(da) is np:
        blockwise(_softmax_backward_block, a, a_drop, da)
        return da
    (da,) = dropout.backward(da, drop)  # on a GPU: the dropout's product, then one kernel
    from .cuda_kernels import softmax_backward

    softmax_backward(a, da, 1.0)
    return da


def backward(dc, cache):
    """Inputs: dc (B, Tq, H). Returns (dq (B, Tq, H), dk (B, Tk, H), dv (B, Tk, H))."""
    q, k_t, v, a, a_drop, drop = cache
    xp = get_xp(dc)
    dc = split_heads(dc, q.shape[1])
    # in the forward pass this was: c = a~ v
    dv = a_drop.transpose(0, 1, 3, 2) @ dc
    da = dc @ xp.ascontiguousarray(v.transpose(0, 1, 3, 2))  # (see "Layout")
    # a~ = dropout(a), a = softmax(s), s = q k^T / sqrt(hs) + m: da becomes ds, in place
    da = scores_gradient(da, a, a_drop, drop)
    # s = (q / sqrt(hs)) k^T, with the cached q already scaled:
    #   dk = ds^T (q / sqrt(hs)),   dq = (ds k) / sqrt(hs)
    dk = da.transpose(0, 1, 3, 2) @ q
    dq = da @ xp.ascontiguousarray(k_t.transpose(0, 1, 3, 2))
    dq *= q.dtype.type(1.0 / math.sqrt(q.shape[-1]))
    return merge_heads(dq), merge_heads(dk), merge_heads(dv)
