"""AdapterFusion (Pfeiffer et al., 2021, "AdapterFusion: Non-Destructive Task Composition for
Transfer Learning"): attention over N frozen adapters' outputs, at one adapter site.

Dimensions: R = rows (batch x tokens, any leading shape), N = adapters fused, H = hidden.

Forward (AdapterHub's BertFusion with its default "dynamic" config):
    Q   = x Wq^T + bq                 (R, H)      the query reads the sub-layer's output x
    K_n = u_n Wk^T + bk               (R, N, H)   keys and values read the adapters' outputs
    V_n = u_n Wv^T                    (R, N, H)   u_n = A_n(x) (up-projection, no skip); no bias
    s_n = Q . K_n                     (R, N)      one score per adapter (no 1/sqrt(H) scaling)
    p   = softmax(dropout(s))         (R, N)      over the adapters
    y   = sum_n p_n V_n + r           (R, H)      r: the adapter residual (the site's skip)
Backward:
    dr  = dy;  dV_n = p_n dy;  dp_n = dy . V_n
    ds  = p * (dp - sum_n p_n dp_n)                (softmax's Jacobian), then dropout's mask
    dQ  = sum_n ds_n K_n;   dK_n = ds_n Q
    dx  = dQ Wq;   du_n = dK_n Wk + dV_n Wv
    dWq = dQ^T x, dbq = sum dQ;  dWk = sum_n dK_n^T u_n, dbk = sum dK;  dWv = sum_n dV_n^T u_n

Init (AdapterHub): Wq, Wk ~ N(0, 0.02^2) with zero biases (BERT's init); Wv = I + 1e-6 off the
diagonal ("value_initialized"), so at step 0 the fusion returns a p-weighted mix of the adapters'
own outputs. The "static" config has no value matrix (wv=None: V_n = u_n). AdapterHub's trainer
also pulls Wv towards I with 0.01 ||I - Wv||^2 ("regularization": `regularization`).
AdapterHub's temperature schedule (T from 50 down to 1 over the calls) is off by default and is
left out; so is `residual_before`, off by default.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..backend import get_xp
from . import dropout as default_dropout, linear

KEYS = ("query.weight", "query.bias", "key.weight", "key.bias", "value.weight")


class FusionCache(NamedTuple):
    q: object  # linear cache of the query projection
    k: object  # linear cache of the key projection
    v: object | None  # linear cache of the value projection (None: static fusion, V = u)
    Q: object  # (R, H)
    K: object  # (R, N, H)
    V: object  # (R, N, H)
    p: object  # (R, N) the attention over the adapters
    drop: object  # dropout cache of the scores


def init_params(hidden, rng, dtype, value=True):
    """AdapterHub's init: Wq, Wk ~ N(0, 0.02^2), biases 0, Wv = I + 1e-6 off the diagonal."""
    params = {
        "query.weight": (rng.standard_normal((hidden, hidden)) * 0.02).astype(dtype),
        "query.bias": np.zeros(hidden, dtype),
        "key.weight": (rng.standard_normal((hidden, hidden)) * 0.02).astype(dtype),
        "key.bias": np.zeros(hidden, dtype),
    }
    if value:
        wv = np.full((hidden, hidden), 1e-6)
        np.fill_diagonal(wv, 1.0)
        params["value.weight"] = wv.astype(dtype)
    return params


def forward(x, u, r, wq, bq, wk, bk, wv=None, p_drop=0.0, rng=None, train=False, dropout=None,
            frozen=False):
    """Inputs: x (..., H) the query's input, u (..., N, H) the N adapters' outputs, r (..., H) the
    residual; wq, wk, wv (H, H), bq, bk (H,); wv=None: static fusion. p_drop, rng, train: dropout
    on the scores (`dropout`: a dropout module, nn.dropout by default). frozen=True: no parameter
    gradients will be asked for (inference). Returns (y (..., H), cache)."""
    dropout = dropout or default_dropout
    Q, q_cache = linear.forward(x, wq, bq, frozen)  # (..., H)
    K, k_cache = linear.forward(u, wk, bk, frozen)  # (..., N, H)
    if wv is None:
        V, v_cache = u, None
    else:
        V, v_cache = linear.forward(u, wv, None, frozen)  # (..., N, H)
    s = (K * Q[..., None, :]).sum(axis=-1)  # (..., N): s_n = Q . K_n
    s, drop = dropout.forward(s, p_drop, rng, train)
    s = s - s.max(axis=-1, keepdims=True)  # softmax, shifted for range (p is unchanged)
    e = get_xp(s).exp(s)
    p = e / e.sum(axis=-1, keepdims=True)  # (..., N)
    y = (p[..., None] * V).sum(axis=-2) + r  # (..., H)
    return y, FusionCache(q_cache, k_cache, v_cache, Q, K, V, p, (dropout, drop))


def backward(dy, cache: FusionCache):
    """Inputs: dy (..., H). Returns (dx, du, dr, dwq, dbq, dwk, dbk, dwv); the parameter gradients
    are None when forward had frozen=True, dwv is None for static fusion."""
    dropout, drop = cache.drop
    p, V, K, Q = cache.p, cache.V, cache.K, cache.Q
    # y = sum_n p_n V_n + r
    dr = dy
    dV = p[..., None] * dy[..., None, :]  # (..., N, H)
    dp = (V * dy[..., None, :]).sum(axis=-1)  # (..., N)
    # p = softmax(s): ds_n = p_n (dp_n - sum_m p_m dp_m)
    ds = p * (dp - (p * dp).sum(axis=-1, keepdims=True))
    (ds,) = dropout.backward(ds, drop)
    # s_n = Q . K_n
    dQ = (ds[..., None] * K).sum(axis=-2)  # (..., H)
    dK = ds[..., None] * Q[..., None, :]  # (..., N, H)
    # V_n = u_n Wv^T;  K_n = u_n Wk^T + bk;  Q = x Wq^T + bq
    if cache.v is None:
        du_v, dwv = dV, None
    else:
        du_v, dwv, _ = linear.backward(dV, cache.v)
    du_k, dwk, dbk = linear.backward(dK, cache.k)
    dx, dwq, dbq = linear.backward(dQ, cache.q)
    return dx, du_k + du_v, dr, dwq, dbq, dwk, dbk, dwv
