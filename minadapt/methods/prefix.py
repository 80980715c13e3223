"""Prefix tuning (Li & Liang, 2021), the method "prefix": n trained keys and values in front of
every attention's own, in every layer (nn/prefix.py).

    c = attention(q, [Pk_i; k], [Pv_i; v], [0; mask])         in layer i

As PEFT's PrefixTuningConfig on BERT: one table P (n, 2 L H) holds every layer's Pk and Pv, the
sentence's positions start at n (transformers numbers them after a key/value cache of length n),
and with `projection` P is made by PEFT's reparameterisation, an embedding E (n, H) and a two-layer
MLP, P = tanh(E W1^T + b1) W2^T + b2, which trains E, W1, b1, W2, b2 instead of P. After training
the MLP can be merged away (`table` evaluates it once; PEFT's directory holds P alone, and reads
back as a plain prefix). Parameters, under prefix_encoder.{name}.: embedding.weight (P, or E with
the projection), transform.0.weight|bias, transform.2.weight|bias. Every attention is n keys wider;
the sequence keeps its T rows. The prefix cannot be merged into the weights.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import bert
from ..backend import to_numpy
from ..config import positive_int
from ..errors import ConfigError
from ..nn import prefix
from .base import Method, Option
from .prompt import VIRTUAL_TOKENS


@dataclass(frozen=True)
class PrefixConfig:
    name: str  # used in parameter names: prefix_encoder.{name}.embedding.weight
    virtual_tokens: int = 20  # n, PEFT's num_virtual_tokens
    projection: bool = False  # PEFT's prefix_projection: train P through an embedding and an MLP
    width: int = 512  # the MLP's hidden width Hp, PEFT's encoder_hidden_size (projection only)
    shift_positions: bool = True  # the sentence's positions start at n (PEFT); False: at 0 (AdapterHub)

    def __post_init__(self):
        for field in ("virtual_tokens", "width"):
            v = getattr(self, field)
            if not (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
                raise ConfigError(f"{field}={v!r}: expected a whole number, 1 or more")


def add(model, name: str, config: PrefixConfig, seed: int = 0):
    c = model.cfg
    if config.shift_positions and config.virtual_tokens >= c.max_position_embeddings:
        raise ConfigError(f"virtual_tokens={config.virtual_tokens}: the checkpoint has "
                          f"{c.max_position_embeddings} positions, and the sentence needs some")
    rng = np.random.default_rng(seed)
    names = bert.prefix_names(name, config.projection)
    if config.projection:
        init = prefix.init_reparam(config.virtual_tokens, c.num_hidden_layers, c.hidden_size,
                                   config.width, rng, model.dtype)
        values = [init[k] for k in ("embedding", "w1", "b1", "w2", "b2")]
    else:
        values = [prefix.init_table(config.virtual_tokens, c.num_hidden_layers, c.hidden_size, rng,
                                    model.dtype)]
    model.put(dict(zip(names, values)))
    model.add_trainable(name, names)


def table(model, name: str) -> np.ndarray:
    """Task `name`'s prefix table P (n, 2 L H) on the host: the trained table, or the MLP's output."""
    config = model.config_of(name)
    names = bert.prefix_names(name, config.projection)
    values = [to_numpy(model.params[k]) for k in names]
    return prefix.merge(*values) if config.projection else values[0].copy()


PREFIX = Method(
    "prefix", "n trained keys and values before every attention's own, in every layer + the head",
    default_lr=1e-2, config=PrefixConfig, add=add, run_field="prefix", file_key="prefix",
    options=(VIRTUAL_TOKENS,
             Option("projection", bool, "train the prefix through an embedding and a two-layer MLP "
                    "(PEFT's prefix_projection), merged away when saved in PEFT's format; the MLP "
                    "wants a smaller learning rate than the table (--lr 1e-3)",
                    flag_only=True, flag_name="--prefix-projection"),
             Option("width", positive_int, "the MLP's hidden width (default: 512)", metavar="W",
                    flag_name="--prefix-width")),
    sweep=("virtual_tokens", (20,), None))
