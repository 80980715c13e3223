"""Regenerate the reference numbers that minadapt's tests compare against.

Usage (needs the ``ref`` extra: torch, transformers, adapters; never imported by minadapt itself)::

    python tests/make_fixtures.py [--weights weights/all-MiniLM-L6-v2] \
                                  [--out tests/fixtures/reference.safetensors]

Everything runs on the CPU from the local checkpoint folder (no hub access). The script
writes ONE safetensors file holding:

``inputs.input_ids``, ``inputs.attention_mask``, ``inputs.token_type_ids`` (int64, (B, L))
    Six fixed sentences (see ``SENTENCES``), tokenised with the ``tokenizers`` library from
    ``tokenizer.json`` (``no_padding()``, ``enable_truncation(128)``), then right-padded to the
    batch maximum with id 0 ([PAD]). attention_mask is 1 on real tokens; token_type_ids are 0.
``bert.f64.last_hidden_state`` (float64, (B, L, 384))
    ``transformers.BertModel`` (eager attention, no pooler, eval mode) run in float64.
``bert.f32.last_hidden_state`` (float32, (B, L, 384))
    The same model, a separate float32 copy.
``adapter.param.<name>`` (float32) and ``adapter.grad.<name>`` (float64)
    AdapterHub ``BertAdapterModel`` + ``DoubleSeqBnConfig(reduction_factor=6)`` adapter "sst2" +
    ``add_classification_head("sst2", num_labels=2)`` + ``train_adapter("sst2")``. Every trainable
    parameter is overwritten (``torch.manual_seed(0)``, in ``named_parameters()`` order) with
    ``randn(shape, float32) * 0.05`` so that no gradient is trivially zero; the model is then
    converted to float64 (lossless), put in eval mode (dropout off) with grad enabled, and the
    mean cross-entropy of the head's logits against ``adapter.labels`` is back-propagated.
    ``<name>`` is the torch parameter name with the leading ``bert.`` removed; weights are in
    torch layout (out_features, in_features). The 52 names are::

        encoder.layer.{i}.attention.output.adapters.sst2.adapter_down.0.weight  (64, 384)
        encoder.layer.{i}.attention.output.adapters.sst2.adapter_down.0.bias    (64,)
        encoder.layer.{i}.attention.output.adapters.sst2.adapter_up.weight      (384, 64)
        encoder.layer.{i}.attention.output.adapters.sst2.adapter_up.bias        (384,)
        encoder.layer.{i}.output.adapters.sst2.adapter_down.0.weight|bias       (same shapes)
        encoder.layer.{i}.output.adapters.sst2.adapter_up.weight|bias
        heads.sst2.1.weight (384, 384), heads.sst2.1.bias (384,)
        heads.sst2.4.weight (2, 384),   heads.sst2.4.bias (2,)

    for i in 0..5. Nothing else is trainable (no LayerNorm, no embeddings, no pooler).
``adapter.logits`` (float64, (B, 2)), ``adapter.loss`` (float64, shape ()), ``adapter.labels`` (int64, (B,))
``adapter.last_hidden_state`` (float64, (B, L, 384))
    The adapter model's encoder output (before the head), to localise a mismatch.
metadata (strings)
    ``sentences`` (JSON), ``versions`` (JSON), ``model_sha256`` (of model.safetensors),
    ``adapter_config`` (JSON of the AdapterHub config dict), ``head_config`` (JSON),
    ``param_init`` (how the adapter/head parameters were drawn).

Why: minadapt's NumPy encoder must reproduce BertModel (f64 to ~1e-10, f32 to ~1e-4), and its
hand-written adapter forward/backward must reproduce AdapterHub's logits, loss and every gradient.

AdapterHub's Houlsby layout (adapters 1.3.0, transformers 4.57.6), as read from the installed source
and checked numerically by this script (``manual_forward`` below re-derives the logits from these
rules alone and must agree with AdapterHub to ~1e-12)::

    config  DoubleSeqBnConfig: mh_adapter=True, output_adapter=True, non_linearity="swish",
            original_ln_before=False, original_ln_after=True, residual_before_ln=True,
            adapter_residual_before_ln=False, ln_before=False, ln_after=False, scaling=1.0,
            dropout=0.0 (adapter-internal), is_parallel=False, use_gating=False, init_weights="bert"
            (adapters/configuration/adapter_config.py: BnConfig defaults ~l.224-257,
            DoubleSeqBnConfig l.320-335). reduction_factor=6 -> bottleneck int(384 // 6) = 64
            (adapters/methods/bottleneck.py l.107).

    adapter module (adapters/methods/modeling.py, class Adapter, l.35-239):
        adapter_down = Sequential(Linear(384, 64), act)     # "adapter_down.0", l.81-90
        adapter_up   = Linear(64, 384)                      # l.97
        act = transformers get_activation("swish") = torch.nn.SiLU, i.e. swish(x) = x * sigmoid(x)
              (beta = 1; transformers/activations.py ACT2CLS "swish": nn.SiLU)
        forward(x, residual): up = adapter_up(act(adapter_down(x))) * scaling(=1.0); dropout p=0;
              output = up + residual                        # l.210-239 (no adapter LayerNorm)

    where it sits, in BOTH BertSelfOutput (attention output, "attention.output.adapters") and
    BertOutput (FFN output, "output.adapters") of every layer
    (adapters/models/bert/modeling_bert.py l.265-278):
        h = dropout(dense(x))                               # the sub-block's own dense + dropout
        # bottleneck_layer_forward(h, input_tensor, LayerNorm), methods/bottleneck.py l.348-382;
        # active setup is Stack("sst2") (composition.py l.236-238 turns the name into a Stack),
        # so compose_stack calls pre_block -> Adapter.pre_forward (modeling.py l.157-208):
        # residual_before_ln=True and original_ln_before=False -> adapter residual = h itself.
        a = h + W_up @ swish(W_down @ h + b_down) + b_up    # adapter with its own skip around h
        out = LayerNorm(a + input_tensor)                   # post_forward, modeling.py l.241-261:
                                                            # the ORIGINAL residual + original LN
    where input_tensor is the sub-block input as in plain BERT (attention input for the attention
    block, the attention block's output for the FFN block). With W_up = 0, b_up = 0 the layer is
    exactly plain BERT (checked at the end of this script).

    So one encoder layer is:
        q,k,v = x Wq^T+bq, ...; 12 heads of 32; scores = q k^T / sqrt(32) + (1-mask)*finfo.min;
        ctx = softmax(scores) v
        h1 = ctx Wo^T + bo
        x1 = LN_attn( h1 + A_attn(h1) + x )                 # A(h) = up(swish(down(h)))
        f  = gelu_erf(x1 Wi^T + bi) Wo2^T + bo2             # hidden_act "gelu" = exact erf GELU
        x2 = LN_out ( f + A_out(f) + x1 )                   # LayerNorm eps 1e-12

    head (adapters/heads/base.py, PredictionHead.build l.81-109, ClassificationHead l.133-198):
        reads outputs[0][:, 0], the final-layer [CLS] vector, directly: use_pooler=False, the BERT
        pooler is NOT used (l.117-130; BertAdapterModel still builds/computes a pooler, frozen and
        ignored). Modules, in order: 0 Dropout(p), 1 Linear(384,384), 2 Tanh, 3 Dropout(p),
        4 Linear(384, 2); p = config.hidden_dropout_prob = 0.1 (classifier_dropout unset, l.68-79).
        logits = W4 tanh(W1 cls + b1) + b4; loss = CrossEntropyLoss() (mean over batch), l.170-172.

    Init ("bert", modeling.py l.123-125, l.263-274): every adapter Linear weight ~ N(0, 0.02),
    biases 0 -- the up-projection is NOT zero-initialised (Houlsby's near-identity only holds
    approximately). The head uses BertPreTrainedModel._init_weights (N(0, 0.02), bias 0).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import platform
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent

SENTENCES = [
    "Hello world.",
    "The movie was surprisingly good, and the acting felt honest.",
    "I would not recommend this restaurant to anyone.",
    "Crème brûlée à São Paulo — naïve café ☕",
    "Adapters add a few small bottleneck layers to a frozen transformer, so that only a "
    "tiny fraction of the parameters has to be trained for each new task.",
    "Okay.",
]
LABELS = [1, 0, 1, 1, 0, 1]
ADAPTER = "sst2"
REDUCTION_FACTOR = 6
PARAM_STD = 0.05
N_LAYERS = 6


def expected_trainable() -> dict[str, tuple[int, ...]]:
    out: dict[str, tuple[int, ...]] = {}
    for i in range(N_LAYERS):
        for loc in ("attention.output", "output"):
            p = f"encoder.layer.{i}.{loc}.adapters.{ADAPTER}."
            out[p + "adapter_down.0.weight"] = (64, 384)
            out[p + "adapter_down.0.bias"] = (64,)
            out[p + "adapter_up.weight"] = (384, 64)
            out[p + "adapter_up.bias"] = (384,)
    out[f"heads.{ADAPTER}.1.weight"] = (384, 384)
    out[f"heads.{ADAPTER}.1.bias"] = (384,)
    out[f"heads.{ADAPTER}.4.weight"] = (2, 384)
    out[f"heads.{ADAPTER}.4.bias"] = (2,)
    return out


def strip_bert(name: str) -> str:
    return name[len("bert."):] if name.startswith("bert.") else name


def tokenize(weights: Path):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(weights / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(128)
    encs = tok.encode_batch(SENTENCES)
    L = max(len(e.ids) for e in encs)
    B = len(encs)
    ids = np.zeros((B, L), dtype=np.int64)
    mask = np.zeros((B, L), dtype=np.int64)
    for b, e in enumerate(encs):
        n = len(e.ids)
        ids[b, :n] = e.ids
        mask[b, :n] = 1
    types = np.zeros((B, L), dtype=np.int64)
    for s, e in zip(SENTENCES, encs):
        print(f"  {len(e.ids):3d} tokens  {s[:50]!r} -> {e.tokens[:12]}{' ...' if len(e.tokens) > 12 else ''}")
    return ids, mask, types


def manual_forward(sd: dict, ids, mask, types, eps: float):
    """Independent float64 re-derivation of AdapterHub's logits from the layout in the docstring.

    ``sd`` maps names without the ``bert.`` prefix to float64 tensors.
    """
    import torch
    import torch.nn.functional as F

    def lin(x, p):
        return x @ sd[p + ".weight"].T + sd[p + ".bias"]

    def ln(x, p):
        return F.layer_norm(x, (x.shape[-1],), sd[p + ".weight"], sd[p + ".bias"], eps)

    def adapter(h, p):
        d = lin(h, p + ".adapter_down.0")
        return lin(d * torch.sigmoid(d), p + ".adapter_up")  # swish

    B, L = ids.shape
    pos = torch.arange(L)
    x = (sd["embeddings.word_embeddings.weight"][ids] + sd["embeddings.position_embeddings.weight"][pos][None]
         + sd["embeddings.token_type_embeddings.weight"][types])
    x = ln(x, "embeddings.LayerNorm")
    bias = (1.0 - mask.to(torch.float64))[:, None, None, :] * torch.finfo(torch.float64).min
    H, D = 12, 32
    for i in range(N_LAYERS):
        p = f"encoder.layer.{i}."
        q = lin(x, p + "attention.self.query").view(B, L, H, D).transpose(1, 2)
        k = lin(x, p + "attention.self.key").view(B, L, H, D).transpose(1, 2)
        v = lin(x, p + "attention.self.value").view(B, L, H, D).transpose(1, 2)
        s = q @ k.transpose(-1, -2) / D ** 0.5 + bias
        ctx = (torch.softmax(s, -1) @ v).transpose(1, 2).reshape(B, L, H * D)
        h1 = lin(ctx, p + "attention.output.dense")
        x1 = ln(h1 + adapter(h1, p + f"attention.output.adapters.{ADAPTER}") + x, p + "attention.output.LayerNorm")
        f = lin(F.gelu(lin(x1, p + "intermediate.dense")), p + "output.dense")
        x = ln(f + adapter(f, p + f"output.adapters.{ADAPTER}") + x1, p + "output.LayerNorm")
    cls = x[:, 0]
    logits = lin(torch.tanh(lin(cls, f"heads.{ADAPTER}.1")), f"heads.{ADAPTER}.4")
    return x, logits


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", type=Path, default=REPO / "weights" / "all-MiniLM-L6-v2")
    ap.add_argument("--out", type=Path, default=REPO / "tests" / "fixtures" / "reference.safetensors")
    args = ap.parse_args(argv)

    import safetensors
    import tokenizers
    import torch
    import torch.nn.functional as F
    import transformers
    import adapters
    from adapters import BertAdapterModel, DoubleSeqBnConfig
    from safetensors.numpy import save_file
    from transformers import BertModel

    torch.set_num_threads(2)
    transformers.logging.set_verbosity_error()
    logging.getLogger("adapters").setLevel(logging.ERROR)  # "adapters available but none activated"
    weights = args.weights
    if not (weights / "model.safetensors").is_file():
        print(f"no checkpoint at {weights}", file=sys.stderr)
        return 2

    out: dict[str, np.ndarray] = {}
    print("tokenising")
    ids_np, mask_np, types_np = tokenize(weights)
    out["inputs.input_ids"] = ids_np
    out["inputs.attention_mask"] = mask_np
    out["inputs.token_type_ids"] = types_np
    ids, mask, types = (torch.from_numpy(a) for a in (ids_np, mask_np, types_np))
    B, L = ids.shape
    print(f"batch {B} x {L}")

    # ---- plain BertModel, float64 and float32 -------------------------------------------------
    def load_bert(dtype):
        m = BertModel.from_pretrained(str(weights), add_pooling_layer=False, attn_implementation="eager",
                                      torch_dtype=torch.float32)
        return m.to(dtype).eval()

    with torch.no_grad():
        bert64 = load_bert(torch.float64)
        h64 = bert64(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        bert32 = load_bert(torch.float32)
        h32 = bert32(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
    assert h64.dtype == torch.float64 and h32.dtype == torch.float32
    out["bert.f64.last_hidden_state"] = h64.numpy()
    out["bert.f32.last_hidden_state"] = h32.numpy()
    real = mask.bool()
    print(f"BertModel f32 vs f64 max|diff| on real tokens: {(h32.double() - h64)[real].abs().max().item():.3e}")
    del bert32

    # ---- AdapterHub ---------------------------------------------------------------------------
    model, info = BertAdapterModel.from_pretrained(str(weights), attn_implementation="eager",
                                                   torch_dtype=torch.float32, output_loading_info=True)
    bad = {k: v for k, v in info.items() if v and k != "missing_keys"}
    missing = [k for k in info.get("missing_keys", []) if "pooler" not in k]
    assert not bad and not missing, f"checkpoint did not load cleanly: {info}"
    cfg = DoubleSeqBnConfig(reduction_factor=REDUCTION_FACTOR)
    assert cfg.non_linearity == "swish" and cfg.scaling == 1.0 and cfg.dropout == 0.0
    assert cfg.mh_adapter and cfg.output_adapter and cfg.residual_before_ln is True
    assert cfg.original_ln_after and not cfg.original_ln_before and not cfg.ln_before and not cfg.ln_after
    model.add_adapter(ADAPTER, config=cfg)
    model.add_classification_head(ADAPTER, num_labels=2)
    model.train_adapter(ADAPTER)
    head_cfg = dict(model.heads[ADAPTER].config)
    assert head_cfg["layers"] == 2 and head_cfg["activation_function"] == "tanh" and not head_cfg["use_pooler"]

    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    print(f"trainable parameters ({len(trainable)}):")
    for n, p in trainable:
        print(f"  {strip_bert(n):70s} {tuple(p.shape)}")
    got = {strip_bert(n): tuple(p.shape) for n, p in trainable}
    want = expected_trainable()
    assert got == want, f"trainable set differs: extra {set(got) - set(want)}, missing {set(want) - set(got)}"
    print(f"  total {sum(p.numel() for _, p in trainable)} values")

    torch.manual_seed(0)
    with torch.no_grad():
        for n, p in trainable:
            assert p.dtype == torch.float32
            p.copy_(torch.randn(p.shape, dtype=torch.float32) * PARAM_STD)
    for n, p in trainable:
        out[f"adapter.param.{strip_bert(n)}"] = p.detach().numpy().copy()

    model = model.to(torch.float64)
    model.eval()  # dropout off (head dropout 0.1, hidden/attention dropout 0.1)
    labels = torch.tensor(LABELS, dtype=torch.int64)
    assert len(labels) == B
    model.zero_grad(set_to_none=True)
    with torch.enable_grad():
        res = model(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=labels,
                    output_hidden_states=True)
        logits, loss = res.logits, res.loss
        ce = F.cross_entropy(logits, labels)
        assert logits.dtype == torch.float64 and logits.shape == (B, 2)
        print(f"loss {loss.item():.12f}  F.cross_entropy {ce.item():.12f}")
        assert torch.allclose(loss, ce, rtol=0, atol=1e-14), (loss, ce)
        loss.backward()
    last_hidden = res.hidden_states[-1].detach()

    for n, p in trainable:
        assert p.grad is not None, n
        g = p.grad.detach()
        assert g.dtype == torch.float64
        assert g.abs().max().item() > 0, f"zero gradient for {n}"
        out[f"adapter.grad.{strip_bert(n)}"] = g.numpy().copy()
        # the float64 params are exactly the float32 draws
        assert torch.equal(p.detach().float().double(), p.detach()), n
    out["adapter.logits"] = logits.detach().numpy().copy()
    out["adapter.loss"] = np.asarray(loss.item(), dtype=np.float64).reshape(())
    out["adapter.labels"] = labels.numpy().copy()
    out["adapter.last_hidden_state"] = last_hidden.numpy().copy()

    # ---- independent re-derivation of the layout described in the docstring --------------------
    sd = {strip_bert(k): v.detach() for k, v in model.state_dict().items()}
    with torch.no_grad():
        mh, ml = manual_forward(sd, ids, mask, types, model.config.layer_norm_eps)
    d_h = (mh - last_hidden)[real].abs().max().item()
    d_l = (ml - logits.detach()).abs().max().item()
    print(f"manual layout re-derivation vs AdapterHub: hidden max|diff| {d_h:.3e}, logits {d_l:.3e}")
    assert d_h < 1e-10 and d_l < 1e-10, "docstring layout does not reproduce AdapterHub"

    # ---- sanity: zero up-projections -> AdapterHub encoder == plain BertModel ------------------
    with torch.no_grad():
        for n, p in model.named_parameters():
            if ".adapter_up." in n:
                p.zero_()
        h0 = model.bert(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
    d0 = (h0 - h64)[real].abs().max().item()
    d0_all = (h0 - h64).abs().max().item()
    print(f"near-identity check (adapter_up zeroed) vs BertModel f64: max|diff| real tokens {d0:.3e}, "
          f"all positions {d0_all:.3e}")
    assert d0 < 1e-12, d0

    # ---- metadata + write ---------------------------------------------------------------------
    sha = hashlib.sha256((weights / "model.safetensors").read_bytes()).hexdigest()
    versions = {
        "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
        "adapters": adapters.__version__, "tokenizers": tokenizers.__version__,
        "safetensors": safetensors.__version__, "numpy": np.__version__,
    }
    meta = {
        "sentences": json.dumps(SENTENCES, ensure_ascii=False),
        "versions": json.dumps(versions),
        "model_sha256": sha,
        "adapter_config": json.dumps(cfg.to_dict(), default=str),
        "head_config": json.dumps(head_cfg, default=str),
        "adapter_name": ADAPTER,
        "param_init": f"torch.manual_seed(0); for trainable params in named_parameters() order: "
                      f"randn(shape, float32) * {PARAM_STD}",
        "generator": "tests/make_fixtures.py",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # (np.ascontiguousarray would turn the 0-d loss into shape (1,))
    out = {k: np.require(v, requirements="C") for k, v in out.items()}
    save_file(out, str(args.out), metadata=meta)
    size = args.out.stat().st_size
    print(f"wrote {args.out} ({len(out)} arrays, {size / 1e6:.2f} MB)")
    print(f"versions: {versions}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
