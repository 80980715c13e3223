"""AdapterHub's adapter directory (adapters 1.3.0, `model.save_adapter(dir, name, use_safetensors=True)`;
its default save writes `pytorch_adapter.bin` and `pytorch_model_head.bin` instead of the two
`.safetensors` files, torch pickles that torch_pickle.py reads without torch or running code):

    adapter_config.json     {"config": {...BnConfig fields...}, "hidden_size", "model_class",
                             "model_name", "model_type", "name", "version"}
    adapter.safetensors     bert.encoder.layer.{i}.{attention.output|output}.adapters.{name}.adapter_down.0.weight, ...
    head_config.json        {"config": {"head_type": "classification", "layers": 2, ...}, ... "name"}
    model_head.safetensors  heads.{name}.1.weight, heads.{name}.1.bias, heads.{name}.4.weight, heads.{name}.4.bias

For BERT, minadapt's parameter names are AdapterHub's without the leading `bert.`; the other
architectures name them their own way (`roberta.encoder.layer...`, DistilBERT's
`distilbert.transformer.layer.{i}.{attention_adapters|output_adapters}.adapters.{name}...`), and
architectures.py renames both ways. The envelope's model_type must be the model's.

Two bottleneck configs have a minadapt architecture: DoubleSeqBnConfig (Houlsby: mh_adapter and
output_adapter, original_ln_before=False) and SeqBnConfig (Pfeiffer: output_adapter only,
original_ln_before=True); both with residual_before_ln=True, original_ln_after=True, no adapter
LayerNorm, scaling 1, no gating, no PHM. Anything else is refused with the field that differs.
`leave_out` (the layers without an adapter) is minadapt's adapter_layers, said the other way round.
An adapter with trained LayerNorm copies has no AdapterHub config, so it is refused too.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..methods import AdapterConfig
from ..errors import ConfigError, WeightsError
from .weights import save_tensors
from .detect import read_json, read_tensors
from .task_names import rename_task
from .task_record import read_task_record, renamed, write_task_record

VERSION = "adapters.1.3.0"
# A BnConfig as adapters 1.3.0 writes it; ARCHITECTURES adds the fields that place the adapter.
BN_CONFIG = {
    "adapter_residual_before_ln": False, "cross_adapter": False, "dropout": 0.0,
    "factorized_phm_W": True, "factorized_phm_rule": False, "hypercomplex_nonlinearity": "glorot-uniform",
    "init_weights": "bert", "init_weights_seed": None, "inv_adapter": None,
    "inv_adapter_reduction_factor": None, "is_parallel": False, "learn_phm": True, "leave_out": [],
    "ln_after": False, "ln_before": False, "original_ln_after": True, "phm_bias": True,
    "phm_c_init": "normal", "phm_dim": 4, "phm_init_range": 0.0001, "phm_layer": False, "phm_rank": 1,
    "residual_before_ln": True, "scaling": 1.0, "shared_W_phm": False, "shared_phm_rule": True,
    "stochastic_depth": 0.0, "use_gating": False,
}
ARCHITECTURES = {
    "houlsby": {"mh_adapter": True, "output_adapter": True, "original_ln_before": False},
    "pfeiffer": {"mh_adapter": False, "output_adapter": True, "original_ln_before": True},
}
# Fields whose value changes the maths: a loaded config must have these values.
SEMANTIC = ("adapter_residual_before_ln", "is_parallel", "ln_after", "ln_before",
            "original_ln_after", "phm_layer", "residual_before_ln", "scaling", "stochastic_depth",
            "use_gating", "cross_adapter", "inv_adapter")
# minadapt's non-linearity -> AdapterHub's name (transformers' ACT2FN; "gelu_new" is tanh GELU)
NON_LINEARITIES = {"swish": "swish", "relu": "relu", "gelu": "gelu", "gelu_tanh": "gelu_new"}
FROM_ADAPTERHUB = {**{v: k for k, v in NON_LINEARITIES.items()}, "silu": "swish"}


def _reduction_factor(hidden: int, bottleneck: int) -> float:
    """AdapterHub sizes the bottleneck as int(hidden // reduction_factor): a factor that gives m back."""
    rf = hidden / bottleneck
    while int(hidden // rf) < bottleneck:
        rf = float(np.nextafter(rf, 0.0))
    return int(rf) if rf == int(rf) else rf


def _head_config(model, name) -> dict:
    h = model.heads[name]
    labels = h.labels or [f"LABEL_{i}" for i in range(h.num_labels)]
    dropout = None if h.dropout == model.cfg.hidden_dropout_prob else h.dropout
    return {"activation_function": "tanh", "bias": True, "dropout_prob": dropout,
            "head_type": "classification", "label2id": {lab: i for i, lab in enumerate(labels)},
            "layers": 2, "num_labels": h.num_labels, "use_pooler": False}


def _envelope(model, name, config) -> dict:
    return {"config": config, "hidden_size": model.cfg.hidden_size,
            "model_class": model.cfg.arch.adapter_model_class, "model_name": model.backbone.get("name"),
            "model_type": model.cfg.model_type, "name": name, "version": VERSION}


def save_adapterhub(model, directory, adapter: str | None = None) -> Path:
    """Write task `adapter`'s bottleneck adapter (Houlsby or Pfeiffer) and head as the directory that
    AdapterHub's `model.load_adapter(directory, use_safetensors=True)` reads, head included.
    Returns the directory."""
    name = model.resolve(adapter)
    a = model.config_of(name)
    if not isinstance(a, AdapterConfig):
        raise ConfigError(f"task {name!r} is {model.method(name)}, not a bottleneck adapter: AdapterHub's "
                          "format holds bottleneck adapters (use format='peft' for LoRA, 'minadapt' otherwise)")
    if a.train_layer_norms:
        raise ConfigError(f"adapter {name!r} trains its own LayerNorm copies, which AdapterHub's config "
                          "cannot express: save it with format='minadapt'")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = {**BN_CONFIG, **ARCHITECTURES[a.architecture],
              "non_linearity": NON_LINEARITIES[a.non_linearity],
              "reduction_factor": _reduction_factor(model.cfg.hidden_size, a.bottleneck),
              "leave_out": a.leave_out(model.cfg.num_hidden_layers)}
    (directory / "adapter_config.json").write_text(json.dumps(_envelope(model, name, config), indent=2))
    state, arch = model.adapter_state(name), model.cfg.arch
    save_tensors(directory / "adapter.safetensors",
                 {arch.prefix + arch.theirs(k): v for k, v in state.items() if not k.startswith("heads.")}, {})
    write_head(model, name, directory)
    write_task_record(model, name, directory)
    return directory


def write_head(model, name, directory: Path):
    """Task `name`'s head, if it has one, as AdapterHub saves it: head_config.json and
    model_head.safetensors (read back by read_head)."""
    if name in model.heads:
        (directory / "head_config.json").write_text(
            json.dumps(_envelope(model, name, _head_config(model, name)), indent=2))
        save_tensors(directory / "model_head.safetensors",
                     {k: v for k, v in model.adapter_state(name).items() if k.startswith("heads.")}, {})


def _architecture(config: dict, where: Path) -> str:
    if not isinstance(config, dict):
        raise WeightsError(f"{where}: config {config!r} is not a bottleneck adapter's config dict")
    if config.get("architecture") not in (None, "bottleneck"):
        raise WeightsError(f"{where}: a {config['architecture']!r} adapter; minadapt reads AdapterHub's "
                           "bottleneck adapters (Houlsby, Pfeiffer) only")
    for k in SEMANTIC:
        if k in config and config[k] != BN_CONFIG[k]:
            raise WeightsError(f"{where}: {k}={config[k]!r}; minadapt implements {k}={BN_CONFIG[k]!r} only")
    placed = {k: config.get(k) for k in ("mh_adapter", "output_adapter", "original_ln_before")}
    for arch, fields in ARCHITECTURES.items():
        if placed == fields:
            return arch
    raise WeightsError(f"{where}: {placed} is neither Houlsby's (DoubleSeqBnConfig: "
                       f"{ARCHITECTURES['houlsby']}) nor Pfeiffer's (SeqBnConfig: {ARCHITECTURES['pfeiffer']})")


def _adapter_layers(leave_out, num_layers: int, where: Path):
    """AdapterHub's leave_out -> minadapt's adapter_layers (None: every layer)."""
    if not (isinstance(leave_out, list) and all(isinstance(i, int) and 0 <= i < num_layers for i in leave_out)):
        raise WeightsError(f"{where}: leave_out={leave_out!r}; expected a list of layer indices from 0 "
                           f"to {num_layers - 1}")
    layers = tuple(i for i in range(num_layers) if i not in leave_out)
    if not layers:
        raise WeightsError(f"{where}: leave_out={leave_out!r} leaves out every layer")
    return layers if leave_out else None


def read_head(directory: Path, name: str, model):
    """The AdapterHub head of `directory`, renamed to task `name`: (head kwargs or None, tensors)."""
    if not (directory / "head_config.json").is_file():
        return None, {}
    env = read_json(directory / "head_config.json")
    hc = env.get("config", {})
    want = {"head_type": "classification", "layers": 2, "activation_function": "tanh", "use_pooler": False}
    for k, v in want.items():
        if hc.get(k) != v:
            raise WeightsError(f"{directory / 'head_config.json'}: {k}={hc.get(k)!r}; minadapt's head is "
                               f"AdapterHub's default classification head ({k}={v!r})")
    _, stored = read_tensors(directory, "model_head.safetensors", "pytorch_model_head.bin")
    theirs = env.get("name", name)
    tensors = {f"heads.{name}." + k[len(f"heads.{theirs}."):]: v for k, v in stored.items()}
    label2id = hc.get("label2id") or {}
    labels = [lab for lab, _ in sorted(label2id.items(), key=lambda kv: kv[1])]
    if not labels or labels == [f"LABEL_{i}" for i in range(len(labels))]:
        labels = None
    dropout = hc.get("dropout_prob")
    # one output is a regression, as in AdapterHub and transformers (num_labels=1: MSE loss)
    head = dict(num_labels=int(hc["num_labels"]), labels=labels, regression=int(hc["num_labels"]) == 1,
                dropout=model.cfg.hidden_dropout_prob if dropout is None else float(dropout))
    return head, tensors


def load_adapterhub(model, directory, name: str | None = None) -> str:
    """Add the Houlsby or Pfeiffer adapter (and head, when the directory has one) that AdapterHub
    saved in `directory` to `model`, as task `name` (default: the name it was saved with). Returns
    the name."""
    directory = Path(directory)
    env = read_json(directory / "adapter_config.json")
    where = directory / "adapter_config.json"
    architecture = _architecture(env.get("config"), where)
    stored = env.get("name")
    if env.get("model_type") not in (None, model.cfg.model_type):
        raise WeightsError(f"{where}: made for a {env['model_type']} model ({env.get('model_class')}), "
                           f"this model is {model.cfg.model_type}")
    if env.get("hidden_size") not in (None, model.cfg.hidden_size):
        raise WeightsError(f"{where}: made for hidden size {env['hidden_size']}, this model's is "
                           f"{model.cfg.hidden_size}")
    layers = _adapter_layers(env["config"].get("leave_out") or [], model.cfg.num_hidden_layers, where)
    act = env["config"].get("non_linearity", "relu")
    if act not in FROM_ADAPTERHUB:
        raise WeightsError(f"{where}: non_linearity {act!r}; minadapt has {', '.join(FROM_ADAPTERHUB)}")
    path, tensors = read_tensors(directory, "adapter.safetensors", "pytorch_adapter.bin")
    tensors = {model.cfg.arch.ours(k): v for k, v in tensors.items()}
    tensors, name = rename_task(tensors, stored, name or stored), name or stored
    down = [v for k, v in tensors.items() if k.endswith("adapter_down.0.weight")]
    if not down:
        raise WeightsError(f"{path}: no adapter_down.0.weight tensor")
    head, head_tensors = read_head(directory, name, model)

    def build():
        model.add_adapter(name, int(down[0].shape[0]), FROM_ADAPTERHUB[act], architecture=architecture,
                          adapter_layers=layers)
        if head is not None:
            model.add_classification_head(name, **head)

    record = read_task_record(directory)
    model.add_task_from(name, directory, {**tensors, **head_tensors}, build)
    model.metadata[name] = renamed(record, name)
    return name


