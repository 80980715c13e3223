"""Reference numbers for the other adaptation methods: AdapterHub's Pfeiffer adapter, PEFT's LoRA,
and adapter directories that AdapterHub itself trained and saved.

Usage (needs torch, transformers, adapters, peft; never imported by minadapt itself)::

    python tests/make_method_fixtures.py [--weights weights/all-MiniLM-L6-v2]

Writes ``tests/fixtures/methods.safetensors`` and two directories, all from three short sentences
(``SENTENCES``) tokenised as tests/make_fixtures.py does:

``inputs.*`` (int64 (B, L)), ``labels`` (int64 (B,))
``pfeiffer.param.<name>`` (float32), ``pfeiffer.grad.<name>`` (float64), ``pfeiffer.logits``,
``pfeiffer.loss``, ``pfeiffer.last_hidden_state`` (float64)
    ``BertAdapterModel`` + ``SeqBnConfig()`` (reduction factor 16 -> bottleneck 24, relu,
    original_ln_before=True, residual_before_ln=True, output adapter only) adapter "pf" + the
    default classification head; every trainable parameter overwritten (``torch.manual_seed(0)``,
    ``named_parameters()`` order) with ``randn * 0.05``; float64, eval mode, mean cross-entropy.
    Names without the leading ``bert.``.
``lora.param.<name>``, ``lora.grad.<name>``, ``lora.logits``, ``lora.loss``, ``lora.last_hidden_state``
    PEFT ``get_peft_model(BertModel, LoraConfig(target_modules=["query", "value"], r=4,
    lora_alpha=8, lora_dropout=0.0))``, lora_A and lora_B overwritten (``torch.manual_seed(1)``) with
    ``randn * 0.05``, float64, eval. Names are minadapt's (PEFT's in-memory names for adapter
    "lora": ``encoder.layer.{i}.attention.self.query.lora_A.lora.weight``). PEFT has no head for a
    bare BertModel, so the head is AdapterHub's shape written out in torch (``heads.lora.1``,
    ``heads.lora.4``, randn * 0.05), on the last hidden state's [CLS] row.
``adapterhub_houlsby/``, ``adapterhub_pfeiffer/`` (directories beside the file)
    ``DoubleSeqBnConfig(reduction_factor=64)`` (bottleneck 6) as "hb" and ``SeqBnConfig(
    reduction_factor=32)`` (bottleneck 12) as "pf", each with a 2-label head, trained 3 AdamW steps
    (lr 1e-2, dropout on, ``torch.manual_seed(2)``) by AdapterHub in float32 and saved with
    ``save_adapter(dir, name, use_safetensors=True)``; ``ah_houlsby.logits``/``ah_pfeiffer.logits``
    (float32) are that model's eval logits on the inputs.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SENTENCES = ["Hello world.", "The movie was surprisingly good.", "I would not recommend it."]
LABELS = [1, 1, 0]
STD = 0.05


def tokenize(weights: Path):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(weights / "tokenizer.json"))
    tok.no_padding()
    encs = tok.encode_batch(SENTENCES)
    L = max(len(e.ids) for e in encs)
    ids = np.zeros((len(encs), L), np.int64)
    mask = np.zeros_like(ids)
    for b, e in enumerate(encs):
        ids[b, :len(e.ids)], mask[b, :len(e.ids)] = e.ids, 1
    return ids, mask, np.zeros_like(ids)


def strip_bert(name):
    return name[len("bert."):] if name.startswith("bert.") else name


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", type=Path, default=REPO / "weights" / "all-MiniLM-L6-v2")
    ap.add_argument("--out", type=Path, default=REPO / "tests" / "fixtures")
    args = ap.parse_args(argv)

    import torch
    import torch.nn.functional as F
    import transformers
    from adapters import BertAdapterModel, DoubleSeqBnConfig, SeqBnConfig
    from peft import LoraConfig, get_peft_model
    from safetensors.numpy import save_file
    from transformers import BertModel

    torch.set_num_threads(4)
    transformers.logging.set_verbosity_error()
    logging.getLogger("adapters").setLevel(logging.ERROR)
    w = str(args.weights)
    out = {}
    ids_np, mask_np, types_np = tokenize(args.weights)
    out.update({"inputs.input_ids": ids_np, "inputs.attention_mask": mask_np,
                "inputs.token_type_ids": types_np, "labels": np.array(LABELS, np.int64)})
    ids, mask, types = (torch.from_numpy(a) for a in (ids_np, mask_np, types_np))
    labels = torch.tensor(LABELS)

    # ---- Pfeiffer (SeqBnConfig), float64 ------------------------------------------------------
    model = BertAdapterModel.from_pretrained(w, attn_implementation="eager")
    cfg = SeqBnConfig()
    assert cfg.original_ln_before and cfg.original_ln_after and cfg.residual_before_ln is True
    assert not cfg.mh_adapter and cfg.output_adapter and cfg.non_linearity == "relu"
    model.add_adapter("pf", config=cfg)
    model.add_classification_head("pf", num_labels=2)
    model.train_adapter("pf")
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    torch.manual_seed(0)
    with torch.no_grad():
        for n, p in trainable:
            p.copy_(torch.randn(p.shape) * STD)
            out[f"pfeiffer.param.{strip_bert(n)}"] = p.numpy().copy()
    model = model.to(torch.float64).eval()
    res = model(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=labels,
                output_hidden_states=True)
    res.loss.backward()
    for n, p in trainable:
        out[f"pfeiffer.grad.{strip_bert(n)}"] = p.grad.numpy().copy()
    out["pfeiffer.logits"] = res.logits.detach().numpy().copy()
    out["pfeiffer.loss"] = np.asarray(res.loss.item(), np.float64).reshape(())
    out["pfeiffer.last_hidden_state"] = res.hidden_states[-1].detach().numpy().copy()
    print("pfeiffer: bottleneck", out["pfeiffer.param.encoder.layer.0.output.adapters.pf.adapter_down.0.weight"].shape,
          "loss", res.loss.item())

    # ---- LoRA (PEFT), float64 ------------------------------------------------------------------
    bert = BertModel.from_pretrained(w, add_pooling_layer=False, attn_implementation="eager")
    pm = get_peft_model(bert, LoraConfig(target_modules=["query", "value"], r=4, lora_alpha=8,
                                         lora_dropout=0.0))
    lora_params = [(n, p) for n, p in pm.named_parameters() if p.requires_grad]
    assert all("lora_" in n for n, _ in lora_params) and len(lora_params) == 24
    torch.manual_seed(1)
    head = {k: torch.randn(s) * STD for k, s in (("heads.lora.1.weight", (384, 384)), ("heads.lora.1.bias", (384,)),
                                                   ("heads.lora.4.weight", (2, 384)), ("heads.lora.4.bias", (2,)))}
    with torch.no_grad():
        for n, p in lora_params:
            p.copy_(torch.randn(p.shape) * STD)
    pm = pm.to(torch.float64).eval()
    head = {k: v.double().requires_grad_() for k, v in head.items()}

    def ours(n):  # base_model.model.encoder....query.lora_A.default.weight -> minadapt's name
        return n[len("base_model.model."):].replace(".default.", ".lora.")

    h = pm(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
    z = torch.tanh(h[:, 0] @ head["heads.lora.1.weight"].T + head["heads.lora.1.bias"])
    logits = z @ head["heads.lora.4.weight"].T + head["heads.lora.4.bias"]
    loss = F.cross_entropy(logits, labels)
    loss.backward()
    for n, p in lora_params:
        out[f"lora.param.{ours(n)}"] = p.detach().numpy().copy()
        out[f"lora.grad.{ours(n)}"] = p.grad.numpy().copy()
    for k, v in head.items():
        out[f"lora.param.{k}"] = v.detach().numpy().copy()
        out[f"lora.grad.{k}"] = v.grad.numpy().copy()
    out["lora.logits"] = logits.detach().numpy().copy()
    out["lora.loss"] = np.asarray(loss.item(), np.float64).reshape(())
    out["lora.last_hidden_state"] = h.detach().numpy().copy()
    print("lora: loss", loss.item())

    # ---- directories AdapterHub trained and saved ----------------------------------------------
    for key, name, config in (("ah_houlsby", "hb", DoubleSeqBnConfig(reduction_factor=64)),
                              ("ah_pfeiffer", "pf", SeqBnConfig(reduction_factor=32))):
        torch.manual_seed(2)
        m = BertAdapterModel.from_pretrained(w, attn_implementation="eager")
        m.add_adapter(name, config=config)
        m.add_classification_head(name, num_labels=2)
        m.train_adapter(name)
        opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2)
        m.train()
        for _ in range(3):
            opt.zero_grad()
            m(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=labels).loss.backward()
            opt.step()
        m.eval()
        with torch.no_grad():
            out[f"{key}.logits"] = m(input_ids=ids, attention_mask=mask, token_type_ids=types).logits.numpy().copy()
        d = args.out / f"adapterhub_{key[3:]}"
        m.save_adapter(str(d), name, use_safetensors=True)
        print(key, "saved to", d, out[f"{key}.logits"])

    out = {k: np.require(v, requirements="C") for k, v in out.items()}
    save_file(out, str(args.out / "methods.safetensors"),
              metadata={"sentences": str(SENTENCES), "generator": "tests/make_method_fixtures.py",
                        "versions": f"torch {torch.__version__}, transformers {transformers.__version__}"})
    print("wrote", args.out / "methods.safetensors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
