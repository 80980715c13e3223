"""The reference ops: each layer as a forward/backward pair in the plainest NumPy that states its
maths. `out, cache = op.forward(...)`, `dx, ... = op.backward(dout, cache)`.

These are the code the lessons show and the exercises ask a learner to write. `minadapt.fast`
holds faster versions of some of them, each tested equal to its reference here; `adamw` is the
plain optimiser update (minadapt.optim.AdamW is its packed, in-place version)."""
from . import (adamw, adapter, attention, dropout, embedding, gelu, gelu_tanh, ia3, layernorm, linear, lora, loss,
               prefix, prompt,
               relu, swish, tanh)

__all__ = ["adamw", "adapter", "attention", "dropout", "embedding", "gelu", "gelu_tanh", "layernorm", "linear",
           "lora", "loss", "ia3", "prefix", "prompt",
           "relu", "swish", "tanh"]
