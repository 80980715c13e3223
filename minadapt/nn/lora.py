"""LoRA (Hu et al., 2021, "Low-Rank Adaptation"): a frozen linear layer plus a trained low-rank term.

Dimensions: N = rows (batch x tokens), D = in features, O = out features, r = rank (r << D, O).

Forward:   y = x W^T + b + s * dropout(x) A^T B^T,    s = alpha / r        (N, O)
              W (O, D), b (O,) frozen;  A (r, D), B (O, r) trained
Backward:  with xd = dropout(x), t = xd A^T (N, r) and g = s * dy (N, O):
           dB = g^T t,   dt = g B,   dA = dt^T xd,
           dx = dy W + dropout_backward(dt A)       (the frozen path and the low-rank path)

The update B A has rank r: r (D + O) parameters instead of D O. Init as PEFT's: A ~ kaiming-uniform
with a = sqrt(5), i.e. U(-1/sqrt(D), 1/sqrt(D)) (torch's default for a Linear), and B = 0, so a
fresh LoRA leaves the layer as it was, while A's random rows make B's gradient non-zero from the
first step (dB = g^T t, and t = xd A^T is not zero). For inference the term folds into the weight,
W' = W + s B A, and the layer is a plain linear again (model.merge_lora).

`delta_forward`/`delta_backward` are the low-rank term alone: bert.py adds it to the query and
value slices of its fused Q|K|V matmul, which computes x W^T + b for all three at once
(`add_to_slices`).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from ..backend import get_xp
from . import dropout, linear


class LoraCache(NamedTuple):
    drop: object  # dropout cache on x, in x's shape (None at evaluation or p = 0)
    xd: object  # (N, D) dropout(x), for dA
    t: object  # (N, r) xd A^T, for dB
    a: object  # (r, D)
    b: object  # (O, r)
    scale: float  # s = alpha / r


class LoraLinearCache(NamedTuple):
    base: object  # linear cache of the frozen x W^T + b
    lora: LoraCache


def init_params(in_features, out_features, r, rng, dtype):
    """PEFT's init: A (r, D) ~ U(-1/sqrt(D), 1/sqrt(D)) (kaiming-uniform, a = sqrt 5), B (O, r) = 0."""
    bound = 1.0 / math.sqrt(in_features)
    return {"lora_A": rng.uniform(-bound, bound, (r, in_features)).astype(dtype),
            "lora_B": np.zeros((out_features, r), dtype)}


def delta_forward(x, a, b, scale, p=0.0, rng=None, train=False):
    """The low-rank term s * dropout(x) A^T B^T. Inputs: x (..., D), a (r, D), b (O, r).
    Returns (delta (..., O), cache)."""
    xd, drop = dropout.forward(x, p, rng, train)  # in x's own shape: a mask row per sentence
    xd = xd.reshape(-1, x.shape[-1])  # (N, D)
    t = xd @ a.T  # (N, r)
    delta = (scale * t) @ b.T  # (N, O); s applied to the thin (N, r) factor, r numbers a row
    return delta.reshape(*x.shape[:-1], b.shape[0]), LoraCache(drop, xd, t, a, b, scale)


def delta_backward(dy, cache):
    """Inputs: dy (..., O). Returns (dx (..., D), dA (r, D), dB (O, r))."""
    drop, xd, t, a, b, scale = cache
    g = scale * dy.reshape(-1, dy.shape[-1])  # (N, O)
    # in the forward pass this was: delta = s * t B^T  ->  dB = s dy^T t,  dt = s dy B
    db = g.T @ t
    dt = g @ b  # (N, r)
    # t = xd A^T  ->  dA = dt^T xd,  dxd = dt A
    da = dt.T @ xd
    (dx,) = dropout.backward((dt @ a).reshape(*dy.shape[:-1], a.shape[1]), drop)
    return dx, da, db


def add_to_slices(y, deltas):
    """y (..., n O), the outputs of n projections side by side, plus a low-rank term on some of them:
    deltas {j: delta_j (..., O)} gives [y_0 + delta_0 | y_1 | ...] (a slice without a term is
    unchanged). Returns a new array; y is left as it was."""
    O = next(iter(deltas.values())).shape[-1]
    parts = [y[..., j * O:(j + 1) * O] for j in range(y.shape[-1] // O)]  # views
    return get_xp(y).concatenate([p + deltas[j] if j in deltas else p for j, p in enumerate(parts)],
                                 axis=-1)


def forward(x, w, bias, a, b, scale, p=0.0, rng=None, train=False):
    """A whole LoRA linear: y = x W^T + bias + s dropout(x) A^T B^T, W and bias frozen.
    Returns (y (..., O), cache)."""
    y, base = linear.forward(x, w, bias, frozen=True)
    delta, lora = delta_forward(x, a, b, scale, p, rng, train)
    return y + delta, LoraLinearCache(base, lora)


def backward(dy, cache):
    """Returns (dx, dA, dB): dx through both the frozen path and the low-rank one."""
    # y = x W^T + b  (frozen: dx only)
    dx, _, _ = linear.backward(dy, cache.base)
    # + s dropout(x) A^T B^T
    dx_lora, da, db = delta_backward(dy, cache.lora)
    return dx + dx_lora, da, db


def merged_weight(w, a, b, scale):
    """W + s B A: the LoRA folded into the frozen weight, for inference. (O, D)."""
    return w + scale * (b @ a)
