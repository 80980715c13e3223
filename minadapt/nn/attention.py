"""Multi-head scaled dot-product self-attention with a padding mask.

Dimensions: B = batch, Tq = query tokens, Tk = key tokens, H = hidden, nh = heads,
hs = H / nh = head size. Usually Tq = Tk = T; the last layer may ask for the [CLS] query alone.

Forward, per head (q, k, v already projected; `split_heads` makes (B, nh, T, hs)):
    s = q k^T / sqrt(hs) + m        m = 0 for real keys, finfo.min for [PAD] keys
    a = softmax(s)                  over the keys
    a~ = dropout(a)
    c = a~ v                        then heads are merged back to (B, Tq, H)
Backward:
    da~ = dc v^T,   dv = a~^T dc
    da  = dropout backward of da~
    ds  = a * (da - sum_j(da * a))          the softmax Jacobian applied to da
    dq  = ds k / sqrt(hs),   dk = ds^T q / sqrt(hs)
The mask needs no backward: it is a constant, and padded keys get a = 0, hence no gradient.

The elementwise work on the (B, nh, Tq, Tk) scores (scale, mask, softmax; and its backward) runs
one sentence-block at a time through `backend.blockwise`, so it stays in cache and uses every core.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from ..backend import blockwise, get_xp, stacked_matmul
from . import dropout


class AttentionCache(NamedTuple):
    q: object  # (B, nh, Tq, hs)
    k: object  # (B, nh, Tk, hs)
    v: object  # (B, nh, Tk, hs)
    a: object  # (B, nh, Tq, Tk) attention probabilities, before dropout
    a_drop: object  # the same after dropout (a itself at evaluation)
    drop: object  # dropout cache of a (None at evaluation)


def mask_bias(attention_mask, dtype):
    """(B, Tk) of 1 (token) / 0 ([PAD]) -> (B, 1, 1, Tk) additive bias: 0 or the dtype's minimum."""
    xp = get_xp(attention_mask)
    m = xp.where(attention_mask > 0, 0.0, xp.finfo(dtype).min).astype(dtype)
    return m[:, None, None, :]


def split_heads(x, n_heads):
    """(B, T, H) -> (B, nh, T, hs), a view"""
    B, T, H = x.shape
    return x.reshape(B, T, n_heads, H // n_heads).transpose(0, 2, 1, 3)


def merge_heads(x):
    """(B, nh, T, hs) -> (B, T, H), a copy"""
    B, nh, T, hs = x.shape
    return x.transpose(0, 2, 1, 3).reshape(B, T, nh * hs)


def _softmax_block(s, bias, scale):
    """In place on a block of sentences: s <- softmax(s * scale + bias) along the last axis."""
    xp = get_xp(s)
    s *= scale
    s += bias
    s -= s.max(axis=-1, keepdims=True)  # shift by the row maximum so exp never overflows
    xp.exp(s, out=s)
    s /= s.sum(axis=-1, keepdims=True)


def _softmax_dropout_block(s, bias, s_drop, drop_scale, scale, p_drop, rng):
    """Softmax in place, then dropout of the block while it is still in cache: drop_scale <- the
    mask / (1 - p), s_drop <- s * drop_scale. (The same as dropout.forward on the whole array, minus
    one trip of the (B, nh, Tq, Tk) probabilities through memory.)"""
    _softmax_block(s, bias, scale)
    dropout.make_scale(s.shape, p_drop, rng, s.dtype, get_xp(s), out=drop_scale)
    get_xp(s).multiply(s, drop_scale, out=s_drop)


def _softmax_backward_block(a, da, scale, drop_scale=None):
    """In place: da <- a * (da - sum_j da_j a_j) * scale, the gradient w.r.t. q k^T.
    With drop_scale, da first goes back through the dropout: da <- da * drop_scale."""
    if drop_scale is not None:
        da *= drop_scale
    row = (da * a).sum(axis=-1, keepdims=True)
    da -= row
    da *= a
    da *= scale


def forward(q, k, v, bias, n_heads, p_drop=0.0, rng=None, train=False):
    """Inputs: q (B, Tq, H), k and v (B, Tk, H), bias (B, 1, 1, Tk) from `mask_bias`.
    Returns (context (B, Tq, H), cache)."""
    q, k, v = (split_heads(t, n_heads) for t in (q, k, v))
    scale = q.dtype.type(1.0 / math.sqrt(q.shape[-1]))
    a = stacked_matmul(q, k.transpose(0, 1, 3, 2))  # (B, nh, Tq, Tk), the raw scores q k^T
    xp = get_xp(a)
    if xp is np and train and p_drop > 0:  # softmax, then dropout, one cache-sized block at a time
        a_drop, drop_scale = xp.empty_like(a), xp.empty_like(a)
        blockwise(lambda s, m, sd, ds: _softmax_dropout_block(s, m, sd, ds, scale, p_drop, rng),
                  a, bias, a_drop, drop_scale)
        drop = dropout.DropoutCache(drop_scale)
    else:
        if xp is np:
            blockwise(lambda s, m: _softmax_block(s, m, scale), a, bias)  # now the probabilities
        else:  # on a GPU: the same maths, one kernel
            from ..cuda_kernels import softmax_forward

            softmax_forward(a, bias, scale)
        a_drop, drop = dropout.forward(a, p_drop, rng, train)
    c = stacked_matmul(a_drop, v)  # (B, nh, Tq, hs)
    return merge_heads(c), AttentionCache(q, k, v, a, a_drop, drop)


def backward(dc, cache):
    """Inputs: dc (B, Tq, H). Returns (dq (B, Tq, H), dk (B, Tk, H), dv (B, Tk, H))."""
    q, k, v, a, a_drop, drop = cache
    dc = split_heads(dc, q.shape[1])
    scale = q.dtype.type(1.0 / math.sqrt(q.shape[-1]))
    # in the forward pass this was: c = a~ v
    dv = stacked_matmul(a_drop.transpose(0, 1, 3, 2), dc)
    da = stacked_matmul(dc, v.transpose(0, 1, 3, 2))
    # a~ = dropout(a), a = softmax(s), s = q k^T * scale + m: da becomes ds * scale, in place
    if get_xp(a) is np and drop is not None:
        blockwise(lambda a_, da_, ds_: _softmax_backward_block(a_, da_, scale, ds_), a, da, drop.scale)
    elif get_xp(a) is np:
        blockwise(lambda a_, da_: _softmax_backward_block(a_, da_, scale), a, da)
    else:  # on a GPU: the dropout's product, then one kernel
        (da,) = dropout.backward(da, drop)
        from ..cuda_kernels import softmax_backward

        softmax_backward(a, da, scale)
    # s = q k^T
    dq = stacked_matmul(da, k)
    dk = stacked_matmul(da.transpose(0, 1, 3, 2), q)
    return merge_heads(dq), merge_heads(dk), merge_heads(dv)
