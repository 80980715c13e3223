"""The last encoder layer for the [CLS] row alone (bert.layer_forward computes every row).

A classification head reads only the last layer's [CLS] vector. Every row of a layer's output
depends on the whole input only through attention's keys and values, so the last layer needs keys
and values of every token, but its query, attention output, feed-forward block, adapters and
LayerNorms for one row per sentence: at L=64 that is roughly a sixth of the step's FLOPs saved.
With Q, K and V frozen, even the keys and values are never formed (cls_attention.py).

The rest of the layer is bert.after_attention_forward on (B, 1, H) rows: the same equations.
"""
from __future__ import annotations

from typing import NamedTuple

from .. import bert
from . import cls_attention


class ClsLayerCache(NamedTuple):
    x_shape: tuple  # (B, T, H), the layer input's
    q: object  # linear cache of the [CLS] query
    q_lora: object  # bert.qkv_lora_forward's cache for the query (None without LoRA on it)
    kv: object  # linear cache of k|v (None on the cls_attention route)
    kv_lora: object  # the same for k|v
    attn: object  # cls_attention's cache, or attention's (with the prefix: nn/prefix.py's)
    rest: bert.AfterAttentionCache
    ia3_k: object = None  # IA3's caches of k * l_k and v * l_v (None without)
    ia3_v: object = None


def forward(params, i, x, bias, qkv, cfg, run):
    """As bert.layer_forward, but returns out (B, 1, H): the [CLS] row only."""
    H, nh = cfg.hidden_size, cfg.num_attention_heads
    p_attn = cfg.attention_probs_dropout_prob
    w, b = qkv
    frozen = bert.qkv_frozen(i, run)
    x_cls = x[:, :1]  # (B, 1, H), also the residual branch
    q, q_cache = run.ops.linear.forward(x_cls, w[:H], b[:H], frozen=frozen)
    q, q_lora = bert.qkv_lora_forward(q, x_cls, params, i, run, first=0)
    lora_kv = run.lora is not None and ({"key", "value"} & set(run.lora.targets))
    kv_lora = ia3_k = ia3_v = None
    if frozen and not lora_kv and run.ia3 is None and run.prefix is None:  # keys and values never formed
        c, attn = cls_attention.forward(q, x, w[H:2 * H], w[2 * H:], b[2 * H:], bias, nh, p_attn,
                                        run.rng, run.train)
        kv_cache = None
    else:  # K and V (or a LoRA on them) train: form them for every token, their dW needs them
        kv, kv_cache = run.ops.linear.forward(x, w[H:], b[H:], frozen=frozen)  # (B, T, 2H)
        kv, kv_lora = bert.qkv_lora_forward(kv, x, params, i, run, first=1)
        k, ia3_k = bert.ia3_forward(kv[..., :H], params, i, "key", run)  # k * l_k (IA3)
        v, ia3_v = bert.ia3_forward(kv[..., H:], params, i, "value", run)
        c, attn = bert.attention_forward(q, k, v, bias, i, cfg, run)  # with the prefix, if any
    out, rest = bert.after_attention_forward(params, i, c, x_cls, cfg, run)
    return out, ClsLayerCache(x.shape, q_cache, q_lora, kv_cache, kv_lora, attn, rest, ia3_k, ia3_v)


def backward(dout, cache: ClsLayerCache, i, run, need_dx=True):
    """As bert.layer_backward, for dout (B, 1, H). Returns (dx (B, T, H) or None, grads)."""
    grads = {}
    dc, dx_res = bert.after_attention_backward(dout, cache.rest, i, run, grads,
                                               need_dc=need_dx or bert.qkv_trains(i, run))
    if dc is None:
        return None, grads
    if cache.kv is None:  # c = attention of the [CLS] query against keys and values never formed
        dq, dx = cls_attention.backward(dc, cache.attn)
    else:  # c = attention(q, k, v); k|v = x Wkv^T + bkv
        dq, dk, dv = bert.attention_backward(dc, cache.attn, i, run, grads)
        dk = bert.ia3_backward(dk, cache.ia3_k, i, "key", run, grads)
        dv = bert.ia3_backward(dv, cache.ia3_v, i, "value", run, grads)
        dkv = bert.get_xp(dk).concatenate([dk, dv], axis=-1)
        dx = bert.qkv_backward(dkv, cache.kv, i, 1, run, grads, need_dx)
        dx_lora = bert.qkv_lora_backward(dkv, cache.kv_lora, i, run, grads)
        if need_dx and dx_lora is not None:
            dx = dx + dx_lora
    # q = x_cls Wq^T + bq (+ LoRA): the [CLS] row receives this, and the residual branch
    dx_cls = bert.qkv_backward(dq, cache.q, i, 0, run, grads, need_dx)
    dx_cls_lora = bert.qkv_lora_backward(dq, cache.q_lora, i, run, grads)
    if not need_dx:
        return None, grads
    if dx_cls_lora is not None:
        dx_cls = dx_cls + dx_cls_lora
    dx[:, :1] += dx_cls + dx_res
    return dx, grads
