"""AdapterFusion (Pfeiffer et al., 2021), the method "fusion": N trained adapters, frozen, and per
adapter site an attention over their outputs (nn/fusion.py) that trains with a new head.

    minadapt train sst2 --fuse runs/sst2/adapter.safetensors runs/bbc-news/adapter.safetensors

    model.load_adapter("sst2.safetensors"); model.load_adapter("bbc.safetensors")
    model.add_classification_head("sst2-fused", num_labels=2)
    model.add_method("sst2-fused", FUSION, FusionConfig("sst2-fused", adapters=("sst2", "bbc")))

The task runs compose.Fuse(adapters) at every site they sit at: its config is what the encoder
walks there (bert.sublayer_end_forward hands the site to `site_forward`). Its file (a minadapt
adapter file) holds the fusion layers and the head; the config in its metadata names the adapters
fused, each by name and the sha256 of its parameters (`adapter_digest`: names, shapes and float32
bytes in name order, so the same adapter gives the same digest from any file that holds it).
Loading it checks both and names every adapter that is missing or different, in one line.

AdapterHub's trainer also pulls each value matrix towards I with 0.01 ||I - Wv||^2 (its "dynamic"
config's `regularization`); here the loss is the task's alone. The default learning rate, 1e-3,
suits minadapt's short runs; Pfeiffer et al. trained fusion at 5e-5 for 10 epochs.
"""
from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass

import numpy as np

from .. import bert, compose
from ..backend import to_numpy
from ..errors import ConfigError
from ..nn import fusion
from .base import Method, Option


@dataclass(frozen=True)
class FusionConfig:
    name: str  # the task: its head and the owner of the fusion layers
    adapters: tuple = ()  # the adapters fused, by task name, in order (the layers' names: "a,b")
    sha256: tuple = ()  # adapter_digest of each, filled by add(); a file's are checked on loading
    fuse: tuple = ()  # adapter files to load first, when `adapters` is empty (train --fuse A B)
    value: bool = True  # AdapterHub's "dynamic" fusion, with a value matrix; False: "static"

    def __post_init__(self):
        for f in ("adapters", "sha256", "fuse"):
            object.__setattr__(self, f, tuple(str(x) for x in getattr(self, f) or ()))
        if not self.adapters and not self.fuse:
            raise ConfigError("fusion: name the adapters to fuse (--fuse A.safetensors B.safetensors, "
                              "or adapters=(...) of tasks the model holds)")

    @property
    def block(self) -> compose.Fuse:
        """The composition the encoder walks (set by add())."""
        if "_block" not in self.__dict__:
            raise ConfigError(f"fusion {self.name!r}: not added to a model yet")
        return self.__dict__["_block"]

    def site_forward(self, o, res, params, i, where, cfg, run):
        return self.block.site_forward(o, res, params, i, where, cfg, run)

    def site_backward(self, dout, cache, i, where, run, grads):
        return self.block.site_backward(dout, cache, i, where, run, grads)


def adapter_digest(model, name: str) -> str:
    """sha256 of task `name`'s adapter parameters (its head left out): for each parameter name in
    order, the name, the shape and the float32 little-endian bytes."""
    h = hashlib.sha256()
    for k in sorted(model.trainable_names(name)):
        if k.startswith("heads."):
            continue
        v = np.ascontiguousarray(to_numpy(model.params[k]), dtype="<f4")
        h.update(k.encode() + b"\0" + str(v.shape).encode() + b"\0" + v.tobytes())
    return h.hexdigest()


def add(model, name: str, config: FusionConfig, seed: int = 0):
    """Fusion layers for task `name` over config.adapters (loading config.fuse's files first when
    it names none): AdapterHub's init (nn/fusion.init_params) at every site the adapters sit at."""
    set_ = lambda k, v: object.__setattr__(config, k, v)  # noqa: E731  (filled in once, here)
    if not config.adapters:
        set_("adapters", tuple(model.load_adapter(path) for path in config.fuse))
    held = model.adapters
    if len(set(config.adapters)) < 2 or len(set(config.adapters)) != len(config.adapters):
        raise ConfigError(f"fusion {name!r}: needs 2 or more different adapters, got "
                          f"{', '.join(config.adapters)}")
    problems = []
    for j, a in enumerate(config.adapters):
        want = config.sha256[j] if j < len(config.sha256) else None
        if a not in held:
            what = "a method other than bottleneck adapters" if a in model.methods else "missing"
            problems.append(f"{a}{f' (sha256 {want[:12]}…)' if want else ''} is {what}")
        elif want and adapter_digest(model, a) != want:
            problems.append(f"{a} differs from the one it was trained with (sha256 {want[:12]}…, "
                            f"this one {adapter_digest(model, a)[:12]}…)")
    if problems:
        raise ConfigError(f"fusion {name!r} fuses adapters {', '.join(config.adapters)}; "
                          + "; ".join(problems) + ": load them first")
    block = compose.Fuse(*(held[a] for a in config.adapters), value=config.value)
    set_("sha256", tuple(adapter_digest(model, a) for a in config.adapters))
    set_("_block", block)
    rng = np.random.default_rng(seed)
    H = model.cfg.hidden_size
    names = []
    for i in range(model.cfg.num_hidden_layers):
        for where in bert.ADAPTER_SITES[block.children[0].architecture]:
            p = compose.fusion_prefix(i, where, block)
            values = fusion.init_params(H, rng, model.dtype, config.value)
            model.put({p + k: v for k, v in values.items()})
            names += [p + k for k in values]
    model.add_trainable(name, names)


class FusionMethod(Method):
    def config_dict(self, config):
        """What a file stores: the adapters by name and digest (not the files they came from)."""
        d = dataclasses.asdict(config)
        d.pop("fuse")
        return d


FUSION = FusionMethod(
    "fusion", "AdapterFusion over trained adapters (frozen): the fusion layers + the head",
    default_lr=1e-3, config=FusionConfig, add=add, run_field="adapter", file_key="fusion",
    options=(Option("fuse", str, "adapter files to fuse (AdapterFusion); implies --method fusion",
                    metavar="FILE", nargs="+"),),
    compare=False)
