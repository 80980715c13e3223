"""Mean squared error, averaged over every element: the loss of a regression head (STS-B).

Dimensions: B = batch (the head gives one output per example, (B, 1), or (B,)).

Forward:   d = pred - target,   L = (1/n) sum_i d_i^2,   n = number of elements
Backward:  dL/dpred = (2/n) d

(torch.nn.MSELoss with reduction "mean", as transformers' BertForSequenceClassification uses for
num_labels == 1: there the (B, 1) logits and (B,) labels are squeezed to the same shape first; here
a target with the same number of elements is reshaped to pred's shape.)
"""
from __future__ import annotations

from typing import NamedTuple

from ..backend import get_xp


class MSECache(NamedTuple):
    diff: object  # pred - target, shaped like pred


def forward(pred, target):
    """Inputs: pred (B, 1) or (B,); target with as many elements (e.g. (B,)).
    Returns (loss, a scalar array; cache)."""
    xp = get_xp(pred)
    target = xp.asarray(target, dtype=pred.dtype)
    if target.size != pred.size:
        raise ValueError(f"pred has {pred.size} elements, target {target.size}: one target per output")
    diff = pred - target.reshape(pred.shape)  # (B, 1)
    loss = (diff * diff).mean()
    return loss, MSECache(diff)


def backward(dloss, cache):
    """Inputs: dloss, the upstream scalar (1.0 for the loss itself). Returns (dpred,)."""
    # in the forward pass this was: loss = (diff * diff).mean(), diff = pred - target
    diff = cache.diff
    dpred = (2.0 * dloss / diff.size) * diff  # a fresh array: diff is not edited
    return (dpred,)
