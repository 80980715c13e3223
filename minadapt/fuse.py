"""A fusion task: N trained adapters, frozen, and per adapter site AdapterFusion's attention over
their outputs (nn/fusion.py), trained with a new head (Pfeiffer et al., 2021).

    model.load_adapter("sst2.safetensors"); model.load_adapter("bbc.safetensors")
    add_fusion(model, "sst2-fused", ["sst2", "bbc"], num_labels=2)    # trains fusion + head only
    save_fusion(model, "fusion.safetensors", "sst2-fused")
    load_fusion(other_model, "fusion.safetensors")                    # needs sst2 and bbc loaded

The fusion file holds the fusion layers and the head; its metadata names the adapters it fuses,
each by name and the sha256 of its parameters (`adapter_digest`: names, shapes and float32 bytes,
in name order, so the same adapter gives the same digest from any file that holds it). Loading
checks both and names every adapter missing or different, in one line.

AdapterHub's trainer also pulls the value matrices towards I with 0.01 ||I - Wv||^2 on every step
(`regularization` of its "dynamic" config); minadapt's loss is the task's loss alone.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import bert, compose
from .backend import to_numpy
from .errors import ConfigError, WeightsError
from .nn import fusion

FUSION_FORMAT = "minadapt-fusion/1"


@dataclass(frozen=True)
class FusionConfig:
    name: str  # the task: its head and the fusion layers' owner
    adapters: tuple  # the adapters fused, in order (AdapterHub names the layers "a,b")
    value: bool = True  # AdapterHub's "dynamic" fusion (a value matrix); False: "static"


def adapter_digest(model, name: str) -> str:
    """sha256 of adapter `name`'s parameters: for each name in order, the name, the shape and the
    float32 little-endian bytes."""
    h = hashlib.sha256()
    for k in sorted(model.trainable_names(name)):
        if k.startswith("heads."):
            continue  # the adapter's own head plays no part in a fusion
        v = np.ascontiguousarray(to_numpy(model.params[k]), dtype="<f4")
        h.update(k.encode() + b"\0" + str(v.shape).encode() + b"\0" + v.tobytes())
    return h.hexdigest()


def add_fusion(model, name: str, adapters, num_labels: int = 2, seed: int = 0, value: bool = True,
               labels=None, regression: bool = False, dropout: float | None = None):
    """Task `name`: Fuse(adapters) at every site they sit at, and a new head; it trains the fusion
    layers and the head only. The adapters must be bottleneck adapters of one architecture held by
    this model (their bottlenecks may differ: the fusion reads their H-wide outputs)."""
    adapters = list(adapters)
    missing = [a for a in adapters if a not in model.adapters]
    if missing:
        held = ", ".join(sorted(model.adapters)) or "none"
        raise ConfigError(f"fusion {name!r}: no adapter named {', '.join(map(repr, missing))} in this "
                          f"model (its adapters: {held})")
    if len(set(adapters)) != len(adapters) or len(adapters) < 2:
        raise ConfigError(f"fusion {name!r}: needs 2 or more different adapters, got {adapters}")
    H = model.cfg.hidden_size
    for a in adapters:
        w = model.params[bert.adapter_prefix(model.cfg.num_hidden_layers - 1, "output", a)
                         + "adapter_up.weight"] if "output" in bert.ADAPTER_SITES[
                             model.adapters[a].architecture] else None
        if w is not None and w.shape[0] != H:
            raise ConfigError(f"fusion {name!r}: adapter {a!r} is {w.shape[0]} wide, this model {H}")
    block = compose.Fuse(*(model.adapters[a] for a in adapters), value=value)
    model._check_new(name, "fusion")
    if name in model._trainable:
        raise ConfigError(f"this model already holds a task named {name!r}")
    rng = np.random.default_rng(seed)
    names = set()
    try:
        for i in range(model.cfg.num_hidden_layers):
            for where in bert.ADAPTER_SITES[block.children[0].architecture]:
                p = compose.fusion_prefix(i, where, block)
                for k, v in fusion.init_params(H, rng, model.dtype, value).items():
                    model._put({p + k: v})
                    names.add(p + k)
        model._trainable[name] = names
        model.compositions[name] = block
        model.add_classification_head(name, num_labels, seed=seed, dropout=dropout, labels=labels,
                                      regression=regression)
    except Exception:
        model.remove(name)
        raise
    model.fusions[name] = FusionConfig(name, tuple(adapters), value)
    return model.fusions[name]


def save_fusion(model, path, name: str, extra_metadata: dict | None = None):
    """The fusion layers and head of task `name`, with what loading needs in the metadata."""
    from .io.weights import save_tensors

    cfg = model.fusions[name]
    meta = {
        "format": FUSION_FORMAT,
        "fusion": json.dumps(asdict(cfg)),
        "head": json.dumps(asdict(model.heads[name])),
        "adapters": json.dumps([{"name": a, "sha256": adapter_digest(model, a)} for a in cfg.adapters]),
        "backbone": json.dumps(model.backbone_id()),
    }
    for k, v in (extra_metadata or {}).items():
        meta[k] = v if isinstance(v, str) else json.dumps(v)
    save_tensors(path, model.adapter_state(name), meta)
    return Path(path)


def is_fusion_file(meta: dict) -> bool:
    return meta.get("format") == FUSION_FORMAT


def load_fusion(model, path, tensors=None, meta=None) -> str:
    """Add the fusion task stored at `path`; the adapters it names must already be in the model,
    each with the parameters it was trained with. Returns the task's name."""
    from .io.weights import check_finite, read_safetensors

    if tensors is None:
        tensors, meta = read_safetensors(path)
        check_finite(tensors, path)
    if not is_fusion_file(meta):
        raise WeightsError(f"{path}: not a minadapt fusion file (format {meta.get('format')!r})")
    theirs, ours = json.loads(meta["backbone"]), model.backbone_id()
    if theirs.get("sha256") != ours["sha256"] or theirs.get("hidden_size") != ours["hidden_size"]:
        raise WeightsError(f"{path}: made for backbone {theirs.get('name')} (hidden "
                           f"{theirs.get('hidden_size')}), but this model is {ours['name']} (hidden "
                           f"{ours['hidden_size']})")
    cfg, head = json.loads(meta["fusion"]), json.loads(meta["head"])
    problems = []
    for a in json.loads(meta["adapters"]):
        if a["name"] not in model.adapters:
            problems.append(f"{a['name']} (sha256 {a['sha256'][:12]}…) is missing")
        elif adapter_digest(model, a["name"]) != a["sha256"]:
            problems.append(f"{a['name']} differs from the one it was trained with (sha256 "
                            f"{a['sha256'][:12]}…, loaded {adapter_digest(model, a['name'])[:12]}…)")
    if problems:
        raise WeightsError(f"{path}: fuses adapters {', '.join(cfg['adapters'])}; " + "; ".join(problems)
                           + ": load them first (--adapter FILE)")

    def build():
        add_fusion(model, cfg["name"], cfg["adapters"], head["num_labels"], value=cfg["value"],
                   labels=head.get("labels"), regression=head.get("regression", False),
                   dropout=head["dropout"])

    name = model.add_task_from(cfg["name"], path, tensors, build)
    model.metadata[name] = meta
    return name
