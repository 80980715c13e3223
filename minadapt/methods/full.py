"""Full fine-tuning, the method "full": every backbone weight (embeddings, Q/K/V together, every
dense layer and LayerNorm) trains with the head.

Training it changes the backbone itself, the one every task on a model shares, so it is refused on a
model that holds any other task, and no task can be added beside it: load a separate model for each
fully fine-tuned task. encoder_backward then runs down into the embeddings
(Model.lowest_trainable_layer = -1). Its learning rate is much lower than the adapters': it moves
pretrained weights, which 2e-3 would wreck (BERT's fine-tuning rates are 2e-5 to 5e-5; 1e-4 suits
this small model).
"""
from __future__ import annotations

from ..errors import ConfigError
from .base import Method


def add(model, name: str, config=None, seed: int = 0):
    others = set(model.names()) - {name}
    if others:
        raise ConfigError(f"full fine-tuning trains the backbone that task(s) "
                          f"{', '.join(sorted(others))} share: use a model that holds no other task")
    model.add_trainable(name, model.backbone_names())


FULL = Method("full", "every backbone weight (embeddings, attention, FFN, LayerNorms) + the head",
              default_lr=1e-4, add=add, trains_backbone=True)
