"""Reference numbers for prompt tuning, prefix tuning and IA3, from PEFT (and AdapterHub's prefix
tuning), on the tiny random BERT of tests/tiny.py.

Usage (needs torch, transformers, peft, adapters; minadapt itself never imports them)::

    /work/refvenv/bin/python tests/make_peft_family_fixtures.py

Writes ``tests/fixtures/peft_family.safetensors``. The backbone is ``tests/tiny.tiny_model()``
(2 layers, hidden 8, 2 heads, float64, seed 0) loaded into ``transformers.BertForSequenceClassification``
(eager attention, eval mode, float64); the head is minadapt's ``heads.<name>.1`` = BERT's pooler
dense, ``heads.<name>.4`` = its classifier (the same maths: tanh(h[:, 0] W1^T + b1) W4^T + b4), and
the inputs are ``tests/tiny.tiny_batch()`` (3 sentences, some padded, token types 0 and 1).

For each case, ``get_peft_model(model, config)`` with ``task_type="SEQ_CLS"``, then every trainable
parameter overwritten (``torch.manual_seed``, ``named_parameters()`` order) so that no gradient is
trivially zero; ``modules_to_save=["pooler"]`` trains the pooler as well (PEFT's SEQ_CLS alone
trains the classifier; minadapt trains its whole head). Each model is also saved with
``save_pretrained`` as ``tests/fixtures/peft_<case>/``: PEFT's own directories, which minadapt
must read (and write the same way). Stored, in float64, with minadapt's names:

``<case>.param.<name>``, ``<case>.grad.<name>``, ``<case>.logits`` (B, 2), ``<case>.loss`` ()

cases:
``prompt``       PromptTuningConfig(num_virtual_tokens=3): ``prompt.embedding`` (3, 8)
``prefix``       PrefixTuningConfig(num_virtual_tokens=3, prefix_projection=False):
                 ``prefix.table`` (3, 2*2*8)
``prefix_mlp``   PrefixTuningConfig(num_virtual_tokens=3, prefix_projection=True,
                 encoder_hidden_size=5): ``prefix.embedding`` (3, 8), ``prefix.w1`` (5, 8),
                 ``prefix.b1``, ``prefix.w2`` (32, 5), ``prefix.b2``; and ``prefix_mlp.table``, the
                 merged table PEFT saves (``get_prompt_embedding_to_save``)
``ia3``          IA3Config() (BERT's defaults: target key, value, output.dense; feed-forward
                 output.dense), ia3_l = 1 + 0.3 randn: ``encoder.layer.{i}.ia3.<site>`` where site is
                 key, value, attention.output.dense, output.dense (the last two: input scales)
``adapterhub_prefix``  AdapterHub's ``PrefixTuningConfig(prefix_length=3, bottleneck_size=5)``
                 as "t" on ``BertAdapterModel`` with ``add_classification_head("t")``: the same MLP
                 (wte = the embedding, control_trans.0 / .2 = W1, b1 / W2, b2) and the same table
                 layout as PEFT's, but the prefix is joined inside attention, not handed over as a
                 key/value cache, so the sentence keeps positions 0..T-1. Names as PEFT's case
                 (``prefix.embedding``, ...; heads ``heads.t.*``), trainable parameters randn * 0.5.
                 AdapterHub's own directory for it is not read by minadapt: adapters 1.3.0's
                 ``save_adapter(dir, name, use_safetensors=True)`` refuses prefix tuning (its MLP's
                 tensors are shared between layers), and minadapt reads no pickles.
plus ``inputs.*``, ``labels``, ``<case>.names`` (the PEFT name of each minadapt name, in metadata).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from tiny import tiny_batch, tiny_model  # noqa: E402  (numpy only)

N_VIRTUAL = 3
WIDTH = 5  # the prefix MLP's hidden width
STD = 0.5


def main() -> int:
    import torch
    import transformers
    from peft import IA3Config, PeftModel, PrefixTuningConfig, PromptTuningConfig, get_peft_model
    from safetensors.numpy import save_file
    from transformers import BertConfig, BertForSequenceClassification

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(1)
    tm = tiny_model()
    c = tm.cfg
    hf_cfg = BertConfig(vocab_size=c.vocab_size, hidden_size=c.hidden_size,
                        num_hidden_layers=c.num_hidden_layers, num_attention_heads=c.num_attention_heads,
                        intermediate_size=c.intermediate_size,
                        max_position_embeddings=c.max_position_embeddings, layer_norm_eps=c.layer_norm_eps,
                        hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, num_labels=2,
                        attn_implementation="eager")
    ids_np, mask_np, types_np, labels_np = tiny_batch()
    ids, mask, types, labels = (torch.from_numpy(a) for a in (ids_np, mask_np, types_np, labels_np))
    out = {"inputs.input_ids": ids_np, "inputs.attention_mask": mask_np,
           "inputs.token_type_ids": types_np, "labels": labels_np.astype(np.int64)}
    names = {}
    rng = np.random.default_rng(7)
    head = {"pooler.dense.weight": rng.standard_normal((c.hidden_size, c.hidden_size)) * STD,
            "pooler.dense.bias": rng.standard_normal(c.hidden_size) * STD,
            "classifier.weight": rng.standard_normal((2, c.hidden_size)) * STD,
            "classifier.bias": rng.standard_normal(2) * STD}
    head_name = {"pooler.dense.weight": "heads.t.1.weight", "pooler.dense.bias": "heads.t.1.bias",
                 "classifier.weight": "heads.t.4.weight", "classifier.bias": "heads.t.4.bias"}
    for k, v in head.items():
        out[f"head.{head_name[k]}"] = v

    def backbone():
        m = BertForSequenceClassification(hf_cfg).double()
        state = {"bert." + k: torch.from_numpy(np.asarray(v)) for k, v in tm.params.items()}
        state.update({("bert." + k if k.startswith("pooler") else k): torch.from_numpy(v)
                      for k, v in head.items()})
        missing, unexpected = m.load_state_dict(state, strict=False)
        assert not unexpected and all("position_ids" in k or "token_type_ids" in k for k in missing), missing
        return m.eval()

    def ours(case, n):
        """PEFT's name -> minadapt's (heads as heads.t.*)."""
        n = n.replace("base_model.model.", "").replace("bert.", "", 1)
        if "pooler" in n:
            return head_name["pooler.dense." + n.rsplit(".", 1)[1]]
        if "classifier" in n:
            return head_name["classifier." + n.rsplit(".", 1)[1]]
        if n.startswith("prompt_encoder.default.embedding.weight"):
            return "prompt.embedding" if case == "prompt" else (
                "prefix.table" if case == "prefix" else "prefix.embedding")
        if n.startswith("prompt_encoder.default.transform."):
            idx, kind = n.split(".")[-2:]
            return {"0": "prefix.w1", "2": "prefix.w2"}[idx] if kind == "weight" else \
                {"0": "prefix.b1", "2": "prefix.b2"}[idx]
        if ".ia3_l.default" in n:  # encoder.layer.0.attention.self.key.ia3_l.default
            site = n.split(".ia3_l.")[0]
            i = site.split(".")[2]
            where = site.split(f"encoder.layer.{i}.")[1].replace("attention.self.", "")
            return f"encoder.layer.{i}.ia3.{where}"
        raise KeyError(n)

    def run(case, config, seed, fill):
        torch.manual_seed(seed)
        pm = get_peft_model(backbone(), config).double()
        trainable = [(n, p) for n, p in pm.named_parameters() if p.requires_grad]
        with torch.no_grad():
            for n, p in trainable:
                if "pooler" not in n and "classifier" not in n:
                    p.copy_(fill(p))
        pm.eval()
        res = pm(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=labels)
        res.loss.backward()
        names[case] = {}
        for n, p in trainable:
            o = ours(case, n)
            names[case][o] = n
            out[f"{case}.param.{o}"] = p.detach().numpy().copy()
            out[f"{case}.grad.{o}"] = p.grad.numpy().copy()
        out[f"{case}.logits"] = res.logits.detach().numpy().copy()
        out[f"{case}.loss"] = np.asarray(res.loss.item(), np.float64).reshape(())
        print(case, "loss", res.loss.item(), "trainable", sorted(names[case]))
        d = REPO / "tests" / "fixtures" / f"peft_{case}"
        pm.save_pretrained(str(d))
        (d / "README.md").unlink()  # PEFT's model-card template: nothing minadapt reads
        back = PeftModel.from_pretrained(backbone(), str(d)).double().eval()
        with torch.no_grad():
            again = back(input_ids=ids, attention_mask=mask, token_type_ids=types).logits.numpy()
        # PEFT reloading its own prompt-learning directory differs from the in-memory model by
        # ~5e-10 in the logits (IA3: 0), inside PEFT; the saved tensors are bit-identical
        gap = np.abs(again - out[f"{case}.logits"]).max()
        assert gap < 1e-8, (case, gap)
        print(case, "reloaded from its directory: logits within", gap)
        return pm

    randn = lambda p: torch.randn(p.shape, dtype=p.dtype) * STD  # noqa: E731
    run("prompt", PromptTuningConfig(task_type="SEQ_CLS", modules_to_save=["pooler"], num_virtual_tokens=N_VIRTUAL), 1, randn)
    run("prefix", PrefixTuningConfig(task_type="SEQ_CLS", modules_to_save=["pooler"], num_virtual_tokens=N_VIRTUAL,
                                     prefix_projection=False), 2, randn)
    pm = run("prefix_mlp", PrefixTuningConfig(task_type="SEQ_CLS", modules_to_save=["pooler"], num_virtual_tokens=N_VIRTUAL,
                                              prefix_projection=True, encoder_hidden_size=WIDTH), 3, randn)
    with torch.no_grad():
        out["prefix_mlp.table"] = pm.get_prompt_embedding_to_save("default").numpy().copy()
    ia3 = run("ia3", IA3Config(task_type="SEQ_CLS", modules_to_save=["pooler"]), 4,
              lambda p: 1 + 0.3 * torch.randn(p.shape, dtype=p.dtype))
    cfg_ia3 = ia3.peft_config["default"]
    meta_ia3 = {"target_modules": sorted(cfg_ia3.target_modules),
                "feedforward_modules": sorted(cfg_ia3.feedforward_modules)}
    print("ia3", meta_ia3)

    # ---- AdapterHub's prefix tuning ----------------------------------------------------------------
    import logging

    from adapters import BertAdapterModel
    from adapters import PrefixTuningConfig as AHPrefixConfig

    logging.getLogger("adapters").setLevel(logging.ERROR)
    torch.manual_seed(5)
    am = BertAdapterModel(hf_cfg).double()
    missing, unexpected = am.load_state_dict({"bert." + k: torch.from_numpy(np.asarray(v))
                                              for k, v in tm.params.items()}, strict=False)
    assert not unexpected
    am.add_adapter("t", config=AHPrefixConfig(prefix_length=N_VIRTUAL, bottleneck_size=WIDTH))
    am.add_classification_head("t", num_labels=2)
    am.train_adapter("t")
    am = am.double().eval()
    ah_names = {"wte.weight": "prefix.embedding", "control_trans.0.weight": "prefix.w1",
                "control_trans.0.bias": "prefix.b1", "control_trans.2.weight": "prefix.w2",
                "control_trans.2.bias": "prefix.b2"}
    trainable = [(n, p) for n, p in am.named_parameters() if p.requires_grad]
    names["adapterhub_prefix"] = {}
    with torch.no_grad():
        for n, p in trainable:
            p.copy_(torch.randn(p.shape, dtype=p.dtype) * STD)
    res = am(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=labels)
    res.loss.backward()
    for n, p in trainable:
        o = next((v for k, v in ah_names.items() if n.endswith(k)), None) or n.replace("bert.", "", 1)
        names["adapterhub_prefix"][o] = n
        out[f"adapterhub_prefix.param.{o}"] = p.detach().numpy().copy()
        out[f"adapterhub_prefix.grad.{o}"] = p.grad.numpy().copy()
    out["adapterhub_prefix.logits"] = res.logits.detach().numpy().copy()
    out["adapterhub_prefix.loss"] = np.asarray(res.loss.item(), np.float64).reshape(())
    print("adapterhub_prefix loss", res.loss.item(), names["adapterhub_prefix"])

    out = {k: np.require(v, requirements="C") for k, v in out.items()}
    import peft
    import adapters

    path = REPO / "tests" / "fixtures" / "peft_family.safetensors"
    save_file(out, str(path), metadata={
        "generator": "tests/make_peft_family_fixtures.py", "names": json.dumps(names),
        "ia3_config": json.dumps(meta_ia3),
        "versions": f"torch {torch.__version__}, transformers {transformers.__version__}, "
                    f"peft {peft.__version__}, adapters {adapters.__version__}"})
    print("wrote", path, sum(v.nbytes for v in out.values()), "bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
