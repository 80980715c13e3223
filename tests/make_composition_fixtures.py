"""Reference numbers for composed adapters: AdapterHub's Fuse, Stack, Parallel, Average and
BatchSplit blocks and its `average_adapter`, on a small random BERT, in float64.

Usage (needs torch, transformers, adapters; never imported by minadapt itself)::

    /work/refvenv/bin/python tests/make_composition_fixtures.py

Writes ``tests/fixtures/composition.safetensors``:

``backbone.<name>``  a random 2-layer BERT (``CONFIG``; weights randn * 0.5, LayerNorm gains
    1 + 0.1 randn, ``numpy.random.default_rng(0)``), HuggingFace names.
``inputs.*``, ``labels``  (B = 3, T = 6) ids with some rows padded, as tests/tiny.py makes them.
``adapter.<name>``  three Houlsby adapters "a", "b", "c" (``DoubleSeqBnConfig(reduction_factor=4)``:
    bottleneck 4, swish), every parameter randn * 0.3 (``torch.manual_seed(0)``, in
    ``named_parameters()`` order), and heads "a", "b", "c", "f" (AdapterHub's default 2-layer
    classification head, 2 labels; randn * 0.3). Names without the leading ``bert.``.
``fusion.<name>``  ``Fuse("a", "b")``'s layers (the default "dynamic" config, every parameter
    randn * 0.3 so that the attention is not near uniform), names as AdapterHub's.
For each setup S in fuse, stack, parallel, average, batchsplit: ``S.logits`` (one head), or
    ``S.logits.<head>`` (Parallel: one per head; BatchSplit: each head's rows), ``S.loss``,
    ``S.grad.<name>`` of what trains, in eval mode (no dropout):
  fuse        ``Fuse("a", "b")`` + head "f"; trains the fusion layers and head "f", adapters frozen.
  stack       ``Stack("a", "b")`` + head "b"; trains a, b and head "b".
  parallel    ``Parallel("a", "b")`` + heads "a", "b"; loss = CE(head a) + CE(head b); trains a, b
              and both heads.
  average     ``Average("a", "b", weights=[3, 1])`` + head "a"; trains a, b and head "a". AdapterHub
              holds Average's weights in a float32 tensor, so they are chosen exact in float32
              (3/4, 1/4); 2/3 would round.
  batchsplit  ``BatchSplit("a", "b", batch_sizes=[1, 2])`` + heads ``BatchSplit("a", "b")``: row 0
              with a, rows 1-2 with b; loss = CE of a's rows (mean) + CE of b's rows (mean), so
              each task's gradients are those of its rows alone; trains a, b and both heads.
``fuse_pf``, ``stack_pf``  as fuse and stack, over Pfeiffer adapters "p", "q"
    (``SeqBnConfig(reduction_factor=4)``: bottleneck 4, relu, after the feed-forward block reading
    LayerNorm(o + h)) with head "g" (``torch.manual_seed(1)``, drawn after all the above).
``average_adapter.<name>``  ``model.average_adapter("avg", ["a", "c"], weights=[2, 1])``'s
    parameters (weights normalised to 2/3, 1/3), float32: AdapterHub creates the new adapter in
    the default dtype and loads the float64 average into it.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
CONFIG = dict(vocab_size=20, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
              intermediate_size=24, max_position_embeddings=16, layer_norm_eps=1e-5,
              hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, hidden_act="gelu")
STD = 0.3


def batch(seed=1, B=3, T=6, vocab=20):
    """tests/tiny.py's tiny_batch: [CLS]=1 first, rows 1 and 2 padded at the end."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(2, vocab, size=(B, T))
    ids[:, 0] = 1
    mask = np.ones((B, T), np.int64)
    mask[1, -2:] = 0
    mask[2, -4:] = 0
    ids[mask == 0] = 0
    types = np.zeros((B, T), np.int64)
    types[0, 3:] = 1
    return ids, mask, types, np.array([1, 0, 1], np.int64)


def strip_bert(name):
    return name[len("bert."):] if name.startswith("bert.") else name


def main() -> int:
    import torch
    import torch.nn.functional as F
    import transformers
    from adapters import BertAdapterModel, DoubleSeqBnConfig, SeqBnConfig
    from adapters.composition import Average, BatchSplit, Fuse, Parallel, Stack
    from safetensors.numpy import save_file
    from transformers import BertConfig

    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    logging.getLogger("adapters").setLevel(logging.ERROR)
    out = {}

    # the backbone: random weights, drawn in numpy so that the test needs nothing but this file
    model = BertAdapterModel(BertConfig(**CONFIG, attn_implementation="eager")).to(torch.float64)
    rng = np.random.default_rng(0)
    backbone = {}
    for n, p in model.bert.named_parameters():
        if n.startswith("pooler."):
            continue  # the heads read [CLS] directly; the pooler is unused
        if "LayerNorm.weight" in n:
            backbone[n] = 1 + 0.1 * rng.standard_normal(tuple(p.shape))
        else:
            backbone[n] = 0.5 * rng.standard_normal(tuple(p.shape))
    model.bert.load_state_dict({k: torch.from_numpy(v) for k, v in backbone.items()}, strict=False)
    out.update({f"backbone.{k}": v for k, v in backbone.items()})
    ids_np, mask_np, types_np, labels_np = batch()
    out.update({"inputs.input_ids": ids_np, "inputs.attention_mask": mask_np,
                "inputs.token_type_ids": types_np, "labels": labels_np})
    ids, mask, types = (torch.from_numpy(a) for a in (ids_np, mask_np, types_np))
    labels = torch.from_numpy(labels_np)

    # adapters a, b, c; heads a, b, c, f; the fusion of a and b
    for name in "abc":
        model.add_adapter(name, config=DoubleSeqBnConfig(reduction_factor=4))
    for name in "abcf":
        model.add_classification_head(name, num_labels=2)
    model.add_adapter_fusion(Fuse("a", "b"))
    model = model.to(torch.float64).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if ".adapters." in n or n.startswith("heads.") or "adapter_fusion_layer" in n:
                p.copy_(torch.randn(p.shape, dtype=p.dtype) * STD)
                kind = "fusion" if "adapter_fusion_layer" in n else "adapter"
                out[f"{kind}.{strip_bert(n)}"] = p.numpy().copy()

    def run(key, setup, head, trains, loss_of):
        """Forward with `setup` active, loss_of(output) -> loss, backward; store what trains."""
        for n, p in model.named_parameters():
            p.requires_grad_(trains(n))
            p.grad = None
        model.set_active_adapters(setup)
        model.active_head = head
        res = model(input_ids=ids, attention_mask=mask, token_type_ids=types)
        loss, logits = loss_of(res)
        loss.backward()
        for k, v in logits.items():
            out[f"{key}.logits{k}"] = v.detach().numpy().copy()
        out[f"{key}.loss"] = np.asarray(loss.item(), np.float64).reshape(())
        grads = {strip_bert(n): p.grad for n, p in model.named_parameters() if p.requires_grad}
        assert all(g is not None for g in grads.values()), [n for n, g in grads.items() if g is None]
        out.update({f"{key}.grad.{n}": g.numpy().copy() for n, g in grads.items()})
        print(key, "loss", loss.item(), "trains", len(grads))

    def adapter_of(adapters, heads):
        return lambda n: (any(f".adapters.{a}." in n for a in adapters)
                          or any(n.startswith(f"heads.{h}.") for h in heads))

    def single(res):
        return F.cross_entropy(res.logits, labels), {"": res.logits}

    run("fuse", Fuse("a", "b"), "f",
        lambda n: "adapter_fusion_layer" in n or n.startswith("heads.f."), single)
    run("stack", Stack("a", "b"), "b", adapter_of("ab", "b"), single)

    def parallel(res):
        assert len(res) == 2
        loss = F.cross_entropy(res[0].logits, labels) + F.cross_entropy(res[1].logits, labels)
        return loss, {".a": res[0].logits, ".b": res[1].logits}
    run("parallel", Parallel("a", "b"), Parallel("a", "b"), adapter_of("ab", "ab"), parallel)

    run("average", Average("a", "b", weights=[3, 1]), "a", adapter_of("ab", "a"), single)

    def split(res):
        assert len(res) == 2
        la, lb = res[0].logits, res[1].logits
        loss = F.cross_entropy(la, labels[:1]) + F.cross_entropy(lb, labels[1:])
        return loss, {".a": la, ".b": lb}
    run("batchsplit", BatchSplit("a", "b", batch_sizes=[1, 2]), BatchSplit("a", "b", batch_sizes=[1, 2]),
        adapter_of("ab", "ab"), split)

    model.average_adapter("avg", ["a", "c"], weights=[2, 1])
    for n, p in model.named_parameters():
        if ".adapters.avg." in n:
            out[f"average_adapter.{strip_bert(n)}"] = p.detach().numpy().copy()

    # Pfeiffer adapters p, q (SeqBnConfig: after the FFN, reading LayerNorm(o + h), relu) and head
    # g, drawn after everything above so that its numbers stay as they were
    for name in "pq":
        model.add_adapter(name, config=SeqBnConfig(reduction_factor=4))
    model.add_classification_head("g", num_labels=2)
    model.add_adapter_fusion(Fuse("p", "q"))
    model = model.to(torch.float64).eval()
    torch.manual_seed(1)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if ".adapters.p." in n or ".adapters.q." in n or n.startswith("heads.g.") or \
                    "adapter_fusion_layer.p,q." in n:
                p.copy_(torch.randn(p.shape, dtype=p.dtype) * STD)
                kind = "fusion" if "adapter_fusion_layer" in n else "adapter"
                out[f"{kind}.{strip_bert(n)}"] = p.numpy().copy()
    run("fuse_pf", Fuse("p", "q"), "g", lambda n: "adapter_fusion_layer.p,q." in n or n.startswith("heads.g."),
        single)
    run("stack_pf", Stack("p", "q"), "g", adapter_of("pq", "g"), single)

    out = {k: np.require(v, requirements="C") for k, v in out.items()}
    path = REPO / "tests" / "fixtures" / "composition.safetensors"
    save_file(out, str(path), metadata={"generator": "tests/make_composition_fixtures.py",
                                        "versions": f"torch {torch.__version__}, transformers "
                                                    f"{transformers.__version__}"})
    print("wrote", path, len(out), "tensors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
