"""LoRA (Hu et al., 2021): low-rank updates of the attention projections, the method "lora".

    q = x Wq^T + bq + (alpha / r) dropout(x) A_q^T B_q^T        and likewise for v   (nn/lora.py)

added to the q and v slices of the fused Q|K|V matmul (bert.qkv_lora_forward). A (r, H) starts
PEFT's way (kaiming-uniform), B (H, r) at zero, so the model starts unchanged. Parameters are named
as PEFT names them in memory: encoder.layer.{i}.attention.self.query.lora_A.{name}.weight. Matches
PEFT's LoraConfig(target_modules=targets, r=r, lora_alpha=alpha, lora_dropout=dropout). After
training, B A folds into W (`merge`): inference then costs what the bare backbone costs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import bert
from ..backend import to_numpy
from ..config import Number, finite_float, positive_int
from ..errors import ConfigError
from ..nn import lora
from .base import Method, Option


@dataclass(frozen=True)
class LoraConfig:
    name: str  # used in parameter names: ...attention.self.query.lora_A.{name}.weight
    r: int = 8  # rank of the update B A
    alpha: float = 16.0  # the update is scaled by alpha / r
    dropout: float = 0.1  # on LoRA's input x (training only), PEFT's lora_dropout
    targets: tuple = ("query", "value")  # which of the fused Q|K|V projections get a LoRA

    def __post_init__(self):
        targets = tuple(self.targets)
        if not targets or set(targets) - set(bert.QKV):
            raise ConfigError(f"LoRA targets {targets!r}: expected some of {', '.join(bert.QKV)}")
        object.__setattr__(self, "targets", tuple(t for t in bert.QKV if t in targets))  # Q, K, V order
        if not (isinstance(self.r, int) and not isinstance(self.r, bool) and self.r >= 1):
            raise ConfigError(f"LoRA rank r={self.r!r}: expected a whole number, 1 or more")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"LoRA dropout {self.dropout!r}: expected 0 <= p < 1")
        object.__setattr__(self, "alpha", float(self.alpha))
        object.__setattr__(self, "dropout", float(self.dropout))

    @property
    def scale(self) -> float:
        return self.alpha / self.r


def add(model, name: str, config: LoraConfig, seed: int = 0):
    """A and B for every target projection of every layer: `name`'s trainable parameters."""
    rng = np.random.default_rng(seed)
    H = model.cfg.hidden_size
    trainable = set()
    for i in range(model.cfg.num_hidden_layers):
        for target in config.targets:
            a, b = bert.lora_names(i, target, name)
            init = lora.init_params(H, H, config.r, rng, model.dtype)
            model.put({a: init["lora_A"], b: init["lora_B"]})
            trainable.update((a, b))
    model.add_trainable(name, trainable)


def merge(model, name: str):
    """A new Model whose backbone has task `name`'s LoRA folded in, W' = W + (alpha/r) B A for each
    target (nn.lora.merged_weight), holding `name`'s head alone (as a probe). It runs the bare
    backbone's code path, with no low-rank term: inference at the plain model's cost.

    It is a separate model because merging changes the backbone, which every other task on this
    one shares; `model` is left as it was (its weights are copied, on the host, first)."""
    config = model.config_of(name)
    params = model.backbone_state()
    for i in range(model.cfg.num_hidden_layers):
        for target in config.targets:
            a, b = bert.lora_names(i, target, name)
            w = f"encoder.layer.{i}.attention.self.{target}.weight"
            params[w] = lora.merged_weight(params[w], to_numpy(model.params[a]),
                                           to_numpy(model.params[b]), config.scale)
    return model.with_backbone(params, f"{model.backbone.get('name')}+lora:{name}", keep_head=name)


LORA = Method(
    "lora", "low-rank updates B A of the query and value weights in every layer + the head",
    default_lr=2e-3, config=LoraConfig, add=add, run_field="lora", file_key="lora", merge=merge,
    options=(Option("r", positive_int, "rank r of the update B A (default: 8)", metavar="R",
                    flag_name="--lora-rank"),
             Option("alpha", finite_float(min=0, strict=True),
                    "the update is scaled by alpha / r (default: 16)", metavar="A",
                    flag_name="--lora-alpha"),
             Option("dropout", Number(float, low=0.0, high=0.99),
                    "dropout on LoRA's input (default: 0.1)", metavar="P",
                    flag_name="--lora-dropout")),
    sweep=("r", (4, 8, 16), "--lora-ranks"))
