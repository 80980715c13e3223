"""PEFT's directories for prompt tuning, prefix tuning and IA3, both ways (peft 0.21,
`save_pretrained` of a `get_peft_model(BertForSequenceClassification, config)` with
task_type="SEQ_CLS" and modules_to_save=["pooler"]; tests/fixtures/peft_* are PEFT's own):

    adapter_config.json          {"peft_type": "PROMPT_TUNING" | "PREFIX_TUNING" | "IA3",
                                  "task_type": "SEQ_CLS",
                                  "modules_to_save": ["pooler", "classifier", "score"], ...}
    adapter_model.safetensors    prompt and prefix: "prompt_embeddings" (n, H) or (n, 2 L H), and the
                                 head as base_model.bert.pooler.dense.* and base_model.classifier.*;
                                 IA3: base_model.model.bert.encoder.layer.{i}.attention.self.key.ia3_l
                                 (H, 1), ...value.ia3_l (H, 1), ...attention.output.dense.ia3_l (1, H),
                                 ...output.dense.ia3_l (1, F), the head under base_model.model.

minadapt's head is BERT's pooler and classifier (tanh(h[:, 0] W1^T + b1) W4^T + b4), so PEFT's
`PeftModel.from_pretrained(BertForSequenceClassification.from_pretrained(backbone, num_labels=C),
dir)` runs the task as minadapt does; the pooler is in modules_to_save because minadapt trains it.
A prefix trained through its MLP is saved as PEFT saves it: the table P alone, the MLP merged away;
read back, it is a plain prefix. AdapterHub's head files (head_config.json, model_head.safetensors)
are written beside, for the label names; PEFT ignores them.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from .. import bert
from ..backend import to_numpy
from ..errors import ConfigError, WeightsError
from ..nn import ia3
from .adapterhub import read_head, write_head
from .detect import require_safetensors
from .weights import read_safetensors, save_tensors

PEFT_TYPES = {"PROMPT_TUNING": "prompt", "PREFIX_TUNING": "prefix", "IA3": "ia3"}
MODULES_TO_SAVE = ["pooler", "classifier", "score"]
HEAD_KEYS = {"bert.pooler.dense.weight": "1.weight", "bert.pooler.dense.bias": "1.bias",
             "classifier.weight": "4.weight", "classifier.bias": "4.bias"}


def _prefix_of(method: str) -> str:
    """Where PEFT's saved names start: a prompt-learning model wraps the transformers model once,
    a tuner (IA3) twice."""
    return "base_model.model." if method == "ia3" else "base_model."


def _ia3_where(site: str) -> str:
    return f"attention.self.{site}" if site in bert.QKV else site


def _ia3_modules(sites) -> tuple:
    """target_modules and feedforward_modules as PEFT reads them: its BERT default (lists, matched by
    name ending) for the four sites, else regular expressions over the module names."""
    if tuple(sites) == tuple(ia3.SITES):
        return ["key", "output.dense", "value"], ["output.dense"]
    pattern = r".*encoder\.layer\.\d+\.({})"
    targets = pattern.format("|".join(re.escape(_ia3_where(s)) for s in sites))
    ff = [s for s in sites if ia3.SITES[s] == "in"]
    return targets, (pattern.format("|".join(re.escape(_ia3_where(s)) for s in ff)) if ff else [])


def save_family(model, directory, name: str) -> Path:
    """Write task `name` (prompt, prefix or IA3) as PEFT's directory. Returns the directory."""
    method, config = model.method(name), model.config_of(name)
    c = model.cfg
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    peft_type = next(t for t, m in PEFT_TYPES.items() if m == method)
    out = {"peft_type": peft_type, "task_type": "SEQ_CLS", "inference_mode": True,
           "base_model_name_or_path": model.backbone.get("name"), "revision": None,
           "auto_mapping": None, "modules_to_save": list(MODULES_TO_SAVE)}
    tensors = {}
    if method in ("prompt", "prefix"):
        out.update({"num_virtual_tokens": config.virtual_tokens, "token_dim": c.hidden_size,
                    "num_transformer_submodules": 1, "num_attention_heads": c.num_attention_heads,
                    "num_layers": c.num_hidden_layers})
    if method == "prompt":
        out.update({"prompt_tuning_init": {"random": "RANDOM", "vocab": "SAMPLE_VOCAB"}[config.init],
                    "prompt_tuning_init_text": None, "tokenizer_name_or_path": None,
                    "tokenizer_kwargs": None})
        tensors["prompt_embeddings"] = to_numpy(model.params[bert.prompt_name(name)])
    elif method == "prefix":
        if not config.shift_positions:
            raise ConfigError(f"task {name!r} is AdapterHub's prefix (positions from 0); PEFT's runs "
                              "the sentence from position n: save it in minadapt's format")
        from ..methods.prefix import table

        out.update({"prefix_projection": config.projection, "init_weights": None,
                    "encoder_hidden_size": config.width if config.projection else c.hidden_size})
        tensors["prompt_embeddings"] = table(model, name)  # the MLP merged away, as PEFT saves it
    else:
        targets, ff = _ia3_modules(config.sites)
        out.update({"target_modules": targets, "feedforward_modules": ff, "fan_in_fan_out": False,
                    "init_ia3_weights": True, "exclude_modules": None})
        for i in range(c.num_hidden_layers):
            for site in config.sites:
                l = to_numpy(model.params[bert.ia3_name(i, site, name)])
                shape = (-1, 1) if ia3.SITES[site] == "out" else (1, -1)
                key = f"base_model.model.bert.encoder.layer.{i}.{_ia3_where(site)}.ia3_l"
                tensors[key] = l.reshape(shape)
    if name in model.heads:
        for theirs, ours in HEAD_KEYS.items():
            tensors[_prefix_of(method) + theirs] = to_numpy(model.params[f"heads.{name}.{ours}"])
    (directory / "adapter_config.json").write_text(json.dumps(out, indent=2))
    save_tensors(directory / "adapter_model.safetensors", tensors, {"format": "pt"})
    write_head(model, name, directory)
    return directory


def _check(c: dict, where: Path, model, method: str):
    cfg = model.cfg
    if c.get("task_type") not in ("SEQ_CLS", None):
        raise WeightsError(f"{where}: task_type {c.get('task_type')!r}; minadapt runs PEFT's SEQ_CLS "
                           "placement (token types kept, the head on row 0)")
    if method in ("prompt", "prefix"):
        for k, want in (("token_dim", cfg.hidden_size), ("num_transformer_submodules", 1),
                        ("num_layers", cfg.num_hidden_layers),
                        ("num_attention_heads", cfg.num_attention_heads)):
            if c.get(k, want) not in (want, None):
                raise WeightsError(f"{where}: {k}={c.get(k)!r}; this backbone needs {want}")
    if method == "ia3" and c.get("fan_in_fan_out"):
        raise WeightsError(f"{where}: fan_in_fan_out=True; BERT's linears are (out, in)")


def load_family(model, directory, c: dict, name: str | None = None) -> str:
    """Add the prompt, prefix or IA3 task PEFT saved in `directory` (its adapter_config.json read as
    `c`) to `model` as task `name` (default: the head files' name, else the directory's)."""
    from .. import methods

    directory = Path(directory)
    where = directory / "adapter_config.json"
    method = PEFT_TYPES[c["peft_type"]]
    _check(c, where, model, method)
    if name is None:
        head_env = json.loads((directory / "head_config.json").read_text()) \
            if (directory / "head_config.json").is_file() else {}
        name = head_env.get("name") or re.sub(r"[^A-Za-z0-9_-]", "_", directory.resolve().name)
    path = require_safetensors(directory, "adapter_model.safetensors", "adapter_model.bin",
                               "peft_model.save_pretrained(dir, safe_serialization=True)")
    theirs = read_safetensors(path)[0]
    prefix = _prefix_of(method)
    tensors, head_tensors = {}, {}
    for k, ours in HEAD_KEYS.items():
        if prefix + k in theirs:
            head_tensors[f"heads.{name}.{ours}"] = theirs.pop(prefix + k)
    if method in ("prompt", "prefix"):
        if set(theirs) != {"prompt_embeddings"}:
            raise WeightsError(f"{path}: expected prompt_embeddings (and the head), found "
                               f"{sorted(theirs)[:4]}")
        p = theirs["prompt_embeddings"]
        n = int(c.get("num_virtual_tokens") or p.shape[0])
        if method == "prompt":
            config = methods.get("prompt").config(
                name=name, virtual_tokens=n,
                init="vocab" if c.get("prompt_tuning_init") == "SAMPLE_VOCAB" else "random")
            tensors[bert.prompt_name(name)] = p
        else:  # the table, whatever trained it: a plain prefix here
            config = methods.get("prefix").config(name=name, virtual_tokens=n, projection=False)
            tensors[bert.prefix_names(name, False)[0]] = p
    else:
        sites = []
        for k, v in theirs.items():
            m = re.fullmatch(r"(?:base_model\.model\.)?(?:bert\.)?encoder\.layer\.(\d+)\.(.+)\.ia3_l", k)
            site = m and m.group(2).replace("attention.self.", "")
            if site not in ia3.SITES:
                raise WeightsError(f"{path}: {k!r} is not an IA3 scale minadapt has (it scales "
                                   f"{', '.join(ia3.SITES)})")
            want = (v.size, 1) if ia3.SITES[site] == "out" else (1, v.size)
            if v.shape != want:
                raise WeightsError(f"{path}: {k!r} has shape {v.shape}: minadapt scales {site}'s "
                                   f"{'output' if ia3.SITES[site] == 'out' else 'input'}, shape {want}")
            tensors[bert.ia3_name(int(m.group(1)), site, name)] = v.reshape(-1)
            sites.append(site)
        config = methods.get("ia3").config(name=name, sites=tuple(dict.fromkeys(sites)))
    head, files_head = read_head(directory, name, model)
    if head_tensors and head is None:
        head = dict(num_labels=int(head_tensors[f"heads.{name}.4.weight"].shape[0]))
    if head_tensors and len(head_tensors) != 4:
        raise WeightsError(f"{path}: the head needs the pooler and the classifier, found "
                           f"{sorted(head_tensors)} (save with modules_to_save=['pooler'])")
    head_tensors = head_tensors or files_head
    m = methods.get(method)

    def build():
        if head is not None:
            model.add_classification_head(name, **head)
        model.add_method(name, m, config)

    head_tensors = {k: np.asarray(v) for k, v in head_tensors.items()}
    return model.add_task_from(name, directory, {**tensors, **head_tensors}, build)
