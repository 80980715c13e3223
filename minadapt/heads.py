"""The classification head on the [CLS] vector, in AdapterHub's default shape.

Dimensions: B = batch, H = hidden, C = labels.

    z = dropout(h_cls) W1^T + b1      (B, H)   heads.{name}.1
    t = tanh(z)
    logits = dropout(t) W4^T + b4     (B, C)   heads.{name}.4

The numbers 1 and 4 are the positions in AdapterHub's nn.Sequential(Dropout, Linear, Tanh, Dropout,
Linear), kept in the names so that an adapter file made here loads there and back.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .nn import dropout, linear, tanh


class HeadCache(NamedTuple):
    drop0: object
    dense1: object
    tanh: object
    drop3: object
    dense4: object


def head_names(name: str) -> list[str]:
    p = f"heads.{name}."
    return [p + "1.weight", p + "1.bias", p + "4.weight", p + "4.bias"]


def init_params(name, hidden, num_labels, rng, dtype, std=0.02):
    """BERT-style init: weights ~ N(0, 0.02^2), biases 0."""
    w1, b1, w4, b4 = head_names(name)
    return {
        w1: (rng.standard_normal((hidden, hidden)) * std).astype(dtype),
        b1: np.zeros(hidden, dtype),
        w4: (rng.standard_normal((num_labels, hidden)) * std).astype(dtype),
        b4: np.zeros(num_labels, dtype),
    }


def forward(h_cls, params, name, p_drop=0.1, rng=None, train=False, dropout=dropout, linear=linear):
    """Inputs: h_cls (B, H) the final hidden state of [CLS]; `dropout` the dropout op (nn's, or
    the fast one); `linear` the linear op (nn's, or a learner's: minadapt.learner).
    Returns (logits (B, C), cache)."""
    w1, b1, w4, b4 = (params[k] for k in head_names(name))
    x, drop0 = dropout.forward(h_cls, p_drop, rng, train)
    z, dense1 = linear.forward(x, w1, b1)
    t, tanh_cache = tanh.forward(z)
    t, drop3 = dropout.forward(t, p_drop, rng, train)
    logits, dense4 = linear.forward(t, w4, b4)
    return logits, HeadCache(drop0, dense1, tanh_cache, drop3, dense4)


def backward(dlogits, cache, name, dropout=dropout, linear=linear):
    """Inputs: dlogits (B, C). Returns (dh_cls (B, H), grads dict keyed by parameter name)."""
    w1, b1, w4, b4 = head_names(name)
    grads = {}
    # logits = dropout(t) W4^T + b4
    dt, grads[w4], grads[b4] = linear.backward(dlogits, cache.dense4)
    (dt,) = dropout.backward(dt, cache.drop3)
    # t = tanh(z)
    (dz,) = tanh.backward(dt, cache.tanh)
    # z = dropout(h_cls) W1^T + b1
    dx, grads[w1], grads[b1] = linear.backward(dz, cache.dense1)
    (dh,) = dropout.backward(dx, cache.drop0)
    return dh, grads
