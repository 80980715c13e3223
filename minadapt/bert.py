"""The BERT encoder as plain functions over a flat parameter dict, forward and backward.

Dimensions: B = batch, T = tokens, H = hidden, F = feed-forward width, nh = heads.
Parameters are read by their HuggingFace names, `encoder.layer.{i}.attention.self.query.weight`
and so on, in torch layout (out, in). One layer, with the adapters where Houlsby puts them:

    q|k|v = x Wqkv^T + bqkv                     Q, K and V as one matmul: Wqkv = [Wq; Wk; Wv]
    c     = attention(q, k, v, mask)
    a     = dropout(c Wo^T + bo)
    h     = LayerNorm1(a + x + A_attn(a))       (no A_attn term where the adapter has none)
    f     = gelu(h Wi^T + bi)                   (B, T, F)
    o     = dropout(f Wo2^T + bo2)
    out   = LayerNorm2(o + h + A_ffn(o))

(Pfeiffer's adapter reads LayerNorm2(o + h) instead of o, and sits after the FFN only: see
ADAPTER_READS.) The rest of the BERT family runs these same equations (architectures.py): DistilBERT
has no dropout in `a` (cfg.attention_output_dropout_prob is 0), and the embeddings below the first
layer differ only in data, and in ELECTRA's projection (embeddings_forward). Prompt tuning, prefix
tuning and IA3 act inside these same lines, as PEFT places them:
    prefix tuning    c = attention(q, [Pk; k], [Pv; v], [0; mask])      nn/prefix.py
    IA3              k and v scaled per channel, and the inputs of Wo and Wo2 (c and f)   nn/ia3.py
    prompt tuning    n vectors before the sentence's word embeddings (embeddings_forward)  nn/prompt.py

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

from .architectures import PROJECTION
from .backend import get_xp
from .config import BertConfig
from .nn import attention as reference_attention
from .nn import embedding, ia3, prefix, prompt

# Where an architecture's adapters sit: after the attention output ("attention.output") and/or
# after the feed-forward output ("output"), at the end of that sub-layer where its residual add and
# LayerNorm are.
ADAPTER_SITES = {"houlsby": ("attention.output", "output"), "pfeiffer": ("output",)}
# What the adapter reads at its site. A sub-layer ends in out = LayerNorm(o + res) (o: its output
# after dropout, res: its input); with an adapter A(u) = f(u W_down^T + b_down) W_up^T + b_up it is
#     out = LayerNorm(o + res + A(u))        with u, by architecture:
#   "sublayer":    u = o                   Houlsby (AdapterHub DoubleSeqBnConfig): the adapter reads
#                                          the sub-layer's output before the residual add;
#   "normed_sum":  u = LayerNorm(o + res)  Pfeiffer (SeqBnConfig, original_ln_before=True): the layer's
#                                          own LayerNorm is applied to the sum first, the adapter reads
#                                          that, and its output (plus its residual o) goes through the
#                                          same LayerNorm again with res: LayerNorm used twice.
# With W_up = 0 and b_up = 0 both are the plain layer, out = LayerNorm(o + res).
ADAPTER_READS = {"houlsby": "sublayer", "pfeiffer": "normed_sum"}
ADAPTER_KEYS = ("adapter_down.0.weight", "adapter_down.0.bias", "adapter_up.weight", "adapter_up.bias")
QKV = ("query", "key", "value")


class Run(NamedTuple):
    """What a forward pass needs besides the weights."""
    ops: object  # the op modules: minadapt.ops.reference() or minadapt.ops.fast()
    train: bool = False  # dropout on or off
    rng: object = None  # numpy/cupy Generator for dropout masks (train=True)
    adapter: object = None  # the AdapterConfig to run, or None (the bare backbone)
    lora: object = None  # the LoraConfig to run, or None
    trainable: frozenset = frozenset()  # names that get gradients
    prompt: object = None  # the prompt-tuning config to run (.name, .virtual_tokens), or None
    prefix: object = None  # the prefix-tuning config (.name, .virtual_tokens, .projection, ...), or None
    ia3: object = None  # the IA3 config (.name, .sites), or None
    prefix_kv: tuple = None  # each layer's (Pk, Pv): encoder_forward fills it from the prefix's table


# Parameter names, after PEFT's in-memory ones (which call both tables prompt_encoder.{name}):
# the prompt's table, the prefix's table and MLP, and IA3's scale on a site of layer i
# (nn/ia3.py SITES; kept flat, (D,), not PEFT's (D, 1) or (1, D)).
def prompt_name(name: str) -> str:
    return f"prompt_encoder.{name}.embedding.weight"


PREFIX_MLP = ("transform.0.weight", "transform.0.bias", "transform.2.weight", "transform.2.bias")


def prefix_names(name: str, projection: bool) -> list[str]:
    """The table (n, 2 L H), or the embedding (n, H) and the MLP's W1, b1, W2, b2."""
    p = f"prefix_encoder.{name}."
    return [p + "embedding.weight"] + ([p + k for k in PREFIX_MLP] if projection else [])


def ia3_name(i: int, site: str, name: str) -> str:
    where = f"attention.self.{site}" if site in QKV else site
    return f"encoder.layer.{i}.{where}.ia3_l.{name}"


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


def _adapter_forward(u, params, i, where, run):
    """A(u), the running adapter's bottleneck at this site without its skip connection (the site's
    residual add is the skip: see ADAPTER_READS). Returns (A(u), cache)."""
    a = run.adapter
    prefix = adapter_prefix(i, where, a.name)
    w_down, b_down, w_up, b_up = (params[prefix + k] for k in ADAPTER_KEYS)
    act = run.ops.non_linearities[a.non_linearity]
    return run.ops.adapter.forward(u, w_down, b_down, w_up, b_up, act, skip=False)


def _adapter_backward(dy, cache, i, where, run, grads):
    prefix = adapter_prefix(i, where, run.adapter.name)
    du, *dparams = run.ops.adapter.backward(dy, cache)
    grads.update(zip((prefix + k for k in ADAPTER_KEYS), dparams))
    return du


class SiteCache(NamedTuple):
    reads: str | None  # ADAPTER_READS of the adapter here, None where the running one has none
    ln_in: object  # LayerNorm cache of u = LayerNorm(o + res) ("normed_sum" only)
    adapter: object
    ln: object  # LayerNorm cache of the sub-layer's output


def sublayer_end_forward(o, res, params, i, where, cfg, run):
    """The end of a sub-layer, residual add and LayerNorm, with the adapter if one sits here:
        out = LayerNorm(o + res + A(u)),  u = o (Houlsby) or LayerNorm(o + res) (Pfeiffer);
        out = LayerNorm(o + res) where none does.
    o (the sub-layer's output after dropout), res (its input): (B, T', H). Returns (out, SiteCache).
    A composition of adapters (compose.py: Stack, Fuse, Average, a task per row) walks the site itself."""
    if hasattr(run.adapter, "site_forward"):
        out, composed = run.adapter.site_forward(o, res, params, i, where, cfg, run)
        return out, SiteCache("composed", None, composed, None)
    ln_prefix = layer_norm_prefix(i, where, run.adapter)
    s = o + res
    a = run.adapter
    here = (a is not None and where in ADAPTER_SITES[a.architecture]
            and i in a.layers(cfg.num_hidden_layers))  # adapter_layers: some layers have none
    reads = ADAPTER_READS[a.architecture] if here else None
    ln_in = adapter_cache = None
    if reads == "sublayer":
        d, adapter_cache = _adapter_forward(o, params, i, where, run)
        s = s + d
    elif reads == "normed_sum":
        u, ln_in = _ln_forward(s, params, ln_prefix, cfg, run)
        d, adapter_cache = _adapter_forward(u, params, i, where, run)
        s = s + d
    out, ln = _ln_forward(s, params, ln_prefix, cfg, run)
    return out, SiteCache(reads, ln_in, adapter_cache, ln)


def sublayer_end_backward(dout, cache: SiteCache, i, where, run, grads):
    """Backward of sublayer_end_forward: returns (do, dres). Without an adapter both are the
    LayerNorm's input gradient: the sum o + res hands its gradient to both terms."""
    if cache.reads == "composed":
        return run.adapter.site_backward(dout, cache.adapter, i, where, run, grads)
    ln_prefix = layer_norm_prefix(i, where, run.adapter)
    # out = LayerNorm(s),  s = o + res (+ A(u))
    ds = _ln_backward(dout, cache.ln, ln_prefix, run, grads)
    if cache.reads is None:
        return ds, ds
    du = _adapter_backward(ds, cache.adapter, i, where, run, grads)  # d = A(u)
    if cache.reads == "sublayer":  # u = o: o gets the sum's gradient and the adapter's
        return ds + du, ds
    # u = LayerNorm(o + res): its gradient joins the sum's, for both o and res
    ds = ds + _ln_backward(du, cache.ln_in, ln_prefix, run, grads)
    return ds, ds


def _ln_forward(x, params, prefix, cfg, run):
    trainable = prefix + "weight" in run.trainable
    return run.ops.layernorm.forward(x, params[prefix + "weight"], params[prefix + "bias"],
                                     cfg.layer_norm_eps, trainable)


def _ln_backward(dy, cache, prefix, run, grads):
    dx, dgamma, dbeta = run.ops.layernorm.backward(dy, cache)
    if dgamma is not None:  # added to what is there: Pfeiffer's site applies one LayerNorm twice
        for k, g in (("weight", dgamma), ("bias", dbeta)):
            grads[prefix + k] = grads[prefix + k] + g if prefix + k in grads else g
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


def lora_names(i: int, target: str, name: str) -> tuple[str, str]:
    """PEFT's names for LoRA `name`'s A and B on projection `target` ('query', 'key' or 'value')."""
    p = f"encoder.layer.{i}.attention.self.{target}."
    return p + f"lora_A.{name}.weight", p + f"lora_B.{name}.weight"


def qkv_lora_forward(out, x, params, i, run, first=0):
    """Add the running LoRA's low-rank terms s dropout(x) A^T B^T to the slices of a fused projection
    output `out` (..., n H) that it targets; the slices are Q, K, V from `first` on (0: Q|K|V):
        [q | k | v] -> [q + delta_q | k | v + delta_v]        (a LoRA on query and value)
    (run.ops.lora.add_to_slices: the reference returns a new array, the fast ops add in place).
    Returns (that (..., n H), cache: [(slice index, target, lora cache)], or None without LoRA)."""
    lo = run.lora
    if lo is None:
        return out, None
    H = x.shape[-1]
    deltas, caches = {}, []
    for j, target in enumerate(QKV[first:first + out.shape[-1] // H]):
        if target in lo.targets:
            a, b = lora_names(i, target, lo.name)
            deltas[j], c = run.ops.lora.delta_forward(x, params[a], params[b], lo.alpha / lo.r,
                                                      lo.dropout, run.rng, run.train)
            caches.append((j, target, c))
    if not caches:
        return out, None
    return run.ops.lora.add_to_slices(out, deltas), caches


def qkv_lora_backward(dout, caches, i, run, grads):
    """Backward of qkv_lora_forward: fills A's and B's gradients, returns the low-rank path's dx
    (None without LoRA), to be added to the frozen projection's."""
    if caches is None:
        return None
    H = caches[0][2].a.shape[1]  # A is (r, H)
    dx = None
    for j, target, c in caches:
        dxj, da, db = run.ops.lora.delta_backward(dout[..., j * H:(j + 1) * H], c)
        grads.update(zip(lora_names(i, target, run.lora.name), (da, db)))
        dx = dxj if dx is None else dx + dxj
    return dx


def qkv_trains(i, run) -> bool:
    """Whether anything at or below layer i's attention trains: its Q|K|V weights, a LoRA on them,
    IA3's scales on k and v, or a prefix joined to them."""
    return not qkv_frozen(i, run) or run.lora is not None or run.ia3 is not None or run.prefix is not None


# --- the rest of the family inside the layer: IA3's scales and the prefix's keys and values ---------
def ia3_forward(x, params, i, site, run):
    """x * l where the running IA3 scales `site` (nn/ia3.py SITES) of layer i; elsewhere x itself.
    Returns (x * l or x, cache or None)."""
    a = run.ia3
    if a is None or site not in a.sites:
        return x, None
    return ia3.forward(x, params[ia3_name(i, site, a.name)])


def ia3_backward(dy, cache, i, site, run, grads):
    """Backward of ia3_forward: fills the scale's gradient, returns dx."""
    if cache is None:
        return dy
    dx, dl = ia3.backward(dy, cache)
    grads[ia3_name(i, site, run.ia3.name)] = dl
    return dx


def attention_forward(q, k, v, bias, i, cfg: BertConfig, run: Run):
    """c = attention(q, k, v, mask), with layer i's prefix joined to k and v where one runs
    (nn/prefix.py): c = attention(q, [Pk; k], [Pv; v], [0; mask]). Returns (c, cache)."""
    args = (cfg.num_attention_heads, cfg.attention_probs_dropout_prob, run.rng, run.train)
    if run.prefix_kv is None:
        return run.ops.attention.forward(q, k, v, bias, *args)
    pk, pv = run.prefix_kv[i]
    return prefix.forward(q, k, v, pk, pv, bias, *args, attention=run.ops.attention)


def attention_backward(dc, cache, i, run: Run, grads):
    """Returns (dq, dk, dv). With a prefix, its dPk and dPv go into grads under ("prefix", i):
    encoder_backward gathers them into the gradient of the prefix's table."""
    if not isinstance(cache, prefix.PrefixAttentionCache):
        return run.ops.attention.backward(dc, cache)
    dq, dk, dv, dpk, dpv = prefix.backward(dc, cache)
    grads[("prefix", i)] = (dpk, dpv)
    return dq, dk, dv


def position_offset(run: Run) -> int:
    """Where the sentence's positions start: after a prompt's n rows; after a prefix's n as PEFT
    runs it (a key/value cache of length n, after which transformers numbers positions from n), at
    0 as AdapterHub runs it (shift_positions=False: joined inside attention); 0 without either."""
    if run.prompt is not None:
        return run.prompt.virtual_tokens
    return run.prefix.virtual_tokens if run.prefix is not None and run.prefix.shift_positions else 0


def prefix_table_forward(params, run: Run):
    """PEFT's table P (n, 2 L H): trained itself, or made by the reparameterisation's MLP from its
    embedding (nn/prefix.py). Returns (P, the MLP's cache or None)."""
    names = prefix_names(run.prefix.name, run.prefix.projection)
    if not run.prefix.projection:
        return params[names[0]], None
    return prefix.reparam_forward(*(params[k] for k in names))


def prefix_table_backward(grads, n_layers, cache, run: Run):
    """Gathers every layer's ("prefix", i) gradient into the table's, and on through the MLP."""
    dks, dvs = zip(*(grads.pop(("prefix", i)) for i in range(n_layers)))
    dtable = prefix.table_grad(list(dks), list(dvs))
    names = prefix_names(run.prefix.name, run.prefix.projection)
    if cache is None:
        grads[names[0]] = dtable
    else:
        grads.update(zip(names, prefix.reparam_backward(dtable, cache)))


# --- the embeddings -------------------------------------------------------------------------------
EMBEDDING_TABLES = ("embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight",
                    "embeddings.token_type_embeddings.weight")


def embeddings_forward(params, cfg: BertConfig, input_ids, token_type_ids, run: Run):
    """(B, T) ids -> (x (B, T, H), cache):
        e = W_word[ids] + W_pos[s + t] + W_type[types]    s = cfg.position_offset (RoBERTa: pad + 1);
                                                          no W_type term without token types (DistilBERT)
        x = dropout(LayerNorm(e))                         (B, T, E)
        x = x Wp^T + bp                                   ELECTRA's projection E -> H, when E != H
    With a prompt (nn/prompt.py) x is (B, n+T, H): [P; W_word[ids]] + W_pos[s : s+n+T] + W_type[[0]*n; types].
    With a prompt or a prefix of n the sentence's positions start n later, as in PEFT (position_offset)."""
    w_word, w_pos, w_type = (params.get(k) for k in EMBEDDING_TABLES)
    n = position_offset(run)
    s = cfg.position_offset + n
    if s + input_ids.shape[1] > w_pos.shape[0]:
        from .errors import ConfigError

        raise ConfigError(f"{input_ids.shape[1]} tokens after {n} virtual tokens: the checkpoint has "
                          f"{w_pos.shape[0]} positions (a --max-length of at most {w_pos.shape[0] - s})")
    e, emb = embedding.forward(input_ids, token_type_ids, w_word, w_pos, w_type, s)  # (B, T, E)
    prompt_cache = None
    if run.prompt is not None:  # the prompt's rows are at positions s-n .. s-1, of type 0
        p = params[prompt_name(run.prompt.name)] + w_pos[s - n:s]
        e, prompt_cache = prompt.forward(e, p if w_type is None else p + w_type[0])
    x, ln = _ln_forward(e, params, "embeddings.LayerNorm.", cfg, run)
    x, drop = run.ops.dropout.forward(x, cfg.hidden_dropout_prob, run.rng, run.train)
    project = None
    if PROJECTION + "weight" in params:
        x, project = _linear_forward(x, params, PROJECTION, run)  # (B, T, H)
    return x, (emb, prompt_cache, ln, drop, project)


def embeddings_backward(dx, cache, run: Run, grads):
    """For full fine-tuning and prompt tuning (adapters never reach the embeddings): fills `grads`."""
    emb, prompt_cache, ln, drop, project = cache
    if project is not None:  # x = x Wp^T + bp
        dx = _linear_backward(dx, project, PROJECTION, run, grads)
    (dx,) = run.ops.dropout.backward(dx, drop)
    de = _ln_backward(dx, ln, "embeddings.LayerNorm.", run, grads)
    if prompt_cache is not None:  # e = [P; w] + positions + types: P gets the first n rows, summed
        de, grads[prompt_name(run.prompt.name)] = prompt.backward(de, prompt_cache)
    if EMBEDDING_TABLES[0] in run.trainable:
        grads.update((k, g) for k, g in zip(EMBEDDING_TABLES, embedding.backward(de, emb)) if g is not None)


# --- one layer ------------------------------------------------------------------------------------
class AfterAttentionCache(NamedTuple):
    attn_out: object
    drop1: object
    site1: SiteCache  # the attention sub-layer's end: adapter (if any), residual add, LayerNorm
    ffn_in: object
    gelu: object
    ffn_out: object
    drop2: object
    site2: SiteCache  # the feed-forward sub-layer's end
    ia3_c: object = None  # IA3's cache of c * l on the attention output's input (None without)
    ia3_f: object = None  # and of f * l on the feed-forward output's input


class LayerCache(NamedTuple):
    x_shape: tuple  # the layer input's shape is all backward needs of it
    qkv: object  # linear cache of the fused Q|K|V projection
    lora: object  # qkv_lora_forward's cache (None without LoRA)
    attn: object
    rest: AfterAttentionCache
    ia3_k: object = None  # IA3's caches of k * l_k and v * l_v (None without)
    ia3_v: object = None


def layer_forward(params, i, x, bias, qkv, cfg: BertConfig, run: Run):
    """One encoder layer. Inputs: x (B, T, H), bias (B, 1, 1, T) from attention.mask_bias,
    qkv = (Wqkv (3H, H), bqkv (3H,)), the fused projection (Model fuses it at load time).
    Returns (out (B, T, H), cache)."""
    H = cfg.hidden_size
    # q|k|v = x Wqkv^T + bqkv;  c = attention(q, k, v, mask)
    qkv_out, qkv_cache = run.ops.linear.forward(x, *qkv, frozen=qkv_frozen(i, run))  # (B, T, 3H)
    qkv_out, lora_cache = qkv_lora_forward(qkv_out, x, params, i, run)  # + s x A^T B^T (LoRA)
    q, k, v = qkv_out[..., :H], qkv_out[..., H:2 * H], qkv_out[..., 2 * H:]
    k, ia3_k = ia3_forward(k, params, i, "key", run)  # k * l_k (IA3)
    v, ia3_v = ia3_forward(v, params, i, "value", run)
    c, attn_cache = attention_forward(q, k, v, bias, i, cfg, run)  # with [Pk; k], [Pv; v] (prefix)
    out, rest = after_attention_forward(params, i, c, x, cfg, run)
    return out, LayerCache(x.shape, qkv_cache, lora_cache, attn_cache, rest, ia3_k, ia3_v)


def after_attention_forward(params, i, c, x, cfg: BertConfig, run: Run):
    """The layer from the attention's context c on: c, x (B, T', H) -> out (B, T', H), cache.
    (T' = T, or the rows of the [CLS] token alone in fast/cls_layer.py.)"""
    p = f"encoder.layer.{i}."
    p_drop = cfg.hidden_dropout_prob
    # a = dropout(c Wo^T + bo);  h = LayerNorm1(a + x), with the adapter there (sublayer_end_forward)
    c, ia3_c = ia3_forward(c, params, i, "attention.output.dense", run)  # c * l (IA3)
    a, attn_out = _linear_forward(c, params, p + "attention.output.dense.", run)
    a, drop1 = run.ops.dropout.forward(a, cfg.attention_output_dropout_prob, run.rng, run.train)
    h, site1 = sublayer_end_forward(a, x, params, i, "attention.output", cfg, run)
    # f = gelu(h Wi^T + bi);  o = dropout(f Wo2^T + bo2);  out = LayerNorm2(o + h), with its adapter
    f, ffn_in = _linear_forward(h, params, p + "intermediate.dense.", run)  # (B, T', F)
    f, gelu_cache = run.ops.gelu.forward(f)
    f, ia3_f = ia3_forward(f, params, i, "output.dense", run)  # f * l (IA3)
    o, ffn_out = _linear_forward(f, params, p + "output.dense.", run)
    o, drop2 = run.ops.dropout.forward(o, p_drop, run.rng, run.train)
    out, site2 = sublayer_end_forward(o, h, params, i, "output", cfg, run)
    return out, AfterAttentionCache(attn_out, drop1, site1, ffn_in, gelu_cache, ffn_out, drop2, site2,
                                    ia3_c, ia3_f)


def after_attention_backward(dout, cache: AfterAttentionCache, i, run: Run, grads, need_dc=True):
    """Backward of after_attention_forward: returns (dc or None, dx_res), dx_res being the gradient
    that reaches the layer's input x through the residual add `a + x`. Fills `grads`.
    need_dc=False: nothing below the adapters trains, so the attention part is not differentiated."""
    p = f"encoder.layer.{i}."
    # out = LayerNorm2(o + h (+ adapter)): the sum's gradient goes to both o and h
    do, dh_res = sublayer_end_backward(dout, cache.site2, i, "output", run, grads)
    # o = dropout(f Wo2^T + bo2)
    (do,) = run.ops.dropout.backward(do, cache.drop2)
    df = _linear_backward(do, cache.ffn_out, p + "output.dense.", run, grads)
    df = ia3_backward(df, cache.ia3_f, i, "output.dense", run, grads)  # f * l
    # f = gelu(h Wi^T + bi)
    (df,) = run.ops.gelu.backward(df, cache.gelu)
    dh = _linear_backward(df, cache.ffn_in, p + "intermediate.dense.", run, grads)
    dh = dh + dh_res  # the residual branch of `o + h`
    # h = LayerNorm1(a + x (+ adapter)): again the gradient branches into a and the residual x
    da, dx_res = sublayer_end_backward(dh, cache.site1, i, "attention.output", run, grads)
    need_dc = need_dc or cache.ia3_c is not None  # IA3's scale on c needs c's gradient
    if not need_dc and p + "attention.output.dense.weight" not in run.trainable:
        return None, dx_res  # nothing further down trains: the adapters' gradients are all we owe
    # a = dropout(c Wo^T + bo)
    (da,) = run.ops.dropout.backward(da, cache.drop1)
    dc = _linear_backward(da, cache.attn_out, p + "attention.output.dense.", run, grads, need_dc)
    if dc is not None:
        dc = ia3_backward(dc, cache.ia3_c, i, "attention.output.dense", run, grads)  # c * l
    return dc, dx_res


def layer_backward(dout, cache: LayerCache, i, run: Run, need_dx=True):
    """The layer's forward read bottom-up. Inputs: dout (B, T, H).
    Returns (dx (B, T, H), or None when need_dx=False, grads: the trainable parameters' gradients)."""
    grads = {}
    dc, dx_res = after_attention_backward(dout, cache.rest, i, run, grads,
                                          need_dc=need_dx or qkv_trains(i, run))
    if dc is None:
        return None, grads
    # c = attention(q, k, v, mask), with the prefix's keys and values where one runs
    dq, dk, dv = attention_backward(dc, cache.attn, i, run, grads)
    # k * l_k, v * l_v (IA3)
    dk = ia3_backward(dk, cache.ia3_k, i, "key", run, grads)
    dv = ia3_backward(dv, cache.ia3_v, i, "value", run, grads)
    # q|k|v = x Wqkv^T + bqkv (+ the LoRA terms on their slices)
    dqkv = get_xp(dq).concatenate([dq, dk, dv], axis=-1)
    dx = qkv_backward(dqkv, cache.qkv, i, 0, run, grads, need_dx)
    dx_lora = qkv_lora_backward(dqkv, cache.lora, i, run, grads)
    if not need_dx:
        return None, grads
    if dx_lora is not None:
        dx = dx + dx_lora
    return dx + dx_res, grads  # + the residual branch of `a + x`


# --- the encoder ----------------------------------------------------------------------------------
class EncoderCache(NamedTuple):
    embeddings: tuple
    layers: list
    cls_only: bool  # the last layer's cache is fast/cls_layer.py's
    prefix: object = None  # the prefix MLP's cache (reparameterised prefix tuning), else None


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
    if run.prompt is not None:  # the prompt is never padding
        attention_mask = prompt.extend_mask(attention_mask, run.prompt.virtual_tokens)
    bias = reference_attention.mask_bias(attention_mask, dtype)
    prefix_cache = None
    if run.prefix is not None:  # each layer's keys and values from the one table
        table, prefix_cache = prefix_table_forward(params, run)
        run = run._replace(prefix_kv=tuple(prefix.layer_kv(table, i, cfg.hidden_size)
                                           for i in range(cfg.num_hidden_layers)))
    caches = []
    last = cfg.num_hidden_layers - 1
    cls_layer = run.ops.cls_layer if cls_only else None
    for i in range(cfg.num_hidden_layers):
        forward = cls_layer.forward if (cls_layer is not None and i == last) else layer_forward
        x, cache = forward(params, i, x, bias, qkv[i], cfg, run)
        caches.append(cache)
    return x, EncoderCache(emb_cache, caches, cls_layer is not None, prefix_cache)


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
    if run.prefix is not None:  # every layer's ("prefix", i): the table's gradient, and the MLP's
        assert bottom == 0, "a prefix trains in every layer: backward must reach layer 0"
        prefix_table_backward(grads, len(cache.layers), cache.prefix, run)
    if lowest < 0:
        embeddings_backward(dh, cache.embeddings, run, grads)
    return dh, grads
