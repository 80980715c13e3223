"""Bottleneck adapters (Houlsby et al., 2019; Pfeiffer et al., 2021): the methods "houlsby" and
"pfeiffer", the same adapter at different places in a layer.

    h <- h + W_up f(W_down u + b_down) + b_up          (nn/adapter.py; bert.sublayer_end_forward)

houlsby   AdapterHub's DoubleSeqBnConfig: two per layer, after the attention and after the
          feed-forward block, each reading its sub-layer's output;
pfeiffer  AdapterHub's SeqBnConfig: one per layer after the feed-forward block, reading
          LayerNorm(o + h) (bert.ADAPTER_READS says how).

Depth: `adapter_layers` puts adapters in some layers only: K (the top K layers) or the layer
indices; AdapterHub says the same as `leave_out`, the layers without (`leave_out()` converts).
Backward stops at the lowest layer with an adapter (Model.lowest_trainable_layer), so fewer, higher
adapters also train faster. With train_layer_norms, every layer's LayerNorms still train.

Width: `minadapt train` and `compare` use bottleneck m = 64 for both, minadapt's own choice
(adapter-bert, Houlsby et al.'s code, uses 64). AdapterHub's reduction factor 16 (DoubleSeqBnConfig
and SeqBnConfig) gives m = H/16 = 24 on the 384-wide MiniLM: that is what
`Model.add_adapter(name, architecture="pfeiffer")` gives when no bottleneck is named, as AdapterHub
would.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import bert
from ..backend import to_numpy
from ..config import positive_int
from ..errors import ConfigError
from ..nn import adapter
from .base import Method, Option

# What `preset=` sets. "houlsby-paper" is google-research/adapter-bert, the code of Houlsby et al.
# (2019); where it differs from AdapterHub's Houlsby default (DoubleSeqBnConfig, which the
# defaults follow):
#   non-linearity  tanh-form GELU (BERT's TF gelu)        AdapterHub: swish
#   init           W_down and W_up ~ N(0, 1e-3^2) truncated at 2 std, biases 0, so the adapter starts
#                  near, not at, the identity            AdapterHub "bert": both N(0, 0.02^2);
#                                                        minadapt's default: W_down N(0, 0.01^2), W_up 0
#   LayerNorms     trained, as the adapter's own copies  AdapterHub: frozen
# Placement is the same (after each sub-layer's dense + dropout, before its residual add and
# LayerNorm), and so is the bottleneck (adapter-bert's adapter_size, 64 by default).
PRESETS = {
    "houlsby-paper": dict(non_linearity="gelu_tanh", train_layer_norms=True, init="truncated_normal",
                          init_std=1e-3, architecture="houlsby"),
}


@dataclass(frozen=True)
class AdapterConfig:
    name: str  # used in parameter names: ...adapters.{name}.adapter_down.0.weight
    bottleneck: int = 64  # m: width of the down-projection
    non_linearity: str = "swish"  # swish (AdapterHub's default), gelu, relu or gelu_tanh
    train_layer_norms: bool = False  # Houlsby also trains the layers' LayerNorms (its own copies)
    init_std: float = 1e-2  # std of W_down at init (W_up starts at 0: the identity)
    architecture: str = "houlsby"  # where adapters sit in a layer: bert.ADAPTER_SITES
    init: str = "near_identity"  # or "truncated_normal" (both projections): nn.adapter.init_params
    preset: str | None = None  # "houlsby-paper" sets the fields PRESETS names (and only those)
    adapter_layers: int | tuple | None = None  # K: the top K layers; (i, j, ...): those layers;
    #                                            None: every layer

    def __post_init__(self):
        if self.preset is not None:
            if self.preset not in PRESETS:
                raise ConfigError(f"preset {self.preset!r}: expected one of {', '.join(PRESETS)}")
            if self.non_linearity != "swish" or self.train_layer_norms:
                raise ConfigError(f"preset {self.preset!r} sets the non-linearity and the LayerNorms "
                                  "itself: leave non_linearity and train_layer_norms alone")
            for k, v in PRESETS[self.preset].items():
                object.__setattr__(self, k, v)
            object.__setattr__(self, "preset", None)  # applied: the fields now say it all
        if not (isinstance(self.bottleneck, int) and not isinstance(self.bottleneck, bool)
                and self.bottleneck >= 1):
            raise ConfigError(f"bottleneck {self.bottleneck!r}: expected a whole number, 1 or more")
        if self.non_linearity not in adapter.NON_LINEARITIES:
            raise ConfigError(f"non_linearity {self.non_linearity!r}: expected one of "
                              f"{', '.join(adapter.NON_LINEARITIES)}")
        if self.architecture not in bert.ADAPTER_SITES:
            raise ConfigError(f"architecture {self.architecture!r}: expected one of "
                              f"{', '.join(bert.ADAPTER_SITES)}")
        if self.init not in adapter.INITS:
            raise ConfigError(f"init {self.init!r}: expected one of {', '.join(adapter.INITS)}")
        layers = self.adapter_layers
        if isinstance(layers, list):  # as JSON stores a tuple
            layers = tuple(layers)
            object.__setattr__(self, "adapter_layers", layers)
        whole = lambda v, low: isinstance(v, int) and not isinstance(v, bool) and v >= low  # noqa: E731
        if not (layers is None or whole(layers, 1)
                or (isinstance(layers, tuple) and layers and all(whole(i, 0) for i in layers)
                    and len(set(layers)) == len(layers))):
            raise ConfigError(f"adapter_layers {layers!r}: expected K >= 1 (the top K layers) or "
                              "distinct layer indices >= 0")
        if isinstance(layers, tuple):
            object.__setattr__(self, "adapter_layers", tuple(sorted(layers)))

    def layers(self, num_layers: int) -> tuple[int, ...]:
        """The layers that hold an adapter, of a model with `num_layers` layers."""
        k = self.adapter_layers
        if k is None:
            return tuple(range(num_layers))
        if isinstance(k, int):
            if k > num_layers:
                raise ConfigError(f"adapter_layers {k}: the model has only {num_layers} layers")
            return tuple(range(num_layers - k, num_layers))
        if max(k) >= num_layers:
            raise ConfigError(f"adapter_layers {k}: layer {max(k)} does not exist (the model has "
                              f"layers 0 to {num_layers - 1})")
        return k

    def leave_out(self, num_layers: int) -> list[int]:
        """AdapterHub's leave_out: the layers without an adapter."""
        return sorted(set(range(num_layers)) - set(self.layers(num_layers)))


def layer_list(text: str):
    """--adapter-layers' text: "2" -> 2 (the top 2 layers), "0,5" -> (0, 5) (those layers)."""
    import argparse

    parts = [v.strip() for v in text.split(",")]
    if not all(v.isdigit() for v in parts if v) or not any(parts) or ("," not in text and int(text) < 1):
        raise argparse.ArgumentTypeError(f"expected K >= 1 (the top K layers) or layer indices "
                                         f"(4,5), got {text!r}")
    return int(text) if "," not in text else tuple(int(v) for v in parts if v)


def add(model, name: str, config: AdapterConfig, seed: int = 0):
    """Adapters for task `name` at the architecture's sites in config.layers() (and, with
    train_layer_norms, the task's own copies of every layer's LayerNorms, starting as the
    backbone's): they become `name`'s trainable parameters."""
    rng = np.random.default_rng(seed)
    trainable = set()
    with_adapter = config.layers(model.cfg.num_hidden_layers)
    for i in range(model.cfg.num_hidden_layers):
        for where in bert.ADAPTER_SITES[config.architecture] if i in with_adapter else ():
            prefix = bert.adapter_prefix(i, where, name)
            values = adapter.init_params(model.cfg.hidden_size, config.bottleneck, rng, model.dtype,
                                         config.init_std, config.init)
            model.put({prefix + k: v for k, v in values.items()})
            trainable.update(prefix + k for k in values)
        if config.train_layer_norms:
            for where in ("attention.output", "output"):
                own, shared = bert.layer_norm_prefix(i, where, config), bert.layer_norm_prefix(i, where)
                for t in ("weight", "bias"):
                    model.put({own + t: to_numpy(model.params[shared + t])})
                    trainable.add(own + t)
    model.add_trainable(name, trainable)


OPTIONS = (
    Option("bottleneck", positive_int, "adapter width m; each adapter has 2*m*H + m + H parameters "
           "(default: 64)"),
    Option("non_linearity", str, "f between the adapter's down- and up-projection (default: swish)",
           choices=("swish", "gelu", "relu")),
    Option("train_layer_norms", bool, "also train the layers' LayerNorms (as Houlsby et al. did)",
           flag_only=True),
    Option("adapter_layers", layer_list, "adapters in the top K layers only, or in the layers listed "
           "(e.g. 4,5); backward stops at the lowest (default: every layer)", metavar="K|I,J,..."),
)

HOULSBY = Method(
    "houlsby", "two bottleneck adapters per layer (after attention and after the FFN) + the head",
    default_lr=2e-3, config=AdapterConfig, add=add, run_field="adapter", file_key="adapter",
    options=OPTIONS + (Option("preset", str, "google-research/adapter-bert's adapter (tanh GELU, "
                              "truncated-normal 1e-3 init, LayerNorms trained)",
                              choices=tuple(sorted(PRESETS))),),
    sweep=("bottleneck", (8, 16, 32, 64, 128), "--bottlenecks"))


PFEIFFER = Method(
    "pfeiffer", "one bottleneck adapter per layer (after the FFN) + the head",
    default_lr=2e-3, config=AdapterConfig, add=add, run_field="adapter", file_key="adapter",
    options=OPTIONS, sweep=("bottleneck", (64,), None), fixed=(("architecture", "pfeiffer"),))
