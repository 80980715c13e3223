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
from .hub import sha256_of
from .nn import adapter, loss as cross_entropy, mse
from .packed import pack
from .weights import check_finite, load_checkpoint, read_safetensors, save_tensors

ADAPTER_FORMAT = "minadapt-adapter/1"


@dataclass(frozen=True)
class AdapterConfig:
    name: str  # used in parameter names: ...adapters.{name}.adapter_down.0.weight
    bottleneck: int = 64  # m: width of the down-projection
    non_linearity: str = "swish"  # swish (AdapterHub's default), gelu or relu
    train_layer_norms: bool = False  # Houlsby also trains the layers' LayerNorms (its own copies)
    init_std: float = 1e-2  # std of W_down at init (W_up starts at 0: the identity)
    architecture: str = "houlsby"  # where adapters sit in a layer: bert.ADAPTER_SITES


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
        if names and not any(".attention.self." in n for n in names):
            self.params.update(pack(self.params, names)[1])

    def _check_new(self, name, kind):
        if not isinstance(name, str) or not name or "." in name:
            raise ConfigError(f"{kind} name {name!r}: expected a non-empty name without dots "
                              "(it becomes part of parameter names)")

    def add_adapter(self, name: str, bottleneck: int = 64, non_linearity: str = "swish",
                    seed: int = 0, train_layer_norms: bool = False, init_std: float = 1e-2,
                    architecture: str = "houlsby"):
        """Adapters for task `name` at the architecture's sites in every layer (two per layer for
        Houlsby), initialised to the identity; they become `name`'s trainable parameters."""
        self._check_new(name, "adapter")
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
                               architecture)
        rng = np.random.default_rng(seed)
        trainable = self._trainable.setdefault(name, set())
        for i in range(self.cfg.num_hidden_layers):
            for where in bert.ADAPTER_SITES[architecture]:
                prefix = bert.adapter_prefix(i, where, name)
                init = adapter.init_params(self.cfg.hidden_size, bottleneck, rng, self.dtype, init_std)
                self._put({prefix + k: v for k, v in init.items()})
                trainable.update(prefix + k for k in init)
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

    def names(self) -> list[str]:
        """Every task this model holds (an adapter, a head, or both under one name)."""
        return sorted(set(self.adapters) | set(self.heads))

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
        logits, head_cache = heads.forward(h[:, 0], self.params, name, head.dropout, run.rng,
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
        loss_op = mse if self.heads[name].regression else cross_entropy
        loss, loss_cache = loss_op.forward(logits, labels)
        # backward: the forward read bottom-up
        (dlogits,) = loss_op.backward(1.0, loss_cache)
        dcls, grads = heads.backward(dlogits, head_cache, name, run.ops.dropout)
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

    def save_adapter(self, path, adapter: str | None = None, extra_metadata: dict | None = None):
        """Task `adapter`'s adapter and head as one safetensors file, their configs and the
        backbone's id in its metadata."""
        name = self.resolve(adapter)
        a, h = self.adapters.get(name), self.heads.get(name)
        meta = {
            "format": ADAPTER_FORMAT,
            "adapter": json.dumps(asdict(a) if a else None),
            "head": json.dumps(asdict(h) if h else None),
            "backbone": json.dumps(self.backbone_id()),
        }
        for k, v in (extra_metadata or {}).items():
            meta[k] = v if isinstance(v, str) else json.dumps(v)
        save_tensors(path, self.adapter_state(name), meta)
        return Path(path)

    def load_adapter(self, path, check_backbone: bool = True) -> str:
        """Add the adapter and head stored in `path` (made by save_adapter) beside whatever this
        model holds. Returns the task's name."""
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
        name = (a or h or {}).get("name")
        if name is None:
            raise WeightsError(f"{path}: holds neither an adapter nor a head")
        if name in self._trainable:
            raise WeightsError(f"{path}: this model already holds a task named {name!r}")
        if a:
            a = _renamed_layer_norms(a, tensors, self.cfg.num_hidden_layers)
        try:
            if a:
                self.add_adapter(name, a["bottleneck"], a["non_linearity"],
                                 train_layer_norms=a["train_layer_norms"], init_std=a["init_std"],
                                 architecture=a.get("architecture", "houlsby"))
            if h:
                self.add_classification_head(name, h["num_labels"], dropout=h["dropout"],
                                             labels=h.get("labels"), regression=h.get("regression", False))
            expected = self._trainable[name]
            if set(tensors) != expected:
                diff = sorted(set(tensors) ^ expected)
                raise WeightsError(f"{path}: key set does not match its own config: {diff[:3]} ...")
            for k, v in tensors.items():
                if tuple(v.shape) != tuple(self.params[k].shape):
                    raise WeightsError(f"{path}: key {k!r} has shape {tuple(v.shape)}, expected "
                                       f"{tuple(self.params[k].shape)}")
        except Exception:
            self.remove(name)
            raise
        self._put(tensors)
        self.metadata[name] = meta
        return name

    def remove(self, name: str):
        """Forget task `name`: its adapter, head and their parameters (the backbone stays)."""
        for k in self._trainable.pop(name, set()):
            if k.startswith(("encoder.", "embeddings.")) and ".adapters." not in k:
                continue  # a backbone parameter (full fine-tuning): never removed
            self.params.pop(k, None)
        self.adapters.pop(name, None)
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
        from .hub import ensure_checkpoint

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
