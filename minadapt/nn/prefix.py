"""Prefix tuning (Li & Liang, 2021): n trained keys and values in front of every attention's own.

Dimensions: B = batch, T = tokens, n = virtual tokens, H = hidden, L = layers, nh = heads,
hs = H / nh, Hp = the reparameterisation's hidden width.

Forward, in layer i, with that layer's prefix keys Pk (n, H) and values Pv (n, H):
    K' = [Pk; k],  V' = [Pv; v]          (B, n+T, H)   the same Pk, Pv for every sentence
    m' = [0 ... 0; m]                    the prefix is never masked
    c  = attention(q, K', V', m')        the queries are the sentence's T rows alone
Every token also attends to the n prefix positions; the layer still has T rows in and out, but each
attention is (T, n+T) wide. With nh heads the prefix splits into heads like any key (split_heads).

Backward: attention's backward already gives dK' and dV' for all n+T key rows; the prefix's are the
first n, summed over the batch (Pk, Pv are shared). Written out per head, with ds the gradient of
the scores s = q K'^T / sqrt(hs) and a~ the attention weights after dropout:
    dPk = sum_b ds[b, :, :, :n]^T q[b] / sqrt(hs)    a prefix key learns from the queries that
                                                     looked at it, weighted by the score gradient
    dPv = sum_b a~[b, :, :, :n]^T dc[b]              a prefix value, from the upstream gradient of
                                                     every query, weighted by how much it attended
so prefix tuning needs no backward of its own beyond a slice and a sum: the attention backward a
learner wrote for BERT is the whole of it.

Where it sits, as PEFT does for BERT: PEFT hands the prefix to transformers as a key/value cache of
length n ("past_key_values"); the mask gains n ones in front, and BertEmbeddings, seeing a cache of
length n, numbers the sentence's positions from n (position_ids = n .. n+T-1).
To be equal to PEFT the sentence therefore reads position embeddings n .. n+T-1.

PEFT's table is one array P (n, 2 L H): layer i's keys are P[:, 2i H : (2i+1) H], its values the
next H columns (`layer_kv`).

Reparameterisation (PEFT's prefix_projection=True): P is made from an embedding E (n, H) by a
two-layer MLP, and E, W1, b1, W2, b2 are what training moves:
    z = E W1^T + b1   (n, Hp)      t = tanh(z)      P = t W2^T + b2   (n, 2 L H)
Backward, the forward reversed:
    dW2 = dP^T t,  db2 = sum_rows dP,  dt = dP W2,  dz = dt (1 - t^2),
    dW1 = dz^T E,  db1 = sum_rows dz,  dE = dz W1
After training P is evaluated once and kept (`merge`): the MLP is merged away, the file holds P
alone (as PEFT's saved prompt_embeddings), and the model runs the plain form. The MLP changes how
training moves P, not what P can be.
"""
from __future__ import annotations

import math
from typing import NamedTuple

from ..backend import get_xp
from . import attention as reference_attention
from . import linear, tanh

class PrefixAttentionCache(NamedTuple):
    n: int  # virtual tokens
    attention: object  # the attention op that ran (minadapt.nn.attention or a fast one)
    attn: object  # its cache


class ReparamCache(NamedTuple):
    first: object  # linear cache of z = E W1^T + b1 (keeps E)
    tanh: object
    second: object  # linear cache of P = t W2^T + b2 (keeps t)


def join(k, v, pk, pv, bias):
    """K' = [Pk; k], V' = [Pv; v], m' = [0; m]. k, v (B, T, H), pk, pv (n, H), bias (B, 1, 1, T).
    Returns (K' (B, n+T, H), V' (B, n+T, H), m' (B, 1, 1, n+T))."""
    xp = get_xp(k)
    B, n, H = k.shape[0], pk.shape[0], k.shape[2]
    k2 = xp.concatenate([xp.broadcast_to(pk, (B, n, H)), k], axis=1)
    v2 = xp.concatenate([xp.broadcast_to(pv, (B, n, H)), v], axis=1)
    zeros = xp.zeros((bias.shape[0], 1, 1, n), bias.dtype)
    return k2, v2, xp.concatenate([zeros, bias], axis=-1)


def forward(q, k, v, pk, pv, bias, n_heads, p_drop=0.0, rng=None, train=False,
            attention=reference_attention):
    """Attention with the prefix joined to its keys and values. Inputs: q (B, Tq, H), k, v (B, T, H),
    pk, pv (n, H), bias (B, 1, 1, T) from attention.mask_bias; `attention` is the op to run.
    Returns (c (B, Tq, H), cache)."""
    k2, v2, bias2 = join(k, v, pk, pv, bias)
    c, attn = attention.forward(q, k2, v2, bias2, n_heads, p_drop, rng, train)
    return c, PrefixAttentionCache(pk.shape[0], attention, attn)


def backward(dc, cache):
    """Inputs: dc (B, Tq, H). Returns (dq (B, Tq, H), dk, dv (B, T, H), dpk, dpv (n, H))."""
    n = cache.n
    # c = attention(q, K', V', m')
    dq, dk2, dv2 = cache.attention.backward(dc, cache.attn)
    # K' = [Pk; k], V' = [Pv; v]: the first n rows are the prefix's, shared by the batch
    return dq, dk2[:, n:], dv2[:, n:], dk2[:, :n].sum(axis=0), dv2[:, :n].sum(axis=0)


def layer_kv(table, i, hidden):
    """Layer i's (Pk, Pv), each (n, H) views, from PEFT's table P (n, 2 L H)."""
    return table[:, 2 * i * hidden:(2 * i + 1) * hidden], table[:, (2 * i + 1) * hidden:(2 * i + 2) * hidden]


def table_grad(dks, dvs):
    """Backward of layer_kv over all layers: dP (n, 2 L H) from the lists [dPk_i], [dPv_i]."""
    xp = get_xp(dks[0])
    return xp.concatenate([d for pair in zip(dks, dvs) for d in pair], axis=1)


def init_table(n, layers, hidden, rng, dtype):
    """PEFT's PrefixEncoder without projection: a torch Embedding (n, 2 L H), N(0, 1)."""
    return rng.standard_normal((n, 2 * layers * hidden)).astype(dtype)


def init_reparam(n, layers, hidden, width, rng, dtype):
    """PEFT's PrefixEncoder with projection: E (n, H) ~ N(0, 1) (an Embedding), and two torch
    Linears, weights and biases ~ U(-1/sqrt(in), 1/sqrt(in)). Returns {"embedding", "w1", "b1",
    "w2", "b2"}."""
    out = 2 * layers * hidden
    b1, b2 = 1.0 / math.sqrt(hidden), 1.0 / math.sqrt(width)
    return {"embedding": rng.standard_normal((n, hidden)).astype(dtype),
            "w1": rng.uniform(-b1, b1, (width, hidden)).astype(dtype),
            "b1": rng.uniform(-b1, b1, width).astype(dtype),
            "w2": rng.uniform(-b2, b2, (out, width)).astype(dtype),
            "b2": rng.uniform(-b2, b2, out).astype(dtype)}


def reparam_forward(e, w1, b1, w2, b2):
    """P = tanh(E W1^T + b1) W2^T + b2. Inputs: e (n, H), w1 (Hp, H), b1 (Hp,), w2 (2LH, Hp),
    b2 (2LH,). Returns (P (n, 2 L H), cache)."""
    z, first = linear.forward(e, w1, b1)  # (n, Hp)
    t, th = tanh.forward(z)
    p, second = linear.forward(t, w2, b2)  # (n, 2LH)
    return p, ReparamCache(first, th, second)


def reparam_backward(dp, cache):
    """Inputs: dP (n, 2 L H). Returns (dE, dW1, db1, dW2, db2)."""
    # P = t W2^T + b2
    dt, dw2, db2 = linear.backward(dp, cache.second)
    # t = tanh(z)
    (dz,) = tanh.backward(dt, cache.tanh)
    # z = E W1^T + b1
    de, dw1, db1 = linear.backward(dz, cache.first)
    return de, dw1, db1, dw2, db2


def merge(e, w1, b1, w2, b2):
    """The reparameterisation merged away: P, evaluated once, is all inference (and the file) needs."""
    return reparam_forward(e, w1, b1, w2, b2)[0]
