"""Attention for a few queries (the last layer's [CLS]) that never forms the keys and values.

Dimensions: B = batch, Tq = queries (1 for [CLS]), Tk = tokens, H = hidden, nh = heads,
hs = H / nh. Weights in torch layout (out, in); head h owns rows h*hs ... (h+1)*hs - 1 of Wk, Wv.

When only [CLS] leaves the last layer (classification), its attention has one query per head, yet
the usual route projects every token to a key and a value, k = x Wk^T + bk and v = x Wv^T + bv:
2 Tk H^2 multiply-adds a sentence for what one query then reads. Matrix products associate, so the
weights can go to the query's side instead. Per head, with q'_h = q_h / sqrt(hs):

    s_h = q'_h k_h^T = (q'_h Wk_h) x^T + q'_h . bk_h  = u_h x^T    + (one number for all keys)
    c_h = a~_h v_h   = (a~_h x) Wv_h^T + sum(a~_h) bv_h = z_h Wv_h^T + sigma_h bv_h

Softmax ignores a number added to every score of a row, so bk drops out; sigma_h = 1 unless dropout
removed some probabilities. Cost: 2 Tq H^2 + 2 nh Tq Tk H multiply-adds instead of 2 Tk H^2 (plus
the usual 2 Tq Tk H): with one query, 12 heads, H = 384 and Tk = 64, a twentieth.

Backward, the forward read bottom-up; x receives gradient twice, through the context and through
the scores:
    dz_h = dc_h Wv_h,            dsigma_h = dc_h . bv_h
    da~_h = dz_h x^T + dsigma_h,  dx  = sum_h a~_h^T dz_h
    ds_h = softmax and dropout backward of da~_h (attention.scores_gradient)
    du_h = ds_h x,               dx += sum_h ds_h^T u_h
    dq_h = du_h Wk_h^T / sqrt(hs)
The weights are frozen on this route (bert.py takes the usual one when Q, K, V train), so they get
no gradient. Adding dsigma to every da~ of a row changes nothing without dropout (softmax's backward
removes a per-row constant), so it is always added.
"""
from __future__ import annotations

import math
from typing import NamedTuple

from .numerics import row_sums
from .attention import (merge_heads, probabilities, scaled_query_heads, scores_gradient,
                        split_heads)


class ClsAttentionCache(NamedTuple):
    q: object  # (B, nh, Tq, hs), already multiplied by 1/sqrt(hs)
    u: object  # (B, nh, Tq, H), q'_h Wk_h: the query moved to the input's side
    x: object  # (B, Tk, H), the layer's input
    w_k: object  # (H, H)
    w_v: object  # (H, H)
    b_v: object  # (H,)
    a: object  # (B, nh, Tq, Tk) attention probabilities
    a_drop: object  # after dropout (a itself at evaluation)
    drop: object  # dropout cache on a GPU (see attention.py)


def forward(q, x, w_k, w_v, b_v, bias, n_heads, p_drop=0.0, rng=None, train=False):
    """Inputs: q (B, Tq, H) the projected queries, x (B, Tk, H) the input the keys and values would
    be projected from, w_k, w_v (H, H) and b_v (H,) their weights, bias (B, 1, 1, Tk) from
    attention.mask_bias. Returns (context (B, Tq, H), cache): the same as attention.forward(q,
    x Wk^T + bk, x Wv^T + bv, ...), with the same dropout masks drawn."""
    B, Tq, H = q.shape
    Tk, hs = x.shape[1], H // n_heads
    q_h = scaled_query_heads(q, n_heads)
    u = q_h @ w_k.reshape(n_heads, hs, H)  # (B, nh, Tq, H)
    # all heads' queries of a sentence against its tokens in one product
    s = (u.reshape(B, n_heads * Tq, H) @ x.transpose(0, 2, 1)).reshape(B, n_heads, Tq, Tk)
    a, a_drop, drop = probabilities(s, bias, p_drop, rng, train)
    z = (a_drop.reshape(B, n_heads * Tq, Tk) @ x).reshape(B, n_heads, Tq, H)
    c = z @ w_v.reshape(n_heads, hs, H).transpose(0, 2, 1)  # (B, nh, Tq, hs)
    b_v_h = b_v.reshape(n_heads, 1, hs)
    c += b_v_h if a_drop is a else row_sums(a_drop) * b_v_h  # sigma_h bv_h
    return merge_heads(c), ClsAttentionCache(q_h, u, x, w_k, w_v, b_v, a, a_drop, drop)


def backward(dc, cache):
    """Inputs: dc (B, Tq, H). Returns (dq (B, Tq, H), dx (B, Tk, H))."""
    q, u, x, w_k, w_v, b_v, a, a_drop, drop = cache
    B, nh, Tq, hs = q.shape
    Tk, H = x.shape[1:]
    dc = split_heads(dc, nh)  # (B, nh, Tq, hs)
    # c_h = z_h Wv_h^T + sigma_h bv_h
    dz = dc @ w_v.reshape(nh, hs, H)  # (B, nh, Tq, H)
    dsigma = row_sums(dc * b_v.reshape(nh, 1, hs))  # (B, nh, Tq, 1)
    # z_h = a~_h x: gradient to a~ and to x (summed over heads: the products run over nh Tq rows)
    dz = dz.reshape(B, nh * Tq, H)
    da = (dz @ x.transpose(0, 2, 1)).reshape(B, nh, Tq, Tk)
    da += dsigma
    dx = a_drop.reshape(B, nh * Tq, Tk).transpose(0, 2, 1) @ dz  # (B, Tk, H)
    # a~ = dropout(softmax(s)): da becomes ds, in place
    ds = scores_gradient(da, a, a_drop, drop).reshape(B, nh * Tq, Tk)
    # s_h = u_h x^T
    du = (ds @ x).reshape(B, nh, Tq, H)
    dx += ds.transpose(0, 2, 1) @ u.reshape(B, nh * Tq, H)
    # u_h = q'_h Wk_h, q'_h = q_h / sqrt(hs)
    dq = du @ w_k.reshape(nh, hs, H).transpose(0, 2, 1)  # (B, nh, Tq, hs)
    dq *= q.dtype.type(1.0 / math.sqrt(hs))
    return merge_heads(dq), dx
