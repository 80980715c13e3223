"""IA3 (Liu et al., 2022), the method "ia3": a learned scale per channel of the keys, the values,
and the inputs of both output projections, in every layer, initialised at one (nn/ia3.py).

    k = (x Wk^T + bk) * l_k     v = (x Wv^T + bv) * l_v
    a = (c * l_ao) Wo^T + bo    o = (gelu(h Wi^T + bi) * l_ff) Wo2^T + bo2

These are PEFT's IA3Config defaults for BERT (target_modules key, value, output.dense, with
output.dense a feed-forward module, scaled on its input; "output.dense" also names the attention's
output projection, so its input, the attention context, is scaled too). Parameters, as PEFT names
them in memory but flat (D,): encoder.layer.{i}.attention.self.key.ia3_l.{name}, ...value...,
encoder.layer.{i}.attention.output.dense.ia3_l.{name}, encoder.layer.{i}.output.dense.ia3_l.{name}.
3 H + F numbers per layer. After training they fold into the weights (`merge`): inference then
costs what the bare backbone costs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import bert
from ..backend import to_numpy
from ..errors import ConfigError
from ..nn import ia3
from .base import Method


@dataclass(frozen=True)
class IA3Config:
    name: str  # used in parameter names: encoder.layer.{i}.attention.self.key.ia3_l.{name}
    sites: tuple = tuple(ia3.SITES)  # which activations are scaled (nn/ia3.py SITES): PEFT's default

    def __post_init__(self):
        sites = tuple(self.sites)
        if not sites or set(sites) - set(ia3.SITES):
            raise ConfigError(f"IA3 sites {sites!r}: expected some of {', '.join(ia3.SITES)}")
        object.__setattr__(self, "sites", tuple(s for s in ia3.SITES if s in sites))


def channels(cfg, site: str) -> int:
    return cfg.intermediate_size if site == "output.dense" else cfg.hidden_size


def add(model, name: str, config: IA3Config, seed: int = 0):
    """Ones for every site of every layer: the model starts as the backbone."""
    names = {}
    for i in range(model.cfg.num_hidden_layers):
        for site in config.sites:
            names[bert.ia3_name(i, site, name)] = ia3.init_params(channels(model.cfg, site), np, model.dtype)
    model.put(names)
    model.add_trainable(name, names)


def merge(model, name: str):
    """A new Model with task `name`'s scales folded into the weights (nn.ia3.merged_output for k
    and v: rows of W and b scaled; nn.ia3.merged_input for the output projections: columns of W),
    holding `name`'s head alone: the bare backbone's code path and cost."""
    config = model.config_of(name)
    params = model.backbone_state()
    for i in range(model.cfg.num_hidden_layers):
        for site in config.sites:
            l = to_numpy(model.params[bert.ia3_name(i, site, name)])
            p = f"encoder.layer.{i}." + (f"attention.self.{site}." if site in bert.QKV else site + ".")
            if ia3.SITES[site] == "out":
                params[p + "weight"], params[p + "bias"] = ia3.merged_output(params[p + "weight"],
                                                                             params[p + "bias"], l)
            else:
                params[p + "weight"] = ia3.merged_input(params[p + "weight"], l)
    return model.with_backbone(params, f"{model.backbone.get('name')}+ia3:{name}", keep_head=name)


IA3 = Method(
    "ia3", "a learned scale per channel of keys, values and both output projections' inputs + the head",
    default_lr=1e-2, config=IA3Config, add=add, run_field="ia3", file_key="ia3", merge=merge)
