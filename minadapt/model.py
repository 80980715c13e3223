"""One frozen BERT backbone holding any number of named adapters and classification heads.

    model = minadapt.load_model("weights/all-MiniLM-L6-v2", dtype="float32", device="cpu")
    model.add_adapter("sst2", bottleneck=64)              # two Houlsby adapters per layer
    model.add_classification_head("sst2", num_labels=2)
    model.load_adapter("bbc.safetensors")                 # another task, beside it: returns "bbc"
    loss, logits, grads = model.loss_and_grads(ids, mask, types, labels, adapter="sst2")
    model.logits(ids, mask, adapter="bbc")

A name stands for a task: its adapter (which may be absent: a linear probe) and its head. Every
running method takes `adapter=NAME`; it may be left out when the model holds exactly one.
`model.params` is one flat dict, HuggingFace name -> array: the backbone once, and every adapter's
and head's parameters under their own names. Running one adapter reads the backbone and that
adapter's parameters, and `loss_and_grads(adapter=a)` returns gradients for exactly a's trainable
names (`trainable_names(a)`), so training a never changes another task's parameters.

The backbone's Q, K and V weights are views into one fused (3H, H) matrix per layer, so the three
projections run as one matmul. The Model is one process: cutting a batch over cores or machines is
parallel.py's business, a layer above it.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import bert, heads, ops as ops_module
from .backend import resolve_device, resolve_dtype, to_device, to_numpy, xp_for
from .config import BertConfig
from .errors import ConfigError, WeightsError
from .io.hub import sha256_of
from .nn import adapter, loss as cross_entropy, mse
from .packed import pack
from .io.weights import check_finite, load_checkpoint, read_safetensors, save_tensors

ADAPTER_FORMAT = "minadapt-adapter/1"
QKV_SUFFIXES = tuple(f".attention.self.{n}.{t}" for n in bert.QKV for t in ("weight", "bias"))


@dataclass(frozen=True)
class AdapterConfig:
    name: str  # used in parameter names: ...adapters.{name}.adapter_down.0.weight
    bottleneck: int = 64  # m: width of the down-projection
    non_linearity: str = "swish"  # swish (AdapterHub's default), gelu, relu or gelu_tanh
    train_layer_norms: bool = False  # Houlsby also trains the layers' LayerNorms (its own copies)
    init_std: float = 1e-2  # std of W_down at init (W_up starts at 0: the identity)
    architecture: str = "houlsby"  # where adapters sit in a layer: bert.ADAPTER_SITES
    init: str = "near_identity"  # or "truncated_normal" (both projections): nn.adapter.init_params


# What `add_adapter(name, preset=...)` sets. "houlsby-paper" is google-research/adapter-bert, the
# code of Houlsby et al. (2019); where it differs from AdapterHub's Houlsby default
# (DoubleSeqBnConfig, which add_adapter's defaults follow):
#   non-linearity  tanh-form GELU (BERT's TF gelu)        AdapterHub: swish
#   init           W_down and W_up ~ N(0, 1e-3^2) truncated at 2 std, biases 0, so the adapter starts
#                  near, not at, the identity            AdapterHub "bert": both N(0, 0.02^2);
#                                                        minadapt's default: W_down N(0, 0.01^2), W_up 0
#   LayerNorms     trained, as the adapter's own copies  AdapterHub: frozen
# Placement is the same (after each sub-layer's dense + dropout, before its residual add and
# LayerNorm), and so is the bottleneck (adapter-bert's adapter_size, 64 by default).
PRESETS = {
    "houlsby-paper": dict(non_linearity="gelu_tanh", train_layer_norms=True, init="truncated_normal",
                          init_std=1e-3, architecture="houlsby"),
}


@dataclass(frozen=True)
class LoraConfig:
    name: str  # used in parameter names: ...attention.self.query.lora_A.{name}.weight
    r: int = 8  # rank of the update B A
    alpha: float = 16.0  # the update is scaled by alpha / r
    dropout: float = 0.1  # on LoRA's input x (training only), PEFT's lora_dropout
    targets: tuple = ("query", "value")  # which of the fused Q|K|V projections get a LoRA

    @property
    def scale(self) -> float:
        return self.alpha / self.r


@dataclass(frozen=True)
class HeadConfig:
    name: str
    num_labels: int = 2
    dropout: float = 0.1
    labels: tuple | None = None  # the label names, in the order of the logits (None: indices)
    regression: bool = False  # one real-valued output and a mean-squared-error loss (STS-B)


class Model:
    def __init__(self, cfg: BertConfig, params: dict, device="cpu", backbone: dict | None = None,
                 tokenizer=None, seed: int = 0, ops: str = "fast"):
        self.cfg = cfg
        self.device = resolve_device(device)
        self.xp = xp_for(self.device)
        self.dtype = next(iter(params.values())).dtype
        self.backbone = dict(backbone or {})  # name, path, sha256 (filled lazily)
        self.tokenizer = tokenizer
        self.ops = ops_module.make(ops)
        self._inference_ops = ops_module.make(ops, inference=True, linear=self.ops.linear)
        self.params = {k: to_device(v, self.device) for k, v in params.items()}
        self.qkv = [self._fuse_qkv(i) for i in range(cfg.num_hidden_layers)]
        self.adapters: dict[str, AdapterConfig] = {}
        self.heads: dict[str, HeadConfig] = {}
        self.loras: dict[str, LoraConfig] = {}
        self.full_finetuning: set[str] = set()  # tasks that train the backbone itself
        self._trainable: dict[str, set] = {}  # name -> the parameter names that task trains
        self.metadata: dict[str, dict] = {}  # name -> the metadata of the file it was loaded from
        self.rng = self._new_rng(seed)

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

    def _new_rng(self, seed):
        if self.xp is np:
            return np.random.default_rng(seed)
        return self.xp.random.default_rng(seed)

    def _put(self, tensors: dict):
        """Set parameters from host arrays; an existing parameter is overwritten in place, so views
        of it (the fused Q|K|V matrix, a packed trainable vector) see the new values."""
        for k, v in tensors.items():
            v = to_device(np.asarray(v, dtype=self.dtype), self.device)
            if k in self.params and self.params[k].shape == v.shape:
                self.params[k][...] = v
            else:
                self.params[k] = v

    def _pack(self, name):
        """Lay task `name`'s trainable parameters end to end in one vector; params[k] become views
        of it, so AdamW and gradient clipping update them with whole-vector operations (packed.py).
        Q, K and V already are views of the fused Q|K|V matrix: a task training them stays unpacked."""
        names = sorted(self._trainable[name])
        if names and not any(n.endswith(QKV_SUFFIXES) for n in names):
            self.params.update(pack(self.params, names)[1])

    def _check_new(self, name, kind):
        if not isinstance(name, str) or not name or "." in name:
            raise ConfigError(f"{kind} name {name!r}: expected a non-empty name without dots "
                              "(it becomes part of parameter names)")
        others = set(self.full_finetuning) - {name}
        if others:
            raise ConfigError(f"this model holds full fine-tuning task {sorted(others)[0]!r}, which "
                              f"trains the backbone every task shares: add {name!r} to another model")

    def add_adapter(self, name: str, bottleneck: int | None = None, non_linearity: str = "swish",
                    seed: int = 0, train_layer_norms: bool = False, init_std: float = 1e-2,
                    architecture: str = "houlsby", preset: str | None = None,
                    init: str = "near_identity"):
        """Bottleneck adapters for task `name` at the architecture's sites in every layer; they
        become `name`'s trainable parameters.

        architecture: "houlsby" (AdapterHub's DoubleSeqBnConfig: two per layer, each reading its
        sub-layer's output) or "pfeiffer" (SeqBnConfig: one per layer after the feed-forward block,
        reading LayerNorm(o + h); bert.ADAPTER_READS). bottleneck: m, default 64 for Houlsby and
        H/16 for Pfeiffer (AdapterHub's reduction factors 6 and 16 on a 384-wide model).
        preset="houlsby-paper": google-research/adapter-bert's choices (PRESETS says which and how
        they differ from AdapterHub's); it sets non_linearity, train_layer_norms, init, init_std and
        architecture. init: "near_identity" (W_down ~ N(0, init_std^2), W_up = 0: exactly the
        identity) or "truncated_normal" (both ~ N(0, init_std^2) truncated at 2 std)."""
        if preset is not None:
            if preset not in PRESETS:
                raise ConfigError(f"preset {preset!r}: expected one of {', '.join(PRESETS)}")
            p = PRESETS[preset]
            non_linearity, train_layer_norms, init, init_std, architecture = (
                p["non_linearity"], p["train_layer_norms"], p["init"], p["init_std"], p["architecture"])
        if bottleneck is None:
            bottleneck = max(1, self.cfg.hidden_size // 16) if architecture == "pfeiffer" else 64
        self._check_new(name, "adapter")
        if name in self.loras or name in self.full_finetuning:
            raise ConfigError(f"task {name!r} already adapts the backbone by {self.method(name)}")
        if init not in adapter.INITS:
            raise ConfigError(f"init {init!r}: expected one of {', '.join(adapter.INITS)}")
        if name in self.adapters:
            raise ConfigError(f"this model already holds adapter {name!r}")
        if non_linearity not in adapter.NON_LINEARITIES:
            raise ConfigError(f"non_linearity {non_linearity!r}: expected one of "
                              f"{', '.join(adapter.NON_LINEARITIES)}")
        if architecture not in bert.ADAPTER_SITES:
            raise ConfigError(f"architecture {architecture!r}: expected one of "
                              f"{', '.join(bert.ADAPTER_SITES)}")
        if not (isinstance(bottleneck, int) and bottleneck >= 1):
            raise ConfigError(f"bottleneck {bottleneck!r}: expected a whole number, 1 or more")
        config = AdapterConfig(name, bottleneck, non_linearity, train_layer_norms, init_std,
                               architecture, init)
        rng = np.random.default_rng(seed)
        trainable = self._trainable.setdefault(name, set())
        for i in range(self.cfg.num_hidden_layers):
            for where in bert.ADAPTER_SITES[architecture]:
                prefix = bert.adapter_prefix(i, where, name)
                values = adapter.init_params(self.cfg.hidden_size, bottleneck, rng, self.dtype, init_std,
                                             init)
                self._put({prefix + k: v for k, v in values.items()})
                trainable.update(prefix + k for k in values)
            if train_layer_norms:  # its own copies of the layer's LayerNorms, starting as the backbone's
                for where in ("attention.output", "output"):
                    own, shared = bert.layer_norm_prefix(i, where, config), bert.layer_norm_prefix(i, where)
                    for t in ("weight", "bias"):
                        self._put({own + t: to_numpy(self.params[shared + t])})
                        trainable.add(own + t)
        self.adapters[name] = config
        self._pack(name)
        return self

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
        if labels is not None:
            labels = tuple(str(x) for x in labels)
            if len(labels) != num_labels:
                raise ConfigError(f"head {name!r}: {len(labels)} label names for {num_labels} labels")
        if dropout is None:
            dropout = self.cfg.hidden_dropout_prob
        init = heads.init_params(name, self.cfg.hidden_size, num_labels,
                                 np.random.default_rng(seed + 1), self.dtype)
        self._put(init)
        self._trainable.setdefault(name, set()).update(init)
        self.heads[name] = HeadConfig(name, num_labels, dropout, labels, bool(regression))
        self._pack(name)
        return self

    def add_lora(self, name: str, r: int = 8, alpha: float = 16.0, dropout: float = 0.1,
                 targets=("query", "value"), seed: int = 0):
        """LoRA for task `name` on the `targets` projections of every layer (nn/lora.py):
            q = x Wq^T + bq + (alpha / r) dropout(x) A_q^T B_q^T        and likewise for v,
        added to the q and v slices of the fused Q|K|V matmul (bert.qkv_lora_forward). A (r, H) starts
        PEFT's way (kaiming-uniform), B (H, r) at zero, so the model starts unchanged. A and B become
        `name`'s trainable parameters, named as PEFT names them in memory:
        encoder.layer.{i}.attention.self.query.lora_A.{name}.weight. Matches PEFT's
        LoraConfig(target_modules=targets, r=r, lora_alpha=alpha, lora_dropout=dropout)."""
        self._check_new(name, "LoRA")
        if name in self.adapters or name in self.loras or name in self.full_finetuning:
            raise ConfigError(f"task {name!r} already adapts the backbone by {self.method(name)}")
        targets = tuple(targets)
        if not targets or set(targets) - set(bert.QKV):
            raise ConfigError(f"LoRA targets {targets!r}: expected some of {', '.join(bert.QKV)}")
        if not (isinstance(r, int) and r >= 1):
            raise ConfigError(f"LoRA rank r={r!r}: expected a whole number, 1 or more")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"LoRA dropout {dropout!r}: expected 0 <= p < 1")
        from .nn import lora

        rng = np.random.default_rng(seed)
        H = self.cfg.hidden_size
        trainable = self._trainable.setdefault(name, set())
        for i in range(self.cfg.num_hidden_layers):
            for target in bert.QKV:  # in Q, K, V order whatever order targets came in
                if target in targets:
                    a, b = bert.lora_names(i, target, name)
                    init = lora.init_params(H, H, r, rng, self.dtype)
                    self._put({a: init["lora_A"], b: init["lora_B"]})
                    trainable.update((a, b))
        self.loras[name] = LoraConfig(name, r, float(alpha), float(dropout),
                                      tuple(t for t in bert.QKV if t in targets))
        self._pack(name)
        return self

    def add_full_finetuning(self, name: str, num_labels: int = 2, seed: int = 0, labels=None):
        """Full fine-tuning as task `name`: a classification head, and every backbone parameter
        (embeddings, Q/K/V together, every dense layer and LayerNorm) trainable for it.

        Training it changes the backbone itself, the one every task on this model shares, so it is
        refused on a model that holds any other task, and no task can be added beside it: load a
        separate model for each fully fine-tuned task. encoder_backward then runs down into the
        embeddings (lowest_trainable_layer = -1)."""
        self._check_new(name, "full fine-tuning")
        others = set(self._trainable) - {name}
        if others:
            raise ConfigError(f"full fine-tuning trains the backbone that task(s) "
                              f"{', '.join(sorted(others))} share: use a model that holds no other task")
        if name not in self.heads:
            self.add_classification_head(name, num_labels, seed=seed, labels=labels)
        self.full_finetuning.add(name)
        self._trainable[name].update(k for k in self.params if k.startswith(("embeddings.", "encoder.")))
        return self

    def add_probe(self, name: str, num_labels: int = 2, seed: int = 0, labels=None):
        """A linear probe as task `name`: only a classification head trains, on the frozen backbone's
        [CLS] features (AdapterHub's two-layer head, heads.py; "linear" in the literature's sense that
        the features are fixed). No gradient flows into the encoder at all."""
        return self.add_classification_head(name, num_labels, seed=seed, labels=labels)

    def merge_lora(self, name: str) -> "Model":
        """A new Model whose backbone has task `name`'s LoRA folded in, W' = W + (alpha/r) B A for each
        target (nn.lora.merged_weight), holding `name`'s head alone (as a probe). It runs the bare
        backbone's code path, with no low-rank term: inference at the plain model's cost.

        It is a separate model because merging changes the backbone, which every other task on this
        one shares; this model is left as it was (its weights are copied, on the host, first)."""
        from .nn import lora

        name = self.resolve(name)
        if name not in self.loras:
            raise ConfigError(f"task {name!r} has no LoRA to merge (it is {self.method(name)})")
        lo = self.loras[name]
        from .io.weights import expected_shapes

        params = {k: to_numpy(self.params[k]).copy() for k in expected_shapes(self.cfg)}
        for i in range(self.cfg.num_hidden_layers):
            for target in lo.targets:
                a, b = bert.lora_names(i, target, name)
                w = f"encoder.layer.{i}.attention.self.{target}.weight"
                params[w] = lora.merged_weight(params[w], to_numpy(self.params[a]),
                                               to_numpy(self.params[b]), lo.scale)
        backbone = {"name": f"{self.backbone.get('name')}+lora:{name}", "path": None,
                    "sha256": None}
        merged = Model(self.cfg, params, device=self.device, backbone=backbone,
                       tokenizer=self.tokenizer, ops=self.ops.name)
        if name in self.heads:
            h = self.heads[name]
            merged.add_classification_head(name, h.num_labels, dropout=h.dropout, labels=h.labels)
            merged._put({k: to_numpy(self.params[k]) for k in heads.head_names(name)})
        return merged

    def names(self) -> list[str]:
        """Every task this model holds (an adapter, a LoRA, a head, or some of them under one name)."""
        return sorted(set(self._trainable))

    def method(self, name: str) -> str:
        """How task `name` adapts the backbone: "houlsby", "pfeiffer" (bottleneck adapters), "lora",
        "full" (full fine-tuning) or "probe" (a head on frozen features)."""
        name = self.resolve(name)
        if name in self.full_finetuning:
            return "full"
        if name in self.loras:
            return "lora"
        if name in self.adapters:
            return self.adapters[name].architecture
        return "probe"

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
        if any(k.startswith("embeddings.") for k in trainable):
            return -1
        layers = [int(k.split(".")[2]) for k in trainable if k.startswith("encoder.layer.")]
        return min(layers) if layers else None

    # --- running --------------------------------------------------------------------------------
    def _run(self, name, train, rng=None, grad=True):
        return bert.Run(ops=self.ops if grad else self._inference_ops, train=train,
                        rng=rng if rng is not None else self.rng,
                        adapter=self.adapters.get(name) if name is not None else None,
                        lora=self.loras.get(name) if name is not None else None,
                        trainable=frozenset(self._trainable.get(name, ())) if grad else frozenset())

    def _inputs(self, *arrays):
        """Host arrays (or lists) moved to this model's device; None and device arrays unchanged."""
        out = []
        for a in arrays:
            if isinstance(a, (np.ndarray, list)):
                a = to_device(np.asarray(a), self.device)
            out.append(a)
        return out

    def encode(self, input_ids, attention_mask, token_type_ids=None, adapter: str | None = None):
        """Last hidden state (B, T, H) of every token, in evaluation mode (no dropout), through
        the backbone and task `adapter`'s adapters (the identity at init; none for a bare model)."""
        ids, mask, types = self._inputs(input_ids, attention_mask, token_type_ids)
        run = self._run(self.resolve(adapter), False, grad=False)
        return bert.encoder_forward(self.params, self.qkv, self.cfg, ids, mask, types, run)[0]

    def logits(self, input_ids, attention_mask, token_type_ids=None, adapter: str | None = None):
        """Class scores (B, C) of task `adapter`'s head, in evaluation mode."""
        ids, mask, types = self._inputs(input_ids, attention_mask, token_type_ids)
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
        model's generator)."""
        ids, mask, types, labels = self._inputs(input_ids, attention_mask, token_type_ids, labels)
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

    # --- adapter files --------------------------------------------------------------------------
    def backbone_id(self) -> dict:
        """Name and sha256 of the checkpoint file: an adapter file records them, and loading checks."""
        if "sha256" not in self.backbone and self.backbone.get("path"):
            self.backbone["sha256"] = sha256_of(self.backbone["path"])
        return {"name": self.backbone.get("name"), "sha256": self.backbone.get("sha256"),
                "hidden_size": self.cfg.hidden_size, "num_hidden_layers": self.cfg.num_hidden_layers}

    def adapter_state(self, adapter: str | None = None) -> dict[str, np.ndarray]:
        """Task `adapter`'s trainable parameters as NumPy arrays (what an adapter file holds)."""
        return {k: to_numpy(self.params[k]) for k in sorted(self.trainable_names(adapter))}

    def save_adapter(self, path, adapter: str | None = None, extra_metadata: dict | None = None,
                     format: str = "minadapt"):
        """Save task `adapter`'s trainable parameters. format:
          "minadapt"    one safetensors file, the configs and the backbone's id in its metadata
                        (any method: bottleneck adapters, LoRA, probe, full fine-tuning);
          "adapterhub"  AdapterHub's directory (Houlsby or Pfeiffer adapter + head), which
                        adapters' `load_adapter(dir, use_safetensors=True)` reads (minadapt.io);
          "peft"        PEFT's LoRA directory, which `PeftModel.from_pretrained` reads.
        Returns the path written."""
        if format == "adapterhub":
            from .io import save_adapterhub

            return save_adapterhub(self, path, adapter)
        if format == "peft":
            from .io import save_peft

            return save_peft(self, path, adapter)
        if format != "minadapt":
            raise ConfigError(f"format {format!r}: expected minadapt, adapterhub or peft")
        name = self.resolve(adapter)
        a, h, lo = self.adapters.get(name), self.heads.get(name), self.loras.get(name)
        meta = {
            "format": ADAPTER_FORMAT,
            "adapter": json.dumps(asdict(a) if a else None),
            "head": json.dumps(asdict(h) if h else None),
            "lora": json.dumps(asdict(lo) if lo else None),
            "full_finetuning": json.dumps(name in self.full_finetuning),
            "backbone": json.dumps(self.backbone_id()),
        }
        for k, v in (extra_metadata or {}).items():
            meta[k] = v if isinstance(v, str) else json.dumps(v)
        save_tensors(path, self.adapter_state(name), meta)
        return Path(path)

    def load_adapter(self, path, check_backbone: bool = True, name: str | None = None) -> str:
        """Add the task stored at `path` beside whatever this model holds; returns its name. The
        format is detected (minadapt.io.detect_format): a minadapt file (made by save_adapter), an
        AdapterHub directory (Houlsby or Pfeiffer, with its head) or a PEFT LoRA directory (`name`
        names its task; default: its head's name, or the directory's)."""
        from .io import detect_format, load_adapterhub, load_peft

        kind = detect_format(path)
        if kind == "adapterhub":
            return load_adapterhub(self, path)
        if kind == "peft":
            return load_peft(self, path, name)
        tensors, meta = read_safetensors(path)
        check_finite(tensors, path)
        if meta.get("format") != ADAPTER_FORMAT:
            raise WeightsError(f"{path}: not a minadapt adapter file (its metadata has no "
                               f"format={ADAPTER_FORMAT!r}; found {meta.get('format')!r})")
        theirs, ours = json.loads(meta["backbone"]), self.backbone_id()
        if check_backbone and (theirs.get("sha256") != ours["sha256"]
                               or theirs.get("hidden_size") != ours["hidden_size"]):
            raise WeightsError(
                f"{path}: made for backbone {theirs.get('name')} (sha256 {str(theirs.get('sha256'))[:12]}…, "
                f"hidden {theirs.get('hidden_size')}), but this model is {ours['name']} "
                f"(sha256 {str(ours['sha256'])[:12]}…, hidden {ours['hidden_size']})")
        a, h = json.loads(meta["adapter"]), json.loads(meta["head"])
        lo, full = json.loads(meta.get("lora", "null")), json.loads(meta.get("full_finetuning", "false"))
        name = (a or lo or h or {}).get("name")
        if name is None:
            raise WeightsError(f"{path}: holds neither an adapter nor a head")
        if a:
            a = _renamed_layer_norms(a, tensors, self.cfg.num_hidden_layers)

        def build():
            if a:
                self.add_adapter(name, a["bottleneck"], a["non_linearity"],
                                 train_layer_norms=a["train_layer_norms"], init_std=a["init_std"],
                                 architecture=a.get("architecture", "houlsby"),
                                 init=a.get("init", "near_identity"))
            if lo:
                self.add_lora(name, lo["r"], lo["alpha"], lo["dropout"], tuple(lo["targets"]))
            if h:
                self.add_classification_head(name, h["num_labels"], dropout=h["dropout"],
                                             labels=h.get("labels"), regression=h.get("regression", False))
            if full:
                self.add_full_finetuning(name)

        self.add_task_from(name, path, tensors, build)
        self.metadata[name] = meta
        return name

    def add_task_from(self, name: str, where, tensors: dict, build) -> str:
        """Add task `name` with stored parameters `tensors` (read from `where`, for messages):
        `build()` adds its adapter, LoRA or head as their config says, then the stored key set must
        be exactly the task's trainable names, and every shape the model's, before any value is set.
        On any failure the half-added task is removed: the model is left as it was."""
        if name in self._trainable:
            raise WeightsError(f"{where}: this model already holds a task named {name!r}")
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
        self._put(tensors)
        return name

    def remove(self, name: str):
        """Forget task `name`: its adapter, head and their parameters (the backbone stays)."""
        for k in self._trainable.pop(name, set()):
            if k.startswith(("encoder.", "embeddings.")) and ".adapters." not in k:
                continue  # a backbone parameter (full fine-tuning): never removed
            self.params.pop(k, None)
        self.adapters.pop(name, None)
        self.loras.pop(name, None)
        self.full_finetuning.discard(name)
        self.heads.pop(name, None)
        self.metadata.pop(name, None)


def _renamed_layer_norms(a: dict, tensors: dict, n_layers: int) -> dict:
    """Files written before adapters had their own LayerNorm copies stored a Houlsby adapter's
    trained LayerNorms under the backbone's names: move them to the adapter's own."""
    if not a.get("train_layer_norms"):
        return a
    config = AdapterConfig(**{k: v for k, v in a.items() if k in AdapterConfig.__dataclass_fields__})
    for i in range(n_layers):
        for where in ("attention.output", "output"):
            for t in ("weight", "bias"):
                old = bert.layer_norm_prefix(i, where) + t
                if old in tensors:
                    tensors[bert.layer_norm_prefix(i, where, config) + t] = tensors.pop(old)
    return a


def load_model(path=None, dtype="float32", device=None, seed: int = 0, ops: str = "fast") -> Model:
    """Load a BERT checkpoint folder (config.json + model.safetensors [+ tokenizer.json]).
    `path=None` means the default checkpoint, downloaded into weights/ when missing.
    ops: "fast" (default) or "reference" (minadapt.nn, the plain maths; see ops.py)."""
    from .tokenizer import Tokenizer

    if path is None:
        from .io.hub import ensure_checkpoint

        path = ensure_checkpoint()
    path = Path(path)
    if not path.is_dir():
        raise WeightsError(f"{path}: no such checkpoint folder (run `minadapt download` to fetch "
                           "the default one into weights/)")
    cfg = BertConfig.from_json(path / "config.json")
    params = load_checkpoint(path / "model.safetensors", cfg, resolve_dtype(dtype))
    tok = Tokenizer(path) if (path / "tokenizer.json").is_file() else None
    backbone = {"name": path.name, "path": str(path / "model.safetensors")}
    return Model(cfg, params, device=device, backbone=backbone, tokenizer=tok, seed=seed, ops=ops)
