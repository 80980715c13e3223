"""Multi-head scaled dot-product self-attention with a padding mask.

Dimensions: B = batch, Tq = query tokens, Tk = key tokens, H = hidden, nh = heads,
hs = H / nh = head size. In the encoder Tq = Tk = T.

Forward, per head (q, k, v already projected; `split_heads` makes (B, nh, T, hs)):
    s = q k^T / sqrt(hs) + m        m = 0 for real keys, finfo.min for [PAD] keys
    a = softmax(s)                  over the keys
    a~ = dropout(a)
    c = a~ v                        then heads are merged back to (B, Tq, H)
Backward:
    da~ = dc v^T,   dv = a~^T dc
    da  = dropout's backward of da~
    ds  = a * (da - sum_j(da * a))          the softmax Jacobian applied to da
    dq  = ds k / sqrt(hs),   dk = ds^T q / sqrt(hs)
The mask needs no backward: it is a constant, and padded keys get a = 0, hence no gradient.
"""
from __future__ import annotations

import math
from typing import NamedTuple

from ..backend import get_xp
from . import dropout


class AttentionCache(NamedTuple):
    q: object  # (B, nh, Tq, hs)
    k: object  # (B, nh, Tk, hs)
    v: object  # (B, nh, Tk, hs)
    a: object  # (B, nh, Tq, Tk) attention probabilities, before dropout
    a_drop: object  # the same after dropout (a itself at evaluation)
    drop: object  # dropout's cache


def mask_bias(attention_mask, dtype):
    """(B, Tk) of 1 (token) / 0 ([PAD]) -> (B, 1, 1, Tk) additive bias: 0 or the dtype's minimum.
    (The minimum rather than -inf: a row of only [PAD] keys still gives numbers, not NaN.)"""
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


def softmax(s):
    """Along the last axis. Subtracting each row's maximum changes nothing mathematically and keeps
    exp from overflowing."""
    e = get_xp(s).exp(s - s.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def forward(q, k, v, bias, n_heads, p_drop=0.0, rng=None, train=False):
    """Inputs: q (B, Tq, H), k and v (B, Tk, H), bias (B, 1, 1, Tk) from `mask_bias`.
    Returns (context (B, Tq, H), cache)."""
    q, k, v = (split_heads(t, n_heads) for t in (q, k, v))  # (B, nh, T, hs)
    s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(q.shape[-1]) + bias  # (B, nh, Tq, Tk)
    a = softmax(s)
    a_drop, drop = dropout.forward(a, p_drop, rng, train)
    c = a_drop @ v  # (B, nh, Tq, hs)
    return merge_heads(c), AttentionCache(q, k, v, a, a_drop, drop)


def backward(dc, cache):
    """Inputs: dc (B, Tq, H). Returns (dq (B, Tq, H), dk (B, Tk, H), dv (B, Tk, H))."""
    q, k, v, a, a_drop, drop = cache
    dc = split_heads(dc, q.shape[1])  # (B, nh, Tq, hs)
    # in the forward pass this was: c = a~ v
    da_drop = dc @ v.transpose(0, 1, 3, 2)  # (B, nh, Tq, Tk)
    dv = a_drop.transpose(0, 1, 3, 2) @ dc
    # a~ = dropout(a)
    (da,) = dropout.backward(da_drop, drop)
    # a = softmax(s): ds_i = a_i (da_i - sum_j da_j a_j)
    ds = a * (da - (da * a).sum(axis=-1, keepdims=True))
    # s = q k^T / sqrt(hs) + m
    scale = 1.0 / math.sqrt(q.shape[-1])
    dq = ds @ k * scale
    dk = ds.transpose(0, 1, 3, 2) @ q * scale
    return merge_heads(dq), merge_heads(dk), merge_heads(dv)
