"""Layers as forward/backward pairs: `out, cache = op.forward(...)`, `dx, ... = op.backward(dout, cache)`."""
from . import (adapter, attention, cls_attention, dropout, embedding, gelu, layernorm, linear, loss,
               relu, swish, tanh)

__all__ = ["adapter", "attention", "cls_attention", "dropout", "embedding", "gelu", "layernorm",
           "linear", "loss", "relu", "swish", "tanh"]
