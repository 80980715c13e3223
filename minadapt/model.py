"""A pretrained BERT with (optionally) one set of adapters and a classification head.

    model = minadapt.load_model("weights/all-MiniLM-L6-v2", dtype="float32", device="cpu")
    h = model.encode(input_ids, attention_mask)              # (B, T, H) last hidden state
    model.add_adapter("sst2", bottleneck=64)                 # two Houlsby adapters per layer
    model.add_classification_head("sst2", num_labels=2)
    loss, logits, grads = model.loss_and_grads(ids, mask, types, labels, train=True)

`model.params` is one flat dict, HuggingFace name -> array, backbone, adapters and head together.
`model.trainable` is the set of names that get gradients; everything else is frozen and never
changes. The backbone's Q, K and V weights are views into one fused (3H, H) matrix per layer, so
the three projections run as one matmul.
"""
from __future__ import annotations

import json
import weakref
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import bert, heads, parallel
from .backend import pack, resolve_device, resolve_dtype, to_device, to_numpy, unpack, xp_for
from .config import BertConfig
from .errors import WeightsError
from .nn import adapter, loss as cross_entropy
from .hub import sha256_of
from .weights import check_finite, load_checkpoint, read_safetensors, save_tensors

ADAPTER_FORMAT = "minadapt-adapter/1"


@dataclass(frozen=True)
class AdapterConfig:
    name: str  # used in parameter names: ...adapters.{name}.adapter_down.0.weight
    bottleneck: int = 64  # m: width of the down-projection
    non_linearity: str = "swish"  # swish (AdapterHub's default), gelu or relu
    train_layer_norms: bool = False  # Houlsby also trains the layers' LayerNorms; AdapterHub doesn't
    init_std: float = 1e-2  # std of W_down at init (W_up starts at 0: the identity)


@dataclass(frozen=True)
class HeadConfig:
    name: str
    num_labels: int = 2
    dropout: float = 0.1


class Model:
    def __init__(self, cfg: BertConfig, params: dict, device="cpu", backbone: dict | None = None,
                 tokenizer=None, seed: int = 0):
        self.cfg = cfg
        self.device = resolve_device(device)
        self.xp = xp_for(self.device)
        self.dtype = next(iter(params.values())).dtype
        self.backbone = dict(backbone or {})  # name, path, sha256 (filled lazily)
        self.tokenizer = tokenizer
        self.params = {k: self._home(to_device(v, self.device)) for k, v in params.items()}
        self.qkv = [self._fuse_qkv(i) for i in range(cfg.num_hidden_layers)]
        self.adapter: AdapterConfig | None = None
        self.head: HeadConfig | None = None
        self.trainable: set[str] = set()
        self.rng = self._new_rng(seed)
        self._workers = None  # (state it was forked from, parallel.Workers): made on first use
        self._transposed = {}  # {name: (W, contiguous W^T)} of frozen linears, see _run

    def _home(self, a):
        """Where a parameter lives: on the CPU, shared memory, so that the worker processes that run
        shards of a batch (parallel.py) see every change the optimiser makes; else the device."""
        return parallel.shared_copy(a) if self.xp is np else a

    # --- building -------------------------------------------------------------------------------
    def _fuse_qkv(self, i):
        """Concatenate Q, K, V into one (3H, H) matrix and make the three dict entries views of it."""
        p = f"encoder.layer.{i}.attention.self."
        names = ("query", "key", "value")
        w = self._home(self.xp.concatenate([self.params[p + n + ".weight"] for n in names]))
        b = self._home(self.xp.concatenate([self.params[p + n + ".bias"] for n in names]))
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
        of it (the fused Q|K|V matrix, the packed trainable vector) see the new values."""
        for k, v in tensors.items():
            v = to_device(np.asarray(v, dtype=self.dtype), self.device)
            if k in self.params and self.params[k].shape == v.shape:
                self.params[k][...] = v
            else:
                self.params[k] = self._home(v)

    def _pack_trainable(self):
        """Lay the trainable parameters end to end in one vector; params[name] become views of it.

        AdamW and clip_grad_norm see that and update all of them with whole-vector operations
        (backend.pack explains why that matters on a GPU). Q, K and V already are views of the
        fused Q|K|V matrix, so a model that trains them is left unpacked (and still correct)."""
        names = sorted(self.trainable)
        if names and not any(".attention.self." in n for n in names):
            size = sum(self.params[n].size for n in names)
            out = parallel.shared_empty(size, self.dtype) if self.xp is np else None
            _, views = pack(self.params, names, out=out)
            self.params.update(views)

    def add_adapter(self, name: str, bottleneck: int = 64, non_linearity: str = "swish",
                    seed: int = 0, train_layer_norms: bool = False, init_std: float = 1e-2):
        """Two Houlsby adapters per layer, initialised to the identity; they become trainable."""
        if non_linearity not in adapter.NON_LINEARITIES:
            raise ValueError(f"non_linearity {non_linearity!r}: expected one of "
                             f"{', '.join(adapter.NON_LINEARITIES)}")
        if self.adapter is not None:
            raise ValueError(f"this model already has adapter {self.adapter.name!r}")
        self.adapter = AdapterConfig(name, bottleneck, non_linearity, train_layer_norms, init_std)
        rng = np.random.default_rng(seed)
        for i in range(self.cfg.num_hidden_layers):
            for where in ("attention.output", "output"):
                prefix = bert.adapter_prefix(i, where, name)
                init = adapter.init_params(self.cfg.hidden_size, bottleneck, rng, self.dtype, init_std)
                self._put({prefix + k: v for k, v in init.items()})
                self.trainable.update(prefix + k for k in init)
                if train_layer_norms:
                    ln = f"encoder.layer.{i}.{where}.LayerNorm."
                    self.trainable.update((ln + "weight", ln + "bias"))
        self._pack_trainable()
        return self

    def add_classification_head(self, name: str, num_labels: int = 2, seed: int = 0,
                                dropout: float | None = None):
        """AdapterHub's default head on [CLS] (see heads.py); its parameters become trainable."""
        if dropout is None:
            dropout = self.cfg.hidden_dropout_prob
        self.head = HeadConfig(name, num_labels, dropout)
        init = heads.init_params(name, self.cfg.hidden_size, num_labels,
                                 np.random.default_rng(seed + 1), self.dtype)
        self._put(init)
        self.trainable.update(init)
        self._pack_trainable()
        return self

    @property
    def frozen(self) -> list[str]:
        return [k for k in self.params if k not in self.trainable]

    # --- running --------------------------------------------------------------------------------
    def _run(self, train, rng=None, grad=True):
        return bert.Run(train=train, rng=rng if rng is not None else self.rng, adapter=self.adapter,
                        trainable=frozenset(self.trainable), transposed=self._frozen_transposed(),
                        grad=grad)

    def _frozen_transposed(self) -> dict:
        """{name: contiguous W^T} for the encoder's frozen linear weights ("qkv.{i}" for the fused
        Q|K|V), for the forward's x W^T (nn/linear.py says why). On NumPy only (cuBLAS reads a
        transposed operand at no cost), 42 MB more for all-MiniLM-L6-v2. A copy is made when first
        needed and made again when the weight is replaced by another array or has trained: a frozen
        weight is a constant, so it is not watched for changes made in place."""
        if self.xp is not np:
            return {}
        weights = {}
        for i in range(self.cfg.num_hidden_layers):
            p = f"encoder.layer.{i}."
            q = p + "attention.self.query.weight"
            weights[f"qkv.{i}"] = (self.qkv[i][0], q in self.trainable)
            for name in ("attention.output.dense.weight", "intermediate.dense.weight",
                         "output.dense.weight"):
                weights[p + name] = (self.params[p + name], p + name in self.trainable)
        out = {}
        for name, (w, trains) in weights.items():
            if trains:  # its copy would go stale with the first update: forget it
                self._transposed.pop(name, None)
                continue
            if name not in self._transposed or self._transposed[name][0] is not w:
                self._transposed[name] = (w, np.ascontiguousarray(w.T))
            out[name] = self._transposed[name][1]
        return out

    def _inputs(self, *arrays):
        """Host arrays (or lists) moved to this model's device; None and device arrays unchanged."""
        out = []
        for a in arrays:
            if isinstance(a, (np.ndarray, list)):
                a = to_device(np.asarray(a), self.device)
            out.append(a)
        return out

    def _sharded(self, method, rng, batch, *extra, slots=False):
        """self.method(*shard of each batch array, weight, rng, *extra) for every shard of the batch,
        all at once on the CPU's cores (parallel.py). Returns (results, one per shard in batch order;
        slot vectors). weight = the shard's share of the batch, B_s / B; None arrays stay None. rng:
        the generator the shards' dropout is drawn from, or None where nothing is random
        (evaluation), so that inference never moves it. slots=True: each shard also gets slot=, a
        vector of the trainable parameters' size to write its gradients into."""
        B = batch[0].shape[0]
        parts = parallel.shards(B, self.xp)
        rngs = parallel.child_rngs(rng, len(parts)) if rng is not None else [None] * len(parts)
        calls = [(*(None if a is None else a[s] for a in batch), (s.stop - s.start) / B, r, *extra)
                 for s, r in zip(parts, rngs)]
        size = sum(self.params[k].size for k in self.trainable) if slots else 0
        if len(parts) == 1:  # the whole batch, here
            kwargs = {"slot": self.xp.empty(size, self.dtype)} if slots else {}
            return [getattr(self, method)(*calls[0], **kwargs)], kwargs.get("slot")
        workers = self._worker_processes(len(parts), size)
        return workers.map(self, method, calls, slots), workers.slots

    def _worker_processes(self, n, slot_size) -> parallel.Workers:
        """The worker processes for n shards, forked anew whenever the model has changed in a way
        shared memory does not carry over: a parameter replaced or added, the trainable set, the
        adapter or head. (Changes inside the parameters' own memory need nothing.)"""
        for k, v in self.params.items():
            if not parallel.is_shared(v):  # put there from outside: copy it where workers see it
                self.params[k] = parallel.shared_copy(v)
        state = (self.cfg, self.dtype, self.adapter, self.head, frozenset(self.trainable),
                 tuple(self.params), tuple(map(id, self.params.values())),
                 tuple(id(w) for w, _ in self.qkv), n, slot_size)
        if self._workers is None or self._workers[0] != state or not self._workers[1].alive:
            if self._workers is not None:
                self._workers[2].detach()
                self._workers[1].close()
            self._frozen_transposed()  # made before the fork, the workers inherit them
            workers = parallel.Workers(self, n, slot_size, self.dtype)
            self._workers = (state, workers, weakref.finalize(self, workers.close))
        return self._workers[1]

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the shard workers this model has forked (parallel.py); [] before the
        first sharded call, with one core, or on a GPU. `minadapt bench` adds their memory to
        the calling process's."""
        return self._workers[1].pids if self._workers is not None else []

    def _cat(self, arrays):
        return arrays[0] if len(arrays) == 1 else self.xp.concatenate(arrays)

    def encode(self, input_ids, attention_mask, token_type_ids=None):
        """Last hidden state (B, T, H) of every token, in evaluation mode (no dropout).
        Includes the adapters when one is added (they are the identity at init)."""
        batch = self._inputs(input_ids, attention_mask, token_type_ids)
        return self._cat(self._sharded("_shard_encode", None, batch)[0])

    def _shard_encode(self, ids, mask, types, weight, rng):
        return bert.encoder_forward(self.params, self.qkv, self.cfg, ids, mask, types,
                                    self._run(False, rng, grad=False))[0]

    def logits(self, input_ids, attention_mask, token_type_ids=None):
        """Class scores (B, C) in evaluation mode; only [CLS] is computed in the last layer."""
        batch = self._inputs(input_ids, attention_mask, token_type_ids)
        return self._cat(self._sharded("_shard_logits", None, batch)[0])

    def _shard_logits(self, ids, mask, types, weight, rng):
        return self._forward(ids, mask, types, self._run(False, rng, grad=False))[0]

    def _forward(self, input_ids, attention_mask, token_type_ids, run):
        if self.head is None:
            raise ValueError("no classification head: call add_classification_head first")
        h, enc_caches = bert.encoder_forward(self.params, self.qkv, self.cfg, input_ids,
                                             attention_mask, token_type_ids, run, cls_only=True)
        logits, head_cache = heads.forward(h[:, 0], self.params, self.head.name, self.head.dropout,
                                           run.rng, run.train)
        return logits, (enc_caches, head_cache, h.shape)

    def lowest_trainable_layer(self) -> int | None:
        """The lowest layer holding a trainable parameter: backward stops there.
        -1: the embeddings train too; None: no encoder parameter trains (a linear probe)."""
        if any(k.startswith("embeddings.") for k in self.trainable):
            return -1
        layers = [int(k.split(".")[2]) for k in self.trainable if k.startswith("encoder.layer.")]
        return min(layers) if layers else None

    def loss_and_grads(self, input_ids, attention_mask, token_type_ids, labels, train=True, rng=None):
        """Forward, mean cross-entropy, backward. Returns (loss as a 0-d array, logits (B, C),
        grads: {name: array} for exactly the trainable names).

        On a CPU with several cores the batch runs as shards, one per core (parallel.py): each
        shard's loss is weighted by its share of the batch, so the loss and gradients are the
        whole batch's, and the shards' gradient vectors are summed."""
        batch = self._inputs(input_ids, attention_mask, token_type_ids, labels)
        rng = (rng if rng is not None else self.rng) if train else None  # evaluation draws nothing
        results, slots = self._sharded("_shard_loss_and_grads", rng, batch, train, slots=True)
        loss = results[0][0]
        for r in results[1:]:
            loss = loss + r[0]
        # the shards' gradient vectors add up (a new array: the slots are overwritten next step)
        vector = slots if slots.ndim == 1 else slots.sum(axis=0)
        names = sorted(self.trainable)  # the layout _shard_loss_and_grads packs them in
        grads = unpack(vector, {k: self.params[k].shape for k in names})
        return loss, self._cat([r[1] for r in results]), grads

    def _shard_loss_and_grads(self, input_ids, attention_mask, token_type_ids, labels, weight, rng,
                              train, slot):
        """loss_and_grads of one shard, its loss (and so its gradients) scaled by `weight`.
        Writes the gradients end to end into the vector `slot` (sorted by name); returns
        (weight * loss, logits)."""
        run = self._run(train, rng)
        logits, (enc_caches, head_cache, h_shape) = self._forward(input_ids, attention_mask,
                                                                  token_type_ids, run)
        loss, loss_cache = cross_entropy.forward(logits, labels)
        # backward: the forward read bottom-up; d(weight * loss) / dloss = weight
        (dlogits,) = cross_entropy.backward(weight, loss_cache)
        dcls, grads = heads.backward(dlogits, head_cache, self.head.name)
        lowest = self.lowest_trainable_layer()
        if lowest is not None:
            dh = self.xp.zeros(h_shape, dcls.dtype)  # (B, 1, H): only [CLS] reaches the head
            dh[:, 0] = dcls
            _, enc_grads = bert.encoder_backward(dh, enc_caches, run, lowest)
            grads.update(enc_grads)
        assert set(grads) == self.trainable, set(grads) ^ self.trainable
        if grads:  # one vector, laid out like the packed parameters (see _pack_trainable)
            pack(grads, sorted(grads), out=slot)
        return loss * weight, logits

    # --- adapter files --------------------------------------------------------------------------
    def backbone_id(self) -> dict:
        """Name and sha256 of the checkpoint file: an adapter file records them, and loading checks."""
        if "sha256" not in self.backbone and self.backbone.get("path"):
            self.backbone["sha256"] = sha256_of(self.backbone["path"])
        return {"name": self.backbone.get("name"), "sha256": self.backbone.get("sha256"),
                "hidden_size": self.cfg.hidden_size, "num_hidden_layers": self.cfg.num_hidden_layers}

    def adapter_state(self) -> dict[str, np.ndarray]:
        """The trainable parameters as NumPy arrays (what an adapter file holds)."""
        return {k: to_numpy(self.params[k]) for k in sorted(self.trainable)}

    def save_adapter(self, path, extra_metadata: dict | None = None):
        """Adapter + head as one safetensors file, configs and backbone id in its metadata."""
        meta = {
            "format": ADAPTER_FORMAT,
            "adapter": json.dumps(asdict(self.adapter) if self.adapter else None),
            "head": json.dumps(asdict(self.head) if self.head else None),
            "backbone": json.dumps(self.backbone_id()),
        }
        for k, v in (extra_metadata or {}).items():
            meta[k] = v if isinstance(v, str) else json.dumps(v)
        save_tensors(path, self.adapter_state(), meta)
        return Path(path)

    def load_adapter(self, path, check_backbone: bool = True):
        """Add the adapter and head stored in `path` (made by save_adapter) to this model."""
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
        if a:
            self.add_adapter(a["name"], a["bottleneck"], a["non_linearity"],
                             train_layer_norms=a["train_layer_norms"], init_std=a["init_std"])
        if h:
            self.add_classification_head(h["name"], h["num_labels"], dropout=h["dropout"])
        expected = self.trainable | {k for k in tensors if "LayerNorm" in k}
        if set(tensors) != expected:
            diff = sorted(set(tensors) ^ expected)
            raise WeightsError(f"{path}: key set does not match its own config: {diff[:3]} ...")
        for k, v in tensors.items():
            if tuple(v.shape) != tuple(self.params[k].shape):
                raise WeightsError(f"{path}: key {k!r} has shape {tuple(v.shape)}, expected "
                                   f"{tuple(self.params[k].shape)}")
        self._put(tensors)
        return meta


def load_model(path=None, dtype="float32", device=None, seed: int = 0) -> Model:
    """Load a BERT checkpoint folder (config.json + model.safetensors [+ tokenizer.json]).
    `path=None` means the default checkpoint, downloaded into weights/ when missing."""
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
    return Model(cfg, params, device=device, backbone=backbone, tokenizer=tok, seed=seed)
