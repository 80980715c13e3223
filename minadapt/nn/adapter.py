"""The bottleneck adapter (Houlsby et al., 2019, "Parameter-Efficient Transfer Learning").

Dimensions: N = rows (batch x tokens), H = hidden, m = bottleneck (m << H).

Forward:   z = h W_down^T + b_down          (N, m)   down-projection
           u = f(z)                                   non-linearity: swish (default), gelu or relu
           y = h + u W_up^T + b_up          (N, H)   up-projection, plus the skip connection
Backward:  du = dy W_up,  dW_up = dy^T u,  db_up = sum dy
           dz = f'(z) du
           dh = dy + dz W_down               (the skip connection adds dy)
           dW_down = dz^T h,  db_down = sum dz

Parameters: 2 m H + m + H per adapter. With W_up = 0 and b_up = 0 the adapter is exactly the
identity (y = h) whatever W_down is, so a freshly added adapter leaves the pretrained model
unchanged, while W_down's small random values break the symmetry between the m hidden units, so
they learn different things once W_up moves away from zero.

Where it sits in a BERT layer is the architecture's business (bert.py, `ADAPTER_SITES`): Houlsby's
two per layer sit "before the residual add and LayerNorm":
    LayerNorm(x + adapter(dropout(dense(attention(x)))))      and likewise after the FFN.
Inside the encoder the skip connection is the residual sum the layer forms anyway, so bert.py
calls it with skip=False (y = u W_up^T + b_up alone) and adds the result to that sum; Pfeiffer's
adapter reads a LayerNorm of the sum instead (bert.ADAPTER_READS).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import gelu, gelu_tanh, linear, relu, swish

NON_LINEARITIES = {"swish": swish, "gelu": gelu, "relu": relu, "gelu_tanh": gelu_tanh}
KEYS = ("adapter_down.0.weight", "adapter_down.0.bias", "adapter_up.weight", "adapter_up.bias")


class AdapterCache(NamedTuple):
    down: object  # linear cache of the down-projection
    act: object  # (module, cache) of the non-linearity
    up: object  # linear cache of the up-projection
    skip: bool  # whether y includes h


INITS = ("near_identity", "truncated_normal")


def truncated_normal(shape, std, rng):
    """N(0, std^2) with every draw beyond 2 std redrawn (TensorFlow's truncated_normal_initializer,
    which adapter-bert uses)."""
    z = rng.standard_normal(shape)
    out = np.abs(z) > 2.0
    while out.any():
        z[out] = rng.standard_normal(int(out.sum()))
        out = np.abs(z) > 2.0
    return z * std


def init_params(hidden, bottleneck, rng, dtype, std=1e-2, init="near_identity"):
    """init="near_identity": W_down ~ N(0, std^2), W_up = 0, biases 0 (exactly the identity).
    init="truncated_normal": W_down and W_up ~ N(0, std^2) truncated at 2 std, biases 0 (adapter-bert,
    std 1e-3: near the identity, off it by about std^2 m). Returns a dict of NumPy arrays keyed by the
    AdapterHub names relative to the adapter (adapter_down.0.*, adapter_up.*)."""
    if init == "truncated_normal":
        w_down = truncated_normal((bottleneck, hidden), std, rng)
        w_up = truncated_normal((hidden, bottleneck), std, rng)
    else:
        w_down = rng.standard_normal((bottleneck, hidden)) * std
        w_up = np.zeros((hidden, bottleneck))
    return {
        "adapter_down.0.weight": w_down.astype(dtype),
        "adapter_down.0.bias": np.zeros(bottleneck, dtype),
        "adapter_up.weight": w_up.astype(dtype),
        "adapter_up.bias": np.zeros(hidden, dtype),
    }


def forward(h, w_down, b_down, w_up, b_up, act=swish, skip=True):
    """Inputs: h (..., H), w_down (m, H), b_down (m,), w_up (H, m), b_up (H,); act: the
    non-linearity, a module with forward and backward (NON_LINEARITIES); skip=False leaves out the
    skip connection (y = u W_up^T + b_up: the caller adds it where it belongs).
    Returns (y (..., H), cache)."""
    z, down_cache = linear.forward(h, w_down, b_down)
    u, act_cache = act.forward(z)
    y, up_cache = linear.forward(u, w_up, b_up)
    return (h + y if skip else y), AdapterCache(down_cache, (act, act_cache), up_cache, skip)


def backward(dy, cache):
    """Inputs: dy (..., H). Returns (dh, dw_down, db_down, dw_up, db_up)."""
    act, act_cache = cache.act
    # y = h + u W_up^T + b_up
    du, dw_up, db_up = linear.backward(dy, cache.up)
    # u = f(z)
    (dz,) = act.backward(du, act_cache)
    # z = h W_down^T + b_down
    dh, dw_down, db_down = linear.backward(dz, cache.down)
    if cache.skip:
        dh = dh + dy  # y = h + ...: the skip connection
    return dh, dw_down, db_down, dw_up, db_up
