"""Softmax cross-entropy, averaged over the batch.

Dimensions: B = batch, C = classes.

Forward:   p = softmax(z),   L = -(1/B) sum_b log p[b, y_b]
Backward:  dL/dz = (p - onehot(y)) / B
"""
from __future__ import annotations

from typing import NamedTuple

from ..backend import get_xp


class CrossEntropyCache(NamedTuple):
    p: object  # (B, C) probabilities
    labels: object  # (B,) ints


def forward(logits, labels):
    """Inputs: logits (B, C), labels (B,) ints in [0, C). Returns (loss scalar array, cache)."""
    xp = get_xp(logits)
    z = logits - logits.max(axis=1, keepdims=True)
    logsumexp = xp.log(xp.exp(z).sum(axis=1, keepdims=True))
    logp = z - logsumexp
    rows = xp.arange(logits.shape[0])
    loss = -logp[rows, labels].mean()
    return loss, CrossEntropyCache(xp.exp(logp), labels)


def backward(dloss, cache):
    """Inputs: dloss, the upstream scalar (1.0 for the loss itself). Returns (dlogits,)."""
    xp = get_xp(cache.p)
    p, labels = cache
    dz = p.copy()
    dz[xp.arange(p.shape[0]), labels] -= 1.0
    dz *= dloss / p.shape[0]
    return (dz,)
