"""The BERT encoder as plain functions over a flat parameter dict, forward and backward.

Dimensions: B = batch, T = tokens, H = hidden, F = feed-forward width, nh = heads.
Parameters are read by their HuggingFace names, `encoder.layer.{i}.attention.self.query.weight`
and so on, in torch layout (out, in). One layer, with the adapters where Houlsby puts them:

    q|k|v = x Wqkv^T + bqkv                     Q, K and V as one matmul: Wqkv = [Wq; Wk; Wv]
    c     = attention(q, k, v, mask)
    a     = adapter_attn(dropout(c Wo^T + bo))  (the identity when the adapter has none here)
    h     = LayerNorm1(a + x)
    f     = gelu(h Wi^T + bi)                   (B, T, F)
    o     = adapter_ffn(dropout(f Wo2^T + bo2))
    out   = LayerNorm2(o + h)

`layer_backward` is this read from the bottom up. The two residual adds are where gradients
branch: the gradient of `a + x` reaches both `a` and `x`, and the two contributions to `dx` are
added explicitly.

Every op comes from `run.ops`: the reference ops of `minadapt.nn` (the plainest NumPy that states
the maths) or their fast versions (`minadapt.fast`), which compute the same numbers. The layer is
the same equations either way. Frozen weights are a speed feature in both: a frozen linear
computes no dW and keeps no input, and backward stops at the lowest layer that holds a trainable
parameter (`encoder_backward`).
"""
from __future__ import annotations

from typing import NamedTuple

from .backend import get_xp
from .config import BertConfig
from .nn import attention as reference_attention
from .nn import embedding

# Where an architecture's adapters sit: after the attention output ("attention.output") and/or
# after the feed-forward output ("output"), each before that sub-layer's residual add and LayerNorm.
ADAPTER_SITES = {"houlsby": ("attention.output", "output")}
ADAPTER_KEYS = ("adapter_down.0.weight", "adapter_down.0.bias", "adapter_up.weight", "adapter_up.bias")
QKV = ("query", "key", "value")


class Run(NamedTuple):
    """What a forward pass needs besides the weights."""
    ops: object  # the op modules: minadapt.ops.reference() or minadapt.ops.fast()
    train: bool = False  # dropout on or off
    rng: object = None  # numpy/cupy Generator for dropout masks (train=True)
    adapter: object = None  # the AdapterConfig to run, or None (the bare backbone)
    trainable: frozenset = frozenset()  # names that get gradients


def adapter_prefix(i: int, where: str, name: str) -> str:
    """AdapterHub's parameter names: where = 'attention.output' or 'output'."""
    return f"encoder.layer.{i}.{where}.adapters.{name}."


def layer_norm_prefix(i: int, where: str, adapter=None) -> str:
    """The LayerNorm after `where` ('attention.output' or 'output'). An adapter that trains the
    LayerNorms has its own copies, so that training it leaves every other adapter's model as it was."""
    if adapter is not None and adapter.train_layer_norms:
        return adapter_prefix(i, where, adapter.name) + "LayerNorm."
    return f"encoder.layer.{i}.{where}.LayerNorm."


# --- named pieces: a parameter name in, the op's forward or backward out -------------------------
def _linear_forward(x, params, prefix, run):
    """A named dense layer; frozen (no dW, no saved input) unless its weight is trainable."""
    frozen = prefix + "weight" not in run.trainable
    return run.ops.linear.forward(x, params[prefix + "weight"], params[prefix + "bias"], frozen=frozen)


def _linear_backward(dy, cache, prefix, run, grads, need_dx=True):
    dx, dw, db = run.ops.linear.backward(dy, cache, need_dx)
    if dw is not None:
        grads[prefix + "weight"], grads[prefix + "bias"] = dw, db
    return dx


def _adapter_forward(h, params, i, where, run):
    """The adapter at this site, or the identity (cache None) where the running one has none."""
    a = run.adapter
    if a is None or where not in ADAPTER_SITES[a.architecture]:
        return h, None
    prefix = adapter_prefix(i, where, a.name)
    w_down, b_down, w_up, b_up = (params[prefix + k] for k in ADAPTER_KEYS)
    act = run.ops.non_linearities[a.non_linearity]
    return run.ops.adapter.forward(h, w_down, b_down, w_up, b_up, act)


def _adapter_backward(dy, cache, i, where, run, grads):
    if cache is None:
        return dy
    prefix = adapter_prefix(i, where, run.adapter.name)
    dh, *dparams = run.ops.adapter.backward(dy, cache)
    grads.update(zip((prefix + k for k in ADAPTER_KEYS), dparams))
    return dh


def _ln_forward(x, params, prefix, cfg, run):
    trainable = prefix + "weight" in run.trainable
    return run.ops.layernorm.forward(x, params[prefix + "weight"], params[prefix + "bias"],
                                     cfg.layer_norm_eps, trainable)


def _ln_backward(dy, cache, prefix, run, grads):
    dx, dgamma, dbeta = run.ops.layernorm.backward(dy, cache)
    if dgamma is not None:
        grads[prefix + "weight"], grads[prefix + "bias"] = dgamma, dbeta
    return dx


def qkv_frozen(i, run) -> bool:
    """Q, K and V share one fused matmul, so they train together or not at all."""
    names = [f"encoder.layer.{i}.attention.self.{n}.{t}" for n in QKV for t in ("weight", "bias")]
    trainable = [n in run.trainable for n in names]
    if any(trainable) and not all(trainable):
        raise ValueError(f"layer {i}: query, key and value (weights and biases) must be trainable "
                         "together (they are one fused matmul)")
    return not trainable[0]


def qkv_backward(dy, cache, i, first, run, grads, need_dx=True):
    """Backward of a slice of the fused Q|K|V projection that starts at Q, K or V (`first`).
    Splits dW of the fused matrix back into the three named parameters when they train."""
    dx, dw, db = run.ops.linear.backward(dy, cache, need_dx)
    if dw is not None:
        H = dw.shape[1]
        p = f"encoder.layer.{i}.attention.self."
        for j, n in enumerate(QKV[first:first + dw.shape[0] // H]):
            grads[p + n + ".weight"], grads[p + n + ".bias"] = dw[j * H:(j + 1) * H], db[j * H:(j + 1) * H]
    return dx


# --- the embeddings -------------------------------------------------------------------------------
EMBEDDING_TABLES = ("embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight",
                    "embeddings.token_type_embeddings.weight")


def embeddings_forward(params, cfg: BertConfig, input_ids, token_type_ids, run: Run):
    """Word + position + type embeddings, LayerNorm, dropout: (B, T) ids -> (x (B, T, H), cache)."""
    e, emb = embedding.forward(input_ids, token_type_ids, *(params[k] for k in EMBEDDING_TABLES))
    x, ln = _ln_forward(e, params, "embeddings.LayerNorm.", cfg, run)
    x, drop = run.ops.dropout.forward(x, cfg.hidden_dropout_prob, run.rng, run.train)
    return x, (emb, ln, drop)


def embeddings_backward(dx, cache, run: Run, grads):
    """Only for full fine-tuning (adapters never train the embeddings): fills `grads`."""
    emb, ln, drop = cache
    (dx,) = run.ops.dropout.backward(dx, drop)
    de = _ln_backward(dx, ln, "embeddings.LayerNorm.", run, grads)
    if EMBEDDING_TABLES[0] in run.trainable:
        grads.update(zip(EMBEDDING_TABLES, embedding.backward(de, emb)))


# --- one layer ------------------------------------------------------------------------------------
class AfterAttentionCache(NamedTuple):
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


class LayerCache(NamedTuple):
    x_shape: tuple  # the layer input's shape is all backward needs of it
    qkv: object  # linear cache of the fused Q|K|V projection
    attn: object
    rest: AfterAttentionCache


def layer_forward(params, i, x, bias, qkv, cfg: BertConfig, run: Run):
    """One encoder layer. Inputs: x (B, T, H), bias (B, 1, 1, T) from attention.mask_bias,
    qkv = (Wqkv (3H, H), bqkv (3H,)), the fused projection (Model fuses it at load time).
    Returns (out (B, T, H), cache)."""
    H = cfg.hidden_size
    # q|k|v = x Wqkv^T + bqkv;  c = attention(q, k, v, mask)
    qkv_out, qkv_cache = run.ops.linear.forward(x, *qkv, frozen=qkv_frozen(i, run))  # (B, T, 3H)
    q, k, v = qkv_out[..., :H], qkv_out[..., H:2 * H], qkv_out[..., 2 * H:]
    c, attn_cache = run.ops.attention.forward(q, k, v, bias, cfg.num_attention_heads,
                                              cfg.attention_probs_dropout_prob, run.rng, run.train)
    out, rest = after_attention_forward(params, i, c, x, cfg, run)
    return out, LayerCache(x.shape, qkv_cache, attn_cache, rest)


def after_attention_forward(params, i, c, x, cfg: BertConfig, run: Run):
    """The layer from the attention's context c on: c, x (B, T', H) -> out (B, T', H), cache.
    (T' = T, or the rows of the [CLS] token alone in fast/cls_layer.py.)"""
    p = f"encoder.layer.{i}."
    p_drop = cfg.hidden_dropout_prob
    # a = adapter_attn(dropout(c Wo^T + bo));  h = LayerNorm1(a + x)
    a, attn_out = _linear_forward(c, params, p + "attention.output.dense.", run)
    a, drop1 = run.ops.dropout.forward(a, p_drop, run.rng, run.train)
    a, adapter1 = _adapter_forward(a, params, i, "attention.output", run)
    h, ln1 = _ln_forward(a + x, params, layer_norm_prefix(i, "attention.output", run.adapter), cfg, run)
    # f = gelu(h Wi^T + bi);  o = adapter_ffn(dropout(f Wo2^T + bo2));  out = LayerNorm2(o + h)
    f, ffn_in = _linear_forward(h, params, p + "intermediate.dense.", run)  # (B, T', F)
    f, gelu_cache = run.ops.gelu.forward(f)
    o, ffn_out = _linear_forward(f, params, p + "output.dense.", run)
    o, drop2 = run.ops.dropout.forward(o, p_drop, run.rng, run.train)
    o, adapter2 = _adapter_forward(o, params, i, "output", run)
    out, ln2 = _ln_forward(o + h, params, layer_norm_prefix(i, "output", run.adapter), cfg, run)
    return out, AfterAttentionCache(attn_out, drop1, adapter1, ln1, ffn_in, gelu_cache, ffn_out,
                                    drop2, adapter2, ln2)


def after_attention_backward(dout, cache: AfterAttentionCache, i, run: Run, grads, need_dc=True):
    """Backward of after_attention_forward: returns (dc or None, dx_res), dx_res being the gradient
    that reaches the layer's input x through the residual add `a + x`. Fills `grads`.
    need_dc=False: nothing below the adapters trains, so the attention part is not differentiated."""
    p = f"encoder.layer.{i}."
    # out = LayerNorm2(o + h): the sum's gradient goes to both o and h
    do = _ln_backward(dout, cache.ln2, layer_norm_prefix(i, "output", run.adapter), run, grads)
    # o = adapter_ffn(dropout(f Wo2^T + bo2))
    do_ = _adapter_backward(do, cache.adapter2, i, "output", run, grads)
    (do_,) = run.ops.dropout.backward(do_, cache.drop2)
    df = _linear_backward(do_, cache.ffn_out, p + "output.dense.", run, grads)
    # f = gelu(h Wi^T + bi)
    (df,) = run.ops.gelu.backward(df, cache.gelu)
    dh = _linear_backward(df, cache.ffn_in, p + "intermediate.dense.", run, grads)
    dh = dh + do  # the residual branch of `o + h`
    # h = LayerNorm1(a + x): again the gradient branches into a and the residual x
    da = _ln_backward(dh, cache.ln1, layer_norm_prefix(i, "attention.output", run.adapter), run, grads)
    # a = adapter_attn(dropout(c Wo^T + bo))
    da_ = _adapter_backward(da, cache.adapter1, i, "attention.output", run, grads)
    if not need_dc and p + "attention.output.dense.weight" not in run.trainable:
        return None, da  # nothing further down trains: the adapters' gradients are all we owe
    (da_,) = run.ops.dropout.backward(da_, cache.drop1)
    dc = _linear_backward(da_, cache.attn_out, p + "attention.output.dense.", run, grads, need_dc)
    return dc, da


def layer_backward(dout, cache: LayerCache, i, run: Run, need_dx=True):
    """The layer's forward read bottom-up. Inputs: dout (B, T, H).
    Returns (dx (B, T, H), or None when need_dx=False, grads: the trainable parameters' gradients)."""
    grads = {}
    frozen = qkv_frozen(i, run)
    dc, dx_res = after_attention_backward(dout, cache.rest, i, run, grads, need_dc=need_dx or not frozen)
    if dc is None:
        return None, grads
    # c = attention(q, k, v, mask)
    dq, dk, dv = run.ops.attention.backward(dc, cache.attn)
    # q|k|v = x Wqkv^T + bqkv
    xp = get_xp(dq)
    dx = qkv_backward(xp.concatenate([dq, dk, dv], axis=-1), cache.qkv, i, 0, run, grads, need_dx)
    if not need_dx:
        return None, grads
    return dx + dx_res, grads  # + the residual branch of `a + x`


# --- the encoder ----------------------------------------------------------------------------------
class EncoderCache(NamedTuple):
    embeddings: tuple
    layers: list
    cls_only: bool  # the last layer's cache is fast/cls_layer.py's


def encoder_forward(params, qkv, cfg: BertConfig, input_ids, attention_mask, token_type_ids,
                    run: Run, cls_only=False):
    """Embeddings and every layer. Returns (hidden (B, T, H), cache).
    cls_only=True: only the [CLS] row will be read; ops that have a [CLS]-only last layer
    (`run.ops.cls_layer`, the fast ones) then return (B, 1, H), others still (B, T, H)."""
    xp = get_xp(input_ids)
    dtype = params["embeddings.word_embeddings.weight"].dtype
    if token_type_ids is None:
        token_type_ids = xp.zeros_like(input_ids)
    x, emb_cache = embeddings_forward(params, cfg, input_ids, token_type_ids, run)
    bias = reference_attention.mask_bias(attention_mask, dtype)
    caches = []
    last = cfg.num_hidden_layers - 1
    cls_layer = run.ops.cls_layer if cls_only else None
    for i in range(cfg.num_hidden_layers):
        forward = cls_layer.forward if (cls_layer is not None and i == last) else layer_forward
        x, cache = forward(params, i, x, bias, qkv[i], cfg, run)
        caches.append(cache)
    return x, EncoderCache(emb_cache, caches, cls_layer is not None)


def encoder_backward(dh, cache: EncoderCache, run: Run, lowest=0, return_dx=False):
    """Backward through the layers, top to bottom, down to layer `lowest`: the lowest one with a
    trainable parameter, since nothing below it needs a gradient. lowest = -1 goes on into the
    embeddings (full fine-tuning). return_dx=True also returns the gradient w.r.t. the embeddings'
    output. Returns (dx (B, T, H) or None, grads dict)."""
    grads = {}
    bottom = max(lowest, 0)
    last = len(cache.layers) - 1
    for i in range(last, bottom - 1, -1):
        backward = run.ops.cls_layer.backward if (cache.cls_only and i == last) else layer_backward
        need_dx = i > bottom or lowest < 0 or return_dx
        dh, layer_grads = backward(dh, cache.layers[i], i, run, need_dx=need_dx)
        grads.update(layer_grads)
    if lowest < 0:
        embeddings_backward(dh, cache.embeddings, run, grads)
    return dh, grads
