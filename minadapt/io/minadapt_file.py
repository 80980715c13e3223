"""minadapt's own adapter file: one safetensors file with a task's trainable parameters, and in its
metadata everything needed to rebuild the task on a backbone.

    format    "minadapt-adapter/1"
    method    the method's name (minadapt.methods.METHODS), e.g. "houlsby"
    <key>     the method's config as JSON, under its Method.file_key ("adapter" for bottleneck
              adapters, "lora" for LoRA; each such key of the table is written, "null" where unused)
    head      the head's config (HeadConfig) as JSON, or null
    full_finetuning   whether the method trains the backbone (the file then holds it all)
    backbone  the checkpoint it was trained on: name, sha256, hidden_size, num_hidden_layers
    ...       whatever the caller adds (training settings, the task record, dev metrics, labels)

Files written before "method" existed are read by which config key is set.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from .. import bert, methods
from ..errors import WeightsError
from .check import check_adapter_file
from .weights import check_finite, read_safetensors, save_tensors

FORMAT = "minadapt-adapter/1"


def save_minadapt(model, path, name: str, extra_metadata: dict | None = None) -> Path:
    """Write task `name` of `model` as a minadapt adapter file. Returns the path."""
    how = model.methods.get(name)
    method = how.method if how else methods.get("probe")
    head = model.heads.get(name)
    meta = {"format": FORMAT, "method": method.name,
            "head": json.dumps(dataclasses.asdict(head) if head else None),
            "full_finetuning": json.dumps(method.trains_backbone),
            "backbone": json.dumps(model.backbone_id())}
    for m in methods.METHODS.values():
        if m.file_key:
            meta.setdefault(m.file_key, "null")
    if method.file_key:
        meta[method.file_key] = json.dumps(method.config_dict(how.config))
    for k, v in (extra_metadata or {}).items():
        meta[k] = v if isinstance(v, str) else json.dumps(v)
    save_tensors(path, model.adapter_state(name), meta)
    return Path(path)


def _json(meta, key, path, default="null"):
    try:
        return json.loads(meta.get(key, default))
    except (json.JSONDecodeError, TypeError):
        raise WeightsError(f"{path}: its metadata {key!r} is not JSON: {str(meta.get(key))[:60]!r}") from None


def stored_method(meta: dict, path) -> tuple:
    """(Method, its config as a dict or None) that a file's metadata names."""
    if "method" in meta:
        method = methods.METHODS.get(meta["method"])
        if method is None:
            raise WeightsError(f"{path}: made with method {meta['method']!r}, which this minadapt does "
                               f"not have (it has: {', '.join(methods.METHODS)})")
        return method, _json(meta, method.file_key, path) if method.file_key else None
    for m in methods.METHODS.values():  # a file from before "method": whichever config is set
        config = _json(meta, m.file_key, path) if m.file_key else None
        if config and all(config.get(k, v) == v for k, v in m.fixed):
            return m, config
    if _json(meta, "full_finetuning", path, "false"):
        return next(m for m in methods.METHODS.values() if m.trains_backbone), None
    return methods.get("probe"), None


def load_minadapt(model, path, check_backbone: bool = True, name: str | None = None) -> str:
    """Add the task stored in minadapt file `path` to `model` (as `name`, default the stored name)."""
    check_adapter_file(path, model.cfg, FORMAT)  # header and metadata, before anything is read or built
    tensors, meta = read_safetensors(path)
    check_finite(tensors, path)
    if meta.get("format") != FORMAT:
        raise WeightsError(f"{path}: not a minadapt adapter file (its metadata has no "
                           f"format={FORMAT!r}; found {meta.get('format')!r})")
    if "backbone" not in meta:
        raise WeightsError(f"{path}: its metadata has no 'backbone' (the checkpoint it was made for)")
    theirs, ours = _json(meta, "backbone", path), model.backbone_id()
    if not isinstance(theirs, dict):
        raise WeightsError(f"{path}: its metadata 'backbone' is not an object")
    if check_backbone and (theirs.get("sha256") != ours["sha256"]
                           or theirs.get("hidden_size") != ours["hidden_size"]):
        raise WeightsError(
            f"{path}: made for backbone {theirs.get('name')} (sha256 {str(theirs.get('sha256'))[:12]}…, "
            f"hidden {theirs.get('hidden_size')}), but this model is {ours['name']} "
            f"(sha256 {str(ours['sha256'])[:12]}…, hidden {ours['hidden_size']})")
    method, config = stored_method(meta, path)
    head = _json(meta, "head", path)
    stored = (config or head or {}).get("name")
    if stored is None:
        raise WeightsError(f"{path}: holds neither an adapter nor a head")
    name = name or stored
    if name != stored:
        tensors = {_rename(k, stored, name): v for k, v in tensors.items()}
    if config and method.config is not None:
        fields = {f.name for f in dataclasses.fields(method.config)}
        config = method.config(**{**{k: v for k, v in config.items() if k in fields}, "name": name})
        _move_layer_norms(config, tensors, model.cfg.num_hidden_layers)

    def build():
        if head:
            model.add_classification_head(name, head["num_labels"], dropout=head["dropout"],
                                          labels=head.get("labels"), regression=head.get("regression", False))
        if method.add is not None or method.config is not None:
            model.add_method(name, method, config)

    model.add_task_from(name, path, tensors, build)
    model.metadata[name] = meta
    return name


def _rename(key: str, old: str, new: str) -> str:
    """A parameter name of task `old` as task `new`'s: the name is one dotted part of it."""
    return ".".join(new if part == old else part for part in key.split("."))


def _move_layer_norms(config, tensors: dict, n_layers: int):
    """Files written before adapters had their own LayerNorm copies stored a Houlsby adapter's
    trained LayerNorms under the backbone's names: move them to the adapter's own."""
    if not getattr(config, "train_layer_norms", False):
        return
    for i in range(n_layers):
        for where in ("attention.output", "output"):
            for t in ("weight", "bias"):
                old = bert.layer_norm_prefix(i, where) + t
                if old in tensors:
                    tensors[bert.layer_norm_prefix(i, where, config) + t] = tensors.pop(old)
