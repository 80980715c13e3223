"""PEFT's LoRA directory (peft 0.21, `PeftModel.save_pretrained(dir)` on a BertModel):

    adapter_config.json         {"peft_type": "LORA", "r", "lora_alpha", "lora_dropout",
                                 "target_modules": ["query", "value"], "bias": "none", ...}
    adapter_model.safetensors   base_model.model.encoder.layer.{i}.attention.self.query.lora_A.weight, ...

PEFT's saved names drop the adapter's name, which minadapt keeps in memory as PEFT does
(`...query.lora_A.{name}.weight`). They are the base model's own names (DistilBERT's
`transformer.layer.{i}.attention.q_lin.lora_A.weight`, target_modules ["q_lin", "v_lin"]):
architectures.py renames them, and the target modules, both ways. PEFT has no head for a bare
BertModel; minadapt writes the task's head beside it in AdapterHub's files (head_config.json,
model_head.safetensors), which PEFT ignores.
`PeftModel.from_pretrained(BertModel.from_pretrained(backbone), dir)` loads the directory.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from ..methods import LoraConfig
from ..errors import ConfigError, WeightsError
from .weights import read_safetensors, save_tensors
from .adapterhub import read_head, write_head
from .peft_family import PEFT_TYPES, load_family, save_family
from .detect import read_json, require_safetensors

PREFIX = "base_model.model."
# Fields whose value changes the maths: a loaded config must have these values (or leave them out).
SEMANTIC = {"bias": "none", "use_dora": False, "use_rslora": False, "fan_in_fan_out": False,
            "layers_to_transform": None, "rank_pattern": {}, "alpha_pattern": {}, "modules_to_save": None}


def save_peft(model, directory, adapter: str | None = None) -> Path:
    """Write task `adapter`'s LoRA as PEFT's directory (and its head, when it has one, in
    AdapterHub's head files). Returns the directory."""
    name = model.resolve(adapter)
    lo = model.config_of(name)
    if model.method(name) in PEFT_TYPES.values():  # prompt, prefix, IA3: peft_family.py
        return save_family(model, directory, name)
    if not isinstance(lo, LoraConfig):
        raise ConfigError(f"task {name!r} is {model.method(name)}, not LoRA, prompt, prefix or IA3: "
                          "PEFT's format holds those (use format='adapterhub' or 'minadapt')")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    arch = model.cfg.arch
    module = model.cfg.model_type.replace("-", "_")
    config = {"peft_type": "LORA", "r": lo.r, "lora_alpha": lo.alpha, "lora_dropout": lo.dropout,
              "target_modules": [arch.lora_targets[t] for t in lo.targets],
              "base_model_name_or_path": model.backbone.get("name"),
              "task_type": None, "inference_mode": True, "init_lora_weights": True,
              "auto_mapping": {"base_model_class": arch.base_model_class,
                               "parent_library": f"transformers.models.{module}.modeling_{module}"},
              **SEMANTIC}
    (directory / "adapter_config.json").write_text(json.dumps(config, indent=2))
    state = model.adapter_state(name)
    tag = f".{name}."
    save_tensors(directory / "adapter_model.safetensors",
                 {PREFIX + arch.theirs(k).replace(tag, "."): v for k, v in state.items() if ".lora_" in k},
                 {"format": "pt"})
    write_head(model, name, directory)
    return directory


def load_peft(model, directory, name: str | None = None) -> str:
    """Add the LoRA that PEFT saved in `directory` to `model` as task `name` (default: the head's
    name when the directory has minadapt's head files, else the directory's name). Returns the name."""
    directory = Path(directory)
    where = directory / "adapter_config.json"
    c = read_json(where)
    if c.get("peft_type") in PEFT_TYPES:  # prompt, prefix, IA3: peft_family.py
        return load_family(model, directory, c, name)
    if c.get("peft_type") != "LORA":
        raise WeightsError(f"{where}: peft_type {c.get('peft_type')!r}; minadapt reads LORA, "
                           f"{', '.join(PEFT_TYPES)}")
    for k, v in SEMANTIC.items():
        if (c.get(k) or v) != v:  # absent, null or empty counts as the default
            raise WeightsError(f"{where}: {k}={c.get(k)!r}; minadapt implements {k}={v!r} only")
    arch = model.cfg.arch
    ours = {theirs: q for q, theirs in arch.lora_targets.items()}  # q_lin -> query (DistilBERT)
    targets = c.get("target_modules")
    if isinstance(targets, str) or not targets or set(targets) - set(ours):
        raise WeightsError(f"{where}: target_modules {targets!r}; minadapt puts LoRA on some of "
                           f"{', '.join(ours)} ({model.cfg.model_type}'s names), given as a list")
    targets = [ours[t] for t in targets]
    if name is None:
        head_env = read_json(directory / "head_config.json") if (directory / "head_config.json").is_file() else {}
        name = head_env.get("name") or re.sub(r"[^A-Za-z0-9_-]", "_", directory.resolve().name)
    path = require_safetensors(directory, "adapter_model.safetensors", "adapter_model.bin",
                               "peft_model.save_pretrained(dir, safe_serialization=True)")
    tensors = {}
    for k, v in read_safetensors(path)[0].items():
        k = arch.ours(k[len(PREFIX):] if k.startswith(PREFIX) else k)
        tensors[re.sub(r"\.(lora_[AB])\.weight$", rf".\1.{name}.weight", k)] = v
    r = int(c["r"])
    head, head_tensors = read_head(directory, name, model)

    def build():
        model.add_lora(name, r=r, alpha=float(c.get("lora_alpha", 8)),
                       dropout=float(c.get("lora_dropout", 0.0)), targets=tuple(targets))
        if head is not None:
            model.add_classification_head(name, **head)

    return model.add_task_from(name, directory, {**tensors, **head_tensors}, build)
