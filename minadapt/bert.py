"""The BERT encoder as plain functions over a flat parameter dict, forward and backward.

Dimensions: B = batch, T = tokens, H = hidden, F = feed-forward width, nh = heads.
Parameters are read by their HuggingFace names, `encoder.layer.{i}.attention.self.query.weight`
and so on, in torch layout (out, in). One layer, with the two Houlsby adapters where they sit:

    qkv  = x Wqkv^T + bqkv                      Q, K and V in one matmul (fused at load time)
    c    = attention(q, k, v, mask)
    a    = adapter_attn(dropout(c Wo^T + bo))   (the identity when no adapter is added)
    h    = LayerNorm1(a + x)
    f    = gelu(h Wi^T + bi)                    (B, T, F)
    o    = adapter_ffn(dropout(f Wo2^T + bo2))
    out  = LayerNorm2(o + h)

`layer_backward` is this read from the bottom up. The two residual adds are where gradients
branch: the gradient of `a + x` reaches both `a` and `x`, and the two contributions to `dx` are
added explicitly.

Two kinds of skipped work make adapter training cheap (see DESIGN.md, "Frozen is a speed feature"):
frozen linears compute no dW; and when only [CLS] is read (classification), the last layer computes
its query, FFN and adapters for the first token alone (`cls_only`), and, with Q, K and V frozen,
attends over keys and values it never forms (nn/cls_attention.py).
"""
from __future__ import annotations

from typing import NamedTuple

from .backend import get_xp
from .config import BertConfig
from .nn import adapter, attention, cls_attention, dropout, embedding, gelu, layernorm, linear


class Run(NamedTuple):
    """What a forward pass needs besides the weights."""
    train: bool = False  # dropout on or off
    rng: object = None  # numpy/cupy Generator for dropout masks (train=True)
    adapter: object = None  # AdapterConfig (name, non_linearity) or None
    trainable: frozenset = frozenset()  # names that get gradients
    transposed: dict = {}  # {weight name or "qkv.{i}": contiguous W^T} of frozen linears (nn/linear.py)
    grad: bool = True  # a backward follows; False (inference): ops may skip what only backward reads


class LayerCache(NamedTuple):
    x: object  # the layer input's shape is all backward needs of it
    cls_only: bool
    qkv: tuple  # linear caches: of the fused qkv; of q (cls_only, frozen Q|K|V); or of q and kv
    attn: object
    attn_out: object
    drop1: object
    adapter1: object
    ln1: object
    ffn_in: object
    gelu: object
    ffn_out: object
    drop2: object
    adapter2: object
    ln2: object


def adapter_prefix(i: int, where: str, name: str) -> str:
    """AdapterHub's parameter names: where = 'attention.output' or 'output'."""
    return f"encoder.layer.{i}.{where}.adapters.{name}."


ADAPTER_KEYS = ("adapter_down.0.weight", "adapter_down.0.bias", "adapter_up.weight", "adapter_up.bias")


def _adapter_forward(h, params, i, where, run):
    if run.adapter is None:
        return h, None
    prefix = adapter_prefix(i, where, run.adapter.name)
    w_down, b_down, w_up, b_up = (params[prefix + k] for k in ADAPTER_KEYS)
    return adapter.forward(h, w_down, b_down, w_up, b_up, run.adapter.non_linearity)


def _adapter_backward(dy, cache, i, where, run, grads):
    if cache is None:
        return dy
    prefix = adapter_prefix(i, where, run.adapter.name)
    dh, *dparams = adapter.backward(dy, cache)
    grads.update(zip((prefix + k for k in ADAPTER_KEYS), dparams))
    return dh


def _linear_forward(x, params, prefix, run):
    """A named dense layer; frozen (no dW, no saved input) unless its weight is trainable."""
    frozen = prefix + "weight" not in run.trainable
    return linear.forward(x, params[prefix + "weight"], params[prefix + "bias"], frozen=frozen,
                          w_t=run.transposed.get(prefix + "weight") if frozen else None)


def _linear_backward(dy, cache, prefix, grads, need_dx=True):
    dx, dw, db = linear.backward(dy, cache, need_dx)
    if dw is not None:
        grads[prefix + "weight"], grads[prefix + "bias"] = dw, db
    return dx


QKV = ("query", "key", "value")


def _qkv_backward(dy, cache, i, first, grads, need_dx=True):
    """Backward of a slice of the fused Q|K|V projection that starts at Q, K or V (`first`).
    Splits dW of the fused matrix back into the three named parameters when they train."""
    dx, dw, db = linear.backward(dy, cache, need_dx)
    if dw is not None:
        H = dw.shape[1]
        p = f"encoder.layer.{i}.attention.self."
        for j, n in enumerate(QKV[first:first + dw.shape[0] // H]):
            grads[p + n + ".weight"], grads[p + n + ".bias"] = dw[j * H:(j + 1) * H], db[j * H:(j + 1) * H]
    return dx


def _qkv_frozen(i, run) -> bool:
    """Q, K and V share one fused matmul, so they train together or not at all."""
    names = [f"encoder.layer.{i}.attention.self.{n}.{t}" for n in QKV for t in ("weight", "bias")]
    trainable = [n in run.trainable for n in names]
    if any(trainable) and not all(trainable):
        raise ValueError(f"layer {i}: query, key and value (weights and biases) must be trainable "
                         "together (they are one fused matmul)")
    return not trainable[0]


def _ln_forward(x, params, prefix, cfg, run):
    trainable = prefix + "weight" in run.trainable
    return layernorm.forward(x, params[prefix + "weight"], params[prefix + "bias"],
                             cfg.layer_norm_eps, trainable)


def _ln_backward(dy, cache, prefix, grads):
    dx, dgamma, dbeta = layernorm.backward(dy, cache)
    if dgamma is not None:
        grads[prefix + "weight"], grads[prefix + "bias"] = dgamma, dbeta
    return dx


EMBEDDING_TABLES = ("embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight",
                    "embeddings.token_type_embeddings.weight")


def embeddings_forward(params, cfg: BertConfig, input_ids, token_type_ids, run: Run):
    """Word + position + type embeddings, LayerNorm, dropout: (B, T) ids -> (x (B, T, H), cache)."""
    e, emb = embedding.forward(input_ids, token_type_ids, *(params[k] for k in EMBEDDING_TABLES))
    x, ln = _ln_forward(e, params, "embeddings.LayerNorm.", cfg, run)
    x, drop = dropout.forward(x, cfg.hidden_dropout_prob, run.rng, run.train)
    return x, (emb, ln, drop)


def embeddings_backward(dx, cache, run: Run, grads):
    """Only for full fine-tuning (adapters never train the embeddings): fills `grads`."""
    emb, ln, drop = cache
    (dx,) = dropout.backward(dx, drop)
    de = _ln_backward(dx, ln, "embeddings.LayerNorm.", grads)
    if EMBEDDING_TABLES[0] in run.trainable:
        grads.update(zip(EMBEDDING_TABLES, embedding.backward(de, emb)))


def layer_forward(params, i, x, bias, qkv, cfg: BertConfig, run: Run, cls_only=False):
    """One encoder layer. Inputs: x (B, T, H), bias (B, 1, 1, T) from attention.mask_bias,
    qkv = (Wqkv (3H, H), bqkv (3H,)) the fused projection. Returns (out, cache), out of shape
    (B, T, H), or (B, 1, H) with cls_only=True (only the [CLS] row is computed)."""
    p = f"encoder.layer.{i}."
    H, nh = cfg.hidden_size, cfg.num_attention_heads
    w_qkv, b_qkv = qkv
    qkv_frozen = _qkv_frozen(i, run)
    wt_qkv = run.transposed.get(f"qkv.{i}") if qkv_frozen else None  # (H, 3H)
    p_hidden = cfg.hidden_dropout_prob
    # --- self-attention ---
    p_attn = cfg.attention_probs_dropout_prob
    if not cls_only:
        x_res = x
        qkv_out, qkv_cache = linear.forward(x, w_qkv, b_qkv, frozen=qkv_frozen, w_t=wt_qkv)  # (B, T, 3H)
        q, k, v = qkv_out[..., :H], qkv_out[..., H:2 * H], qkv_out[..., 2 * H:]
        qkv_caches = (qkv_cache,)
        c, attn_cache = attention.forward(q, k, v, bias, nh, p_attn, run.rng, run.train)
    else:  # the query of [CLS] alone
        x_res = x[:, :1]  # (B, 1, H), the residual branch
        q, q_cache = linear.forward(x_res, w_qkv[:H], b_qkv[:H], frozen=qkv_frozen,
                                    w_t=None if wt_qkv is None else wt_qkv[:, :H])
        if qkv_frozen:  # keys and values are never formed (nn/cls_attention.py)
            c, attn_cache = cls_attention.forward(q, x, w_qkv[H:2 * H], w_qkv[2 * H:], b_qkv[2 * H:],
                                                  bias, nh, p_attn, run.rng, run.train)
            qkv_caches = (q_cache,)
        else:  # K and V train: form them for every token, their dW needs them
            kv, kv_cache = linear.forward(x, w_qkv[H:], b_qkv[H:])  # (B, T, 2H)
            k, v = kv[..., :H], kv[..., H:]
            qkv_caches = (q_cache, kv_cache)
            c, attn_cache = attention.forward(q, k, v, bias, nh, p_attn, run.rng, run.train)
    a, attn_out_cache = _linear_forward(c, params, p + "attention.output.dense.", run)
    a, drop1 = dropout.forward(a, p_hidden, run.rng, run.train)
    a, adapter1 = _adapter_forward(a, params, i, "attention.output", run)
    a += x_res
    h, ln1 = _ln_forward(a, params, p + "attention.output.LayerNorm.", cfg, run)
    # --- feed-forward ---
    f, ffn_in = _linear_forward(h, params, p + "intermediate.dense.", run)  # (B, T, F)
    f, gelu_cache = gelu.forward(f, grad=run.grad)
    o, ffn_out = _linear_forward(f, params, p + "output.dense.", run)
    o, drop2 = dropout.forward(o, p_hidden, run.rng, run.train)
    o, adapter2 = _adapter_forward(o, params, i, "output", run)
    o += h
    out, ln2 = _ln_forward(o, params, p + "output.LayerNorm.", cfg, run)
    cache = LayerCache(x.shape, cls_only, qkv_caches, attn_cache, attn_out_cache, drop1, adapter1,
                       ln1, ffn_in, gelu_cache, ffn_out, drop2, adapter2, ln2)
    return out, cache


def layer_backward(dout, cache: LayerCache, i, run: Run, need_dx=True):
    """The layer's forward read bottom-up. Inputs: dout shaped like the layer's output.
    Returns (dx (B, T, H) or None, grads: dict of the trainable parameters' gradients)."""
    p = f"encoder.layer.{i}."
    grads = {}
    # out = LayerNorm2(o + h): the sum's gradient goes to both o and h
    do = _ln_backward(dout, cache.ln2, p + "output.LayerNorm.", grads)
    dh_res = do
    # o = adapter_ffn(dropout(f Wo2^T + bo2))
    do = _adapter_backward(do, cache.adapter2, i, "output", run, grads)
    (do,) = dropout.backward(do, cache.drop2)
    df = _linear_backward(do, cache.ffn_out, p + "output.dense.", grads)
    # f = gelu(h Wi^T + bi)
    (df,) = gelu.backward(df, cache.gelu)
    dh = _linear_backward(df, cache.ffn_in, p + "intermediate.dense.", grads)
    dh += dh_res  # the residual branch of `o + h`
    # h = LayerNorm1(a + x): again the gradient branches into a and the residual x
    da = _ln_backward(dh, cache.ln1, p + "attention.output.LayerNorm.", grads)
    dx_res = da
    # a = adapter_attn(dropout(c Wo^T + bo))
    da = _adapter_backward(da, cache.adapter1, i, "attention.output", run, grads)
    qkv_frozen = _qkv_frozen(i, run)
    below = p + "attention.output.dense.weight" in run.trainable or not qkv_frozen
    if not need_dx and not below:  # the adapter's own gradients are all this layer still owes
        return None, grads
    (da,) = dropout.backward(da, cache.drop1)
    dc = _linear_backward(da, cache.attn_out, p + "attention.output.dense.", grads)
    if not need_dx and qkv_frozen:  # attention's backward would only feed dx
        return None, grads
    if isinstance(cache.attn, cls_attention.ClsAttentionCache):
        # c = attention of q against keys and values never formed; q from the [CLS] row alone
        dq, dx = cls_attention.backward(dc, cache.attn)
        dx[:, :1] += _qkv_backward(dq, cache.qkv[0], i, 0, grads) + dx_res
        assert dx.shape == cache.x
        return dx, grads
    # c = attention(q, k, v)
    dq, dk, dv = attention.backward(dc, cache.attn)
    # q, k, v = x Wqkv^T + bqkv (fused), or q from the [CLS] row alone
    xp = get_xp(dout)
    if cache.cls_only:
        q_cache, kv_cache = cache.qkv
        dx = _qkv_backward(xp.concatenate([dk, dv], axis=-1), kv_cache, i, 1, grads, need_dx)
        dx_cls = _qkv_backward(dq, q_cache, i, 0, grads, need_dx)
        if not need_dx:
            return None, grads
        dx[:, :1] += dx_cls + dx_res
    else:
        dx = _qkv_backward(xp.concatenate([dq, dk, dv], axis=-1), cache.qkv[0], i, 0, grads, need_dx)
        if not need_dx:
            return None, grads
        dx += dx_res
    assert dx.shape == cache.x  # the input's shape
    return dx, grads


def encoder_forward(params, qkv, cfg: BertConfig, input_ids, attention_mask, token_type_ids,
                    run: Run, cls_only=False):
    """Embeddings and every layer. Returns (hidden (B, T, H), or (B, 1, H) with cls_only, caches)."""
    xp = get_xp(params["embeddings.word_embeddings.weight"])
    dtype = params["embeddings.word_embeddings.weight"].dtype
    if token_type_ids is None:
        token_type_ids = xp.zeros_like(input_ids)
    x, emb_cache = embeddings_forward(params, cfg, input_ids, token_type_ids, run)
    bias = attention.mask_bias(attention_mask, dtype)
    caches = []
    last = cfg.num_hidden_layers - 1
    for i in range(cfg.num_hidden_layers):
        x, cache = layer_forward(params, i, x, bias, qkv[i], cfg, run, cls_only and i == last)
        caches.append(cache)
    return x, (emb_cache, caches)


def encoder_backward(dh, caches, run: Run, lowest=0, return_dx=False):
    """Backward through the layers, top to bottom, down to layer `lowest`: the lowest one with a
    trainable parameter, since nothing below it needs a gradient (and inside that layer, nothing
    below its lowest trainable parameter). lowest = -1 goes on into the embeddings (full
    fine-tuning). return_dx=True also returns the gradient w.r.t. the embeddings' output.
    Returns (dx (B, T, H) or None, grads dict)."""
    emb_cache, layer_caches = caches
    grads = {}
    bottom = max(lowest, 0)
    for i in range(len(layer_caches) - 1, bottom - 1, -1):
        need_dx = i > bottom or lowest < 0 or return_dx
        dh, layer_grads = layer_backward(dh, layer_caches[i], i, run, need_dx=need_dx)
        grads.update(layer_grads)
    if lowest < 0:
        embeddings_backward(dh, emb_cache, run, grads)
    return dh, grads

