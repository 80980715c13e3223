"""Layers as forward/backward pairs: `out, cache = op.forward(...)`, `dx, ... = op.backward(dout, cache)`."""
from . import (adapter, attention, dropout, embedding, gelu, layernorm, linear, loss, relu, swish,
               tanh)

__all__ = ["adapter", "attention", "dropout", "embedding", "gelu", "layernorm", "linear", "loss",
           "relu", "swish", "tanh"]
