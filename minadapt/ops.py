"""Which implementation of each op the encoder runs: the reference or the fast one.

    model = minadapt.load_model(path, ops="reference")   # minadapt.nn: the maths, plainly
    model = minadapt.load_model(path)                      # ops="fast": minadapt.fast, the same numbers

bert.py calls every op through `run.ops` (`run.ops.gelu.forward(f)`), so the encoder's equations
are written once. An ops bundle has: linear, attention, gelu, layernorm, dropout, adapter,
non_linearities (name -> module, for the adapter), lora (its low-rank term, and how that is added
to the fused Q|K|V output) and cls_layer (a [CLS]-only last layer, or None).

The reference bundle is the maths as written: every op from minadapt.nn, no op's output changed in
place by the next, and cls_layer None, so the last layer computes every row and the head reads one. The speed
routes are the fast bundle's: minadapt.fast's ops, LoRA's terms added into the projection's own
output (fast/lora.py), and the last layer for the [CLS] row alone when only that row is read
(fast/cls_layer.py, from bert.py's own pieces).
A bundle may also bring head and cross_entropy (model.py uses heads.py and nn.loss where it has
none); a learner's bundle (learner.py) is passed through make() as it is.
"""
from __future__ import annotations

from types import SimpleNamespace

from . import nn

NAMES = ("reference", "fast")


def reference() -> SimpleNamespace:
    """The plain ops of minadapt.nn."""
    return SimpleNamespace(name="reference", linear=nn.linear, attention=nn.attention, gelu=nn.gelu,
                           layernorm=nn.layernorm, dropout=nn.dropout, adapter=nn.adapter,
                           non_linearities=dict(nn.adapter.NON_LINEARITIES), lora=nn.lora,
                           cls_layer=None, adamw=nn.adamw)


def fast(inference: bool = False, linear=None) -> SimpleNamespace:
    """The ops of minadapt.fast. inference=True: no backward will follow, so GELU keeps no cache.
    `linear` may be an existing fast.linear.Linear, to share its W^T copies."""
    from .fast import attention, cls_layer, dropout, gelu, layernorm, lora, swish
    from .fast.linear import Linear

    return SimpleNamespace(
        name="fast", linear=linear or Linear(), attention=attention, lora=lora,
        gelu=_GeluWithoutCache if inference else gelu, layernorm=layernorm, dropout=dropout,
        adapter=nn.adapter, non_linearities={"swish": swish, "gelu": gelu, "relu": nn.relu,
                                             "gelu_tanh": nn.gelu_tanh},
        cls_layer=cls_layer)


def make(name, inference: bool = False, linear=None) -> SimpleNamespace:
    """ops by name: "reference" or "fast"; or a bundle itself (a learner's: minadapt.learner.ops),
    used as it is."""
    if not isinstance(name, str):
        return name
    if name == "reference":
        return reference()
    if name == "fast":
        return fast(inference, linear)
    from .errors import ConfigError

    raise ConfigError(f"ops={name!r}: expected one of {', '.join(NAMES)}")


class _GeluWithoutCache:
    """fast.gelu at inference: Phi(x) is computed in y's own memory, and no cache is returned."""

    @staticmethod
    def forward(x):
        from .fast import gelu

        return gelu.forward(x, grad=False)
