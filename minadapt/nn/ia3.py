"""IA3 (Liu et al., 2022, "(IA)^3"): a learned scale per channel, initialised at one.

Dimensions: N = leading rows (batch x tokens), D = channels of the scaled activation.

Forward:   y = x * l          l (D,), broadcast over the rows
Backward:  dx = dy * l,   dl = sum over rows of dy * x

Where it acts, as PEFT's IA3Config does for BERT by default (target_modules = key, value,
output.dense; feedforward_modules = output.dense; PEFT matches "output.dense" by name ending, so
the attention's output projection is caught too):
    k = (x Wk^T + bk) * l_k                  a target: its output is scaled (bias included)
    v = (x Wv^T + bv) * l_v
    a = (c * l_ao) Wo^T + bo                 "attention.output.dense", a feed-forward module in
                                             PEFT's sense: its *input* (the context) is scaled
    o = (gelu(h Wi^T + bi) * l_ff) Wo2^T + bo2     "output.dense": the intermediate activation
With l = 1 the layer is the backbone's. Per layer 3 H + F numbers (all-MiniLM-L6-v2: 2,688;
16,128 in its six layers).

Merging: a scale on a linear's output or input folds into its weight, so IA3 costs nothing at
inference once merged (as LoRA):
    output:  (x W^T + b) * l = x (diag(l) W)^T + l * b          `merged_output`
    input:   (x * l) W^T + b = x (W diag(l))^T + b              `merged_input`
"""
from __future__ import annotations

from typing import NamedTuple

# PEFT's defaults for BERT, as minadapt sites: where the scale sits and whether it scales the
# linear layer's output ("out") or its input ("in").
SITES = {"key": "out", "value": "out", "attention.output.dense": "in", "output.dense": "in"}


class IA3Cache(NamedTuple):
    x: object  # (..., D) the unscaled activation, for dl
    l: object  # (D,)


def init_params(channels, xp, dtype):
    """Ones: a fresh IA3 is the identity, so step 0 is the backbone."""
    return xp.ones(channels, dtype)


def forward(x, l):
    """Inputs: x (..., D), l (D,). Returns (x * l, cache)."""
    return x * l, IA3Cache(x, l)


def backward(dy, cache):
    """Inputs: dy (..., D). Returns (dx (..., D), dl (D,))."""
    x, l = cache
    # in the forward pass this was: y = x * l  ->  dx = dy * l,  dl_d = sum_rows dy_d x_d
    dl = (dy * x).reshape(-1, x.shape[-1]).sum(axis=0)
    return dy * l, dl


def merged_output(w, b, l):
    """A scale on a linear's output folded in: (diag(l) W, l * b). w (O, D), b (O,), l (O,)."""
    return w * l[:, None], b * l


def merged_input(w, l):
    """A scale on a linear's input folded in: W diag(l). w (O, D), l (D,). The bias is unchanged."""
    return w * l[None, :]
