"""One frozen BERT backbone holding any number of named tasks, and running them.

    model = minadapt.load_model("weights/all-MiniLM-L6-v2", dtype="float32", device="cpu")
    model.add_adapter("sst2", bottleneck=64)              # two Houlsby adapters per layer
    model.add_classification_head("sst2", num_labels=2)
    model.load_adapter("bbc.safetensors")                 # another task, beside it: returns "bbc"
    loss, logits, grads = model.loss_and_grads(ids, mask, types, labels, adapter="sst2")
    model.logits(ids, mask, adapter="bbc")

A name stands for a task: how it adapts the backbone (a method of minadapt.methods, with its
config; none for a linear probe) and its head. `model.add(name, method, **options)` is the general
way to give a task a method; add_adapter, add_lora, add_full_finetuning and add_probe say the same
thing for each method by name. Every running call takes `adapter=NAME`; it may be left out when
the model holds exactly one task.

`model.params` is one flat dict, HuggingFace name -> array: the backbone once, and every task's
parameters under their own names. Running a task reads the backbone and that task's parameters,
and `loss_and_grads(adapter=a)` returns gradients for exactly a's trainable names
(`trainable_names(a)`), so training a never changes another task's parameters.

The backbone's Q, K and V weights are views into one fused (3H, H) matrix per layer, so the three
projections run as one matmul. The Model is one process: cutting a batch over cores or machines is
minadapt.parallel's business, a layer above it. Files: minadapt.io (save_adapter, load_adapter).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from . import bert, compose, heads, methods, ops as ops_module
from .backend import resolve_device, resolve_dtype, to_device, to_numpy, xp_for
from .config import BertConfig
from .errors import ConfigError, WeightsError
from .io.weights import expected_shapes, load_checkpoint
from .methods import AdapterConfig, LoraConfig
from .methods.bottleneck import PRESETS  # noqa: F401
from .nn import loss as cross_entropy, mse
from .packed import pack

QKV_SUFFIXES = tuple(f".attention.self.{n}.{t}" for n in bert.QKV for t in ("weight", "bias"))


@dataclass(frozen=True)
class HeadConfig:
    name: str
    num_labels: int = 2
    dropout: float = 0.1
    labels: tuple | None = None  # the label names, in the order of the logits (None: indices)
    regression: bool = False  # one real-valued output and a mean-squared-error loss (STS-B)


class TaskMethod(NamedTuple):
    """How a task adapts the backbone: a minadapt.methods.Method and its config (None: no settings)."""
    method: methods.Method
    config: object


class Model:
    def __init__(self, cfg: BertConfig, params: dict, device="cpu", backbone: dict | None = None,
                 tokenizer=None, seed: int = 0, ops: str = "fast"):
        self.cfg = cfg
        self.device = resolve_device(device)
        self.xp = xp_for(self.device)
        self.dtype = next(iter(params.values())).dtype
        self.backbone = dict(backbone or {})  # name, path, sha256 (filled lazily)
        self.tokenizer = tokenizer
        self.params = {k: to_device(v, self.device) for k, v in params.items()}
        self.qkv = [self._fuse_qkv(i) for i in range(cfg.num_hidden_layers)]
        self.set_ops(ops)
        self.methods: dict[str, TaskMethod] = {}  # name -> how that task adapts the backbone
        self.heads: dict[str, HeadConfig] = {}
        self._trainable: dict[str, set] = {}  # name -> the parameter names that task trains
        self.metadata: dict[str, dict] = {}  # name -> the metadata of the file it was loaded from
        self.rng = self.new_rng(seed)

    # --- building -------------------------------------------------------------------------------
    def _fuse_qkv(self, i):
        """Concatenate Q, K, V into one (3H, H) matrix and make the three dict entries views of it."""
        p = f"encoder.layer.{i}.attention.self."
        names = ("query", "key", "value")
        w = self.xp.concatenate([self.params[p + n + ".weight"] for n in names])
        b = self.xp.concatenate([self.params[p + n + ".bias"] for n in names])
        H = self.cfg.hidden_size
        for j, n in enumerate(names):
            self.params[p + n + ".weight"] = w[j * H:(j + 1) * H]
            self.params[p + n + ".bias"] = b[j * H:(j + 1) * H]
        return w, b

    def set_ops(self, name: str):
        """Run on `name`'s ops: "fast" (minadapt.fast) or "reference" (minadapt.nn); see ops.py."""
        self.ops = ops_module.make(name)
        self.inference_ops = ops_module.make(name, inference=True, linear=getattr(self.ops, "linear", None))

    def new_rng(self, seed: int):
        """A random generator on this model's device (dropout masks are drawn where they are used)."""
        if self.xp is np:
            return np.random.default_rng(seed)
        return self.xp.random.default_rng(seed)

    def inputs(self, *arrays):
        """Host arrays (or lists) moved to this model's device; None and device arrays unchanged."""
        out = []
        for a in arrays:
            if isinstance(a, (np.ndarray, list)):
                a = to_device(np.asarray(a), self.device)
            out.append(a)
        return out

    def put(self, tensors: dict):
        """Set parameters from host arrays, copied: an existing parameter is overwritten in place, so
        views of it (the fused Q|K|V matrix, a packed trainable vector) see the new values; a new one
        is the model's own copy (training it never changes the caller's array)."""
        for k, v in tensors.items():
            if k in self.params and tuple(self.params[k].shape) == tuple(np.shape(v)):
                self.params[k][...] = to_device(np.asarray(v, dtype=self.dtype), self.device)
            else:
                self.params[k] = to_device(np.array(v, dtype=self.dtype), self.device)

    def add_trainable(self, name: str, names):
        """Make parameters `names` (already in params) part of what task `name` trains, and lay the
        task's trainable parameters end to end in one vector (packed.py): AdamW and gradient
        clipping then update them with whole-vector operations. Q, K and V already are views of the
        fused Q|K|V matrix: a task training them stays unpacked."""
        trainable = self._trainable.setdefault(name, set())
        trainable.update(names)
        ordered = sorted(trainable)
        if ordered and not any(n.endswith(QKV_SUFFIXES) for n in ordered):
            self.params.update(pack(self.params, ordered)[1])

    def backbone_names(self) -> list[str]:
        """The checkpoint's parameter names (embeddings and encoder), as load_checkpoint read them."""
        return list(expected_shapes(self.cfg))

    def backbone_state(self) -> dict[str, np.ndarray]:
        """Host copies of the backbone's parameters (what a merged model starts from)."""
        return {k: to_numpy(self.params[k]).copy() for k in self.backbone_names()}

    def with_backbone(self, params: dict, name: str, keep_head: str | None = None) -> "Model":
        """A new Model on backbone `params` (named `name`), with this model's config, tokenizer and
        ops, holding task `keep_head`'s head alone (as a probe) when given."""
        other = Model(self.cfg, params, device=self.device, backbone={"name": name, "path": None,
                      "sha256": None}, tokenizer=self.tokenizer, ops=self.ops.name)
        if keep_head in self.heads:
            h = self.heads[keep_head]
            other.add_classification_head(keep_head, h.num_labels, dropout=h.dropout, labels=h.labels,
                                          regression=h.regression)
            other.put({k: to_numpy(self.params[k]) for k in heads.head_names(keep_head)})
        return other

    def _check_new(self, name, kind):
        if not isinstance(name, str) or not name or "." in name:
            raise ConfigError(f"{kind} name {name!r}: expected a non-empty name without dots "
                              "(it becomes part of parameter names)")
        others = {n for n, t in self.methods.items() if t.method.trains_backbone} - {name}
        if others:
            raise ConfigError(f"this model holds full fine-tuning task {sorted(others)[0]!r}, which "
                              f"trains the backbone every task shares: add {name!r} to another model")

    def add(self, name: str, method: str = "houlsby", seed: int = 0, **options) -> "Model":
        """Adapt the backbone for task `name` by `method` (a name in minadapt.methods.METHODS) with
        its `options` (its config's fields; the rest keep their defaults). A method that trains the
        backbone (full) needs the task's head first."""
        m = methods.get(method)
        return self.add_method(name, m, m.make_config(name, options), seed)

    def add_method(self, name: str, method: methods.Method, config=None, seed: int = 0) -> "Model":
        """Task `name` adapted by `method` with `config` (its config dataclass, or None)."""
        self._check_new(name, method.name)
        if name in self.methods:
            raise ConfigError(f"task {name!r} already adapts the backbone by {self.method(name)}")
        if method.trains_backbone and name not in self.heads:
            raise ConfigError(f"{method.name}: add task {name!r}'s head first (it trains with it)")
        if method.add is not None:
            method.add(self, name, config, seed)
        self._trainable.setdefault(name, set())
        self.methods[name] = TaskMethod(method, config)
        return self

    def add_adapter(self, name: str, bottleneck: int | None = None, non_linearity: str = "swish",
                    seed: int = 0, train_layer_norms: bool = False, init_std: float = 1e-2,
                    architecture: str = "houlsby", preset: str | None = None,
                    init: str = "near_identity", adapter_layers=None):
        """Bottleneck adapters for task `name` (minadapt.methods.bottleneck): architecture
        "houlsby" (two per layer) or "pfeiffer" (one per layer, after the feed-forward block).
        bottleneck: m, default 64 for Houlsby (minadapt's own choice: AdapterHub's DoubleSeqBnConfig
        factor 16 would give H/16; methods/bottleneck.py) and H/16 for Pfeiffer (SeqBnConfig's
        reduction factor 16). preset="houlsby-paper": google-research/adapter-bert's choices (bottleneck.PRESETS).
        init: "near_identity" (W_down ~ N(0, init_std^2), W_up = 0: exactly the identity) or
        "truncated_normal" (both ~ N(0, init_std^2) truncated at 2 std). adapter_layers: K (the top
        K layers) or layer indices; None: every layer."""
        if bottleneck is None:
            bottleneck = max(1, self.cfg.hidden_size // 16) if architecture == "pfeiffer" else 64
        config = AdapterConfig(name, bottleneck, non_linearity, train_layer_norms, init_std,
                               architecture, init, preset, adapter_layers)
        return self.add_method(name, methods.get(config.architecture), config, seed)

    def add_lora(self, name: str, r: int = 8, alpha: float = 16.0, dropout: float = 0.1,
                 targets=("query", "value"), seed: int = 0):
        """LoRA for task `name` on the `targets` projections of every layer (minadapt.methods.lora)."""
        return self.add_method(name, methods.get("lora"), LoraConfig(name, r, alpha, dropout, targets), seed)

    def add_full_finetuning(self, name: str, num_labels: int = 2, seed: int = 0, labels=None):
        """Full fine-tuning as task `name` (minadapt.methods.full): a classification head (added
        here when it has none), and every backbone parameter trainable for it."""
        if name not in self.heads:
            self.add_classification_head(name, num_labels, seed=seed, labels=labels)
        return self.add_method(name, methods.get("full"), None, seed)

    def add_probe(self, name: str, num_labels: int = 2, seed: int = 0, labels=None):
        """A linear probe as task `name` (minadapt.methods.probe): a classification head alone."""
        return self.add_classification_head(name, num_labels, seed=seed, labels=labels)

    def add_classification_head(self, name: str, num_labels: int = 2, seed: int = 0,
                                dropout: float | None = None, labels=None, regression: bool = False):
        """AdapterHub's default head on [CLS] for task `name` (see heads.py); its parameters become
        `name`'s trainable parameters. labels: the label names, one per logit (optional).
        regression=True: one output, a real number, trained with mean squared error (num_labels=1)."""
        if regression:
            num_labels, labels = 1, None
        self._check_new(name, "head")
        if name in self.heads:
            raise ConfigError(f"this model already holds head {name!r}")
        if dropout is None:
            dropout = self.cfg.hidden_dropout_prob
        head = HeadConfig(name, num_labels, dropout, _label_names(name, labels, num_labels),
                          bool(regression))
        init = heads.init_params(name, self.cfg.hidden_size, num_labels,
                                 np.random.default_rng(seed + 1), self.dtype)
        self.put(init)
        self.add_trainable(name, init)
        self.heads[name] = head
        return self

    def set_labels(self, name: str, labels):
        """Name task `name`'s labels, one per logit (a file's metadata may carry them)."""
        head = self.heads[self.resolve(name)]
        self.heads[head.name] = dataclasses.replace(
            head, labels=_label_names(head.name, labels, head.num_labels))

    def merged(self, name: str) -> "Model":
        """A new Model with task `name`'s method folded into the backbone (LoRA: W + (alpha/r) B A),
        holding `name`'s head alone: inference at the bare backbone's cost. This model is left as
        it was. Only methods that can be merged (Method.merge) can."""
        name = self.resolve(name)
        method = self.methods[name].method if name in self.methods else methods.get("probe")
        if method.merge is None:
            raise ConfigError(f"task {name!r} ({method.name}) has nothing to merge into the weights")
        return method.merge(self, name)

    merge_lora = merged  # the name lessons and scripts of the first rounds use

    # --- what the model holds -------------------------------------------------------------------
    def names(self) -> list[str]:
        """Every task this model holds."""
        return sorted(set(self._trainable))

    def method(self, name: str) -> str:
        """How task `name` adapts the backbone: a name in minadapt.methods.METHODS ("probe" for a
        head alone)."""
        name = self.resolve(name)
        return self.methods[name].method.name if name in self.methods else "probe"

    def config_of(self, name: str):
        """Task `name`'s method config (an AdapterConfig, LoraConfig, ...), or None."""
        name = self.resolve(name)
        return self.methods[name].config if name in self.methods else None

    @property
    def adapters(self) -> dict:
        """{name: AdapterConfig} of the tasks with bottleneck adapters (a view of `methods`)."""
        return {n: t.config for n, t in self.methods.items() if isinstance(t.config, AdapterConfig)}

    @property
    def loras(self) -> dict:
        """{name: LoraConfig} of the tasks with LoRA (a view of `methods`)."""
        return {n: t.config for n, t in self.methods.items() if isinstance(t.config, LoraConfig)}

    def resolve(self, adapter: str | None) -> str | None:
        """The task a call runs: `adapter` itself, or, when it is None, the only one held (None
        for a model that holds none)."""
        if adapter is not None:
            if adapter not in self._trainable:
                held = ", ".join(self.names()) or "none"
                raise ConfigError(f"no adapter or head named {adapter!r} (this model holds: {held})")
            return adapter
        names = self.names()
        if len(names) > 1:
            raise ConfigError(f"this model holds {len(names)} adapters ({', '.join(names)}): "
                              "say which to run with adapter=NAME")
        return names[0] if names else None

    def trainable_names(self, adapter: str | None = None) -> set:
        """The parameter names task `adapter` trains (the set itself: full fine-tuning adds the
        backbone's names to it)."""
        name = self.resolve(adapter)
        return self._trainable[name] if name is not None else set()

    @property
    def trainable(self) -> set:
        """trainable_names() of the only task held (single-adapter code)."""
        return self.trainable_names()

    def lowest_trainable_layer(self, adapter: str | None = None) -> int | None:
        """The lowest layer holding one of the task's trainable parameters: backward stops there.
        -1: the embeddings train too; None: no encoder parameter trains (a linear probe)."""
        trainable = self.trainable_names(adapter)
        if any(k.startswith(("embeddings.", "prompt_encoder.")) for k in trainable):
            return -1  # the embeddings, or a prompt before them
        if any(k.startswith("prefix_encoder.") for k in trainable):
            return 0  # a prefix joins every layer's attention
        layers = [int(k.split(".")[2]) for k in trainable if k.startswith("encoder.layer.")]
        return min(layers) if layers else None

    # --- running --------------------------------------------------------------------------------
    def _run(self, name, train, rng=None, grad=True):
        how = self.methods.get(name)
        fields = {how.method.run_field: how.config} if how and how.method.run_field else {}
        return bert.Run(ops=self.ops if grad else self.inference_ops, train=train,
                        rng=rng if rng is not None else self.rng,
                        trainable=frozenset(self._trainable.get(name, ())) if grad else frozenset(),
                        **fields)

    def encode(self, input_ids, attention_mask, token_type_ids=None, adapter: str | None = None):
        """Last hidden state (B, T, H) of every token, in evaluation mode (no dropout), through
        the backbone and task `adapter`'s adapters (the identity at init; none for a bare model)."""
        ids, mask, types = self.inputs(input_ids, attention_mask, token_type_ids)
        run = self._run(self.resolve(adapter), False, grad=False)
        return bert.encoder_forward(self.params, self.qkv, self.cfg, ids, mask, types, run)[0]

    def logits(self, input_ids, attention_mask, token_type_ids=None, adapter: str | None = None):
        """Class scores (B, C) of task `adapter`'s head, in evaluation mode. adapter=[a task per
        row]: {task: scores of its rows}, the backbone run once over the batch (compose.py)."""
        if isinstance(adapter, (list, tuple)):
            return compose.logits_per_task(self, input_ids, attention_mask, token_type_ids, adapter)
        ids, mask, types = self.inputs(input_ids, attention_mask, token_type_ids)
        name = self.resolve(adapter)
        return self._forward(name, ids, mask, types, self._run(name, False, grad=False))[0]

    def _forward(self, name, input_ids, attention_mask, token_type_ids, run):
        if name not in self.heads:
            raise ConfigError(f"task {name!r} has no classification head: call "
                              "add_classification_head first")
        head = self.heads[name]
        h, enc_cache = bert.encoder_forward(self.params, self.qkv, self.cfg, input_ids,
                                            attention_mask, token_type_ids, run, cls_only=True)
        head_op = getattr(run.ops, "head", heads)  # a learner's ops bundle brings its own (learner.py)
        logits, head_cache = head_op.forward(h[:, 0], self.params, name, head.dropout, run.rng,
                                             run.train, run.ops.dropout)
        return logits, (enc_cache, head_cache, h.shape)

    def loss_and_grads(self, input_ids, attention_mask, token_type_ids, labels,
                       adapter: str | None = None, train=True, rng=None):
        """Forward, loss (mean cross-entropy; mean squared error for a regression head), backward,
        for task `adapter`.
        Returns (loss as a 0-d array, logits (B, C), grads: {name: array} for exactly
        trainable_names(adapter)). train=True: dropout on, masks drawn from `rng` (default: the
        model's generator). adapter=[a task per row]: compose.loss_and_grads_per_task."""
        if isinstance(adapter, (list, tuple)):
            return compose.loss_and_grads_per_task(self, input_ids, attention_mask, token_type_ids,
                                                   labels, adapter, train, rng)
        ids, mask, types, labels = self.inputs(input_ids, attention_mask, token_type_ids, labels)
        name = self.resolve(adapter)
        run = self._run(name, train, rng if train else None)
        logits, (enc_cache, head_cache, h_shape) = self._forward(name, ids, mask, types, run)
        loss_op = mse if self.heads[name].regression else getattr(run.ops, "cross_entropy", cross_entropy)
        loss, loss_cache = loss_op.forward(logits, labels)
        # backward: the forward read bottom-up
        (dlogits,) = loss_op.backward(1.0, loss_cache)
        dcls, grads = getattr(run.ops, "head", heads).backward(dlogits, head_cache, name, run.ops.dropout)
        lowest = self.lowest_trainable_layer(name)
        if lowest is not None:
            dh = self.xp.zeros(h_shape, dcls.dtype)  # only [CLS] reaches the head
            dh[:, 0] = dcls
            _, enc_grads = bert.encoder_backward(dh, enc_cache, run, lowest)
            grads.update(enc_grads)
        assert set(grads) == self._trainable[name], set(grads) ^ self._trainable[name]
        return loss, logits, grads

    # --- adapter files (minadapt.io) ------------------------------------------------------------
    def backbone_id(self) -> dict:
        """Name and sha256 of the checkpoint file: an adapter file records them, and loading checks."""
        if "sha256" not in self.backbone and self.backbone.get("path"):
            from .io.hub import sha256_of

            self.backbone["sha256"] = sha256_of(self.backbone["path"])
        return {"name": self.backbone.get("name"), "sha256": self.backbone.get("sha256"),
                "hidden_size": self.cfg.hidden_size, "num_hidden_layers": self.cfg.num_hidden_layers}

    def adapter_state(self, adapter: str | None = None) -> dict[str, np.ndarray]:
        """Task `adapter`'s trainable parameters as NumPy arrays (what an adapter file holds)."""
        return {k: to_numpy(self.params[k]) for k in sorted(self.trainable_names(adapter))}

    def save_adapter(self, path, adapter: str | None = None, extra_metadata: dict | None = None,
                     format: str = "minadapt"):
        """Save task `adapter`'s trainable parameters (minadapt.io.save_adapter). format:
          "minadapt"    one safetensors file, the configs and the backbone's id in its metadata
                        (any method);
          "adapterhub"  AdapterHub's directory (Houlsby or Pfeiffer adapter + head);
          "peft"        PEFT's directory (LoRA).
        Returns the path written."""
        from .io import save_adapter

        return save_adapter(self, path, self.resolve(adapter), format, extra_metadata)

    def load_adapter(self, path, check_backbone: bool = True, name: str | None = None) -> str:
        """Add the task stored at `path` beside whatever this model holds; returns its name. The
        format is detected (minadapt.io.detect_format): a minadapt file, an AdapterHub directory or
        a PEFT directory. `name`: the task's name here (default: the one stored)."""
        from .io import load_adapter

        return load_adapter(self, path, check_backbone, name)

    def add_task_from(self, name: str, where, tensors: dict, build) -> str:
        """Add task `name` with stored parameters `tensors` (read from `where`, for messages):
        `build()` adds its method and head as their config says, then the stored key set must be
        exactly the task's trainable names, and every shape the model's, before any value is set.
        On any failure the half-added task is removed: the model is left as it was."""
        if name in self._trainable:
            raise WeightsError(f"{where}: this model already holds a task named {name!r}; load it under "
                               f"another name: --adapter NEWNAME={where} (or load_adapter(path, name=...))")
        try:
            build()
            expected = self._trainable[name]
            if set(tensors) != expected:
                diff = sorted(set(tensors) ^ expected)
                raise WeightsError(f"{where}: key set does not match its own config: {diff[:3]} ...")
            for k, v in tensors.items():
                if tuple(v.shape) != tuple(self.params[k].shape):
                    raise WeightsError(f"{where}: key {k!r} has shape {tuple(v.shape)}, expected "
                                       f"{tuple(self.params[k].shape)}")
        except Exception:
            self.remove(name)
            raise
        self.put(tensors)
        return name

    def remove(self, name: str):
        """Forget task `name`: its method, head and their parameters (the backbone stays)."""
        backbone = set(self.backbone_names())
        for k in self._trainable.pop(name, set()):
            if k not in backbone:  # a backbone parameter (full fine-tuning) is never removed
                self.params.pop(k, None)
        self.methods.pop(name, None)
        self.heads.pop(name, None)
        self.metadata.pop(name, None)


def _label_names(name, labels, num_labels):
    if labels is None:
        return None
    labels = tuple(str(x) for x in labels)
    if len(labels) != num_labels:
        raise ConfigError(f"head {name!r}: {len(labels)} label names for {num_labels} labels")
    return labels


def load_model(path=None, dtype="float32", device=None, seed: int = 0, ops: str = "fast") -> Model:
    """Load a BERT checkpoint (config.json + model.safetensors [+ tokenizer.json]): `path` is a
    folder or a Hugging Face id (io.hub.resolve_model), None the default all-MiniLM-L6-v2; fetched
    into Hugging Face's cache when missing.
    ops: "fast" (default) or "reference" (minadapt.nn, the plain maths; see ops.py)."""
    from .io.hub import model_name, resolve_model
    from .io.weights import checkpoint_file
    from .tokenizer import Tokenizer

    path = resolve_model(path)
    cfg = BertConfig.from_json(path / "config.json")
    weights = checkpoint_file(path)
    params = load_checkpoint(weights, cfg, resolve_dtype(dtype))
    tok = Tokenizer(path) if (path / "tokenizer.json").is_file() else None
    backbone = {"name": model_name(path), "path": str(weights)}
    return Model(cfg, params, device=device, backbone=backbone, tokenizer=tok, seed=seed, ops=ops)
