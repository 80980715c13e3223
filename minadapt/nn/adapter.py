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
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import gelu, linear, relu, swish

NON_LINEARITIES = {"swish": swish, "gelu": gelu, "relu": relu}
KEYS = ("adapter_down.0.weight", "adapter_down.0.bias", "adapter_up.weight", "adapter_up.bias")


class AdapterCache(NamedTuple):
    down: object  # linear cache of the down-projection
    act: object  # (module, cache) of the non-linearity
    up: object  # linear cache of the up-projection


def init_params(hidden, bottleneck, rng, dtype, std=1e-2):
    """Near-identity init: W_down ~ N(0, std^2), W_up = 0, biases 0. Returns a dict of NumPy arrays
    keyed by the AdapterHub names relative to the adapter (adapter_down.0.*, adapter_up.*)."""
    return {
        "adapter_down.0.weight": (rng.standard_normal((bottleneck, hidden)) * std).astype(dtype),
        "adapter_down.0.bias": np.zeros(bottleneck, dtype),
        "adapter_up.weight": np.zeros((hidden, bottleneck), dtype),
        "adapter_up.bias": np.zeros(hidden, dtype),
    }


def forward(h, w_down, b_down, w_up, b_up, act=swish):
    """Inputs: h (..., H), w_down (m, H), b_down (m,), w_up (H, m), b_up (H,); act: the
    non-linearity, a module with forward and backward (NON_LINEARITIES). Returns (y (..., H), cache)."""
    z, down_cache = linear.forward(h, w_down, b_down)
    u, act_cache = act.forward(z)
    y, up_cache = linear.forward(u, w_up, b_up)
    return h + y, AdapterCache(down_cache, (act, act_cache), up_cache)


def backward(dy, cache):
    """Inputs: dy (..., H). Returns (dh, dw_down, db_down, dw_up, db_up)."""
    act, act_cache = cache.act
    # y = h + u W_up^T + b_up
    du, dw_up, db_up = linear.backward(dy, cache.up)
    # u = f(z)
    (dz,) = act.backward(du, act_cache)
    # z = h W_down^T + b_down
    dh, dw_down, db_down = linear.backward(dz, cache.down)
    return dh + dy, dw_down, db_down, dw_up, db_up  # + dy: the skip connection
