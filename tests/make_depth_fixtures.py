"""Reference numbers for adapters in some layers only: AdapterHub's `leave_out`.

Usage (needs torch, transformers, adapters; never imported by minadapt itself)::

    python tests/make_depth_fixtures.py [--weights weights/all-MiniLM-L6-v2]

Writes ``tests/fixtures/depth.safetensors`` and ``tests/fixtures/adapterhub_leave_out/``, from the
three sentences of tests/make_method_fixtures.py:

``inputs.*`` (int64 (B, L)), ``labels`` (int64 (B,))
``<key>.param.<name>`` (float32 values), ``<key>.grad.<name>``, ``<key>.logits``, ``<key>.loss``
(float64) for two adapters, each ``BertAdapterModel`` + the config + the default 2-label
classification head, every trainable parameter overwritten (``torch.manual_seed(3)``,
``named_parameters()`` order) with ``randn * 0.05``; float64, eval mode, mean cross-entropy:
    ``top2``   "hb": ``DoubleSeqBnConfig(reduction_factor=32, leave_out=[0, 1, 2, 3])``
               (Houlsby, bottleneck 12, in the top 2 layers of 6)
    ``odd``    "pf": ``SeqBnConfig(reduction_factor=32, leave_out=[0, 2, 4])`` (Pfeiffer, relu,
               bottleneck 12, in layers 1, 3, 5)
``adapterhub_leave_out/``: the ``top2`` adapter and head as ``save_adapter(dir, "hb",
use_safetensors=True)`` writes them (float32).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_method_fixtures import LABELS, SENTENCES, STD, strip_bert, tokenize  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", type=Path, default=REPO / "weights" / "all-MiniLM-L6-v2")
    ap.add_argument("--out", type=Path, default=REPO / "tests" / "fixtures")
    args = ap.parse_args(argv)

    import torch
    import transformers
    from adapters import BertAdapterModel, DoubleSeqBnConfig, SeqBnConfig
    from safetensors.numpy import save_file

    transformers.logging.set_verbosity_error()
    logging.getLogger("adapters").setLevel(logging.ERROR)
    out = {}
    ids_np, mask_np, types_np = tokenize(args.weights)
    out.update({"inputs.input_ids": ids_np, "inputs.attention_mask": mask_np,
                "inputs.token_type_ids": types_np, "labels": np.array(LABELS, np.int64)})
    ids, mask, types = (torch.from_numpy(a) for a in (ids_np, mask_np, types_np))
    labels = torch.tensor(LABELS)
    for key, name, config in (("top2", "hb", DoubleSeqBnConfig(reduction_factor=32, leave_out=[0, 1, 2, 3])),
                              ("odd", "pf", SeqBnConfig(reduction_factor=32, leave_out=[0, 2, 4]))):
        model = BertAdapterModel.from_pretrained(str(args.weights), attn_implementation="eager")
        model.add_adapter(name, config=config)
        model.add_classification_head(name, num_labels=2)
        model.train_adapter(name)
        trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        layers = sorted({int(n.split(".")[3]) for n, _ in trainable if ".adapters." in n})
        print(key, "adapters in layers", layers)
        torch.manual_seed(3)
        with torch.no_grad():
            for n, p in trainable:
                p.copy_(torch.randn(p.shape) * STD)
                out[f"{key}.param.{strip_bert(n)}"] = p.numpy().copy()
        if key == "top2":
            model.save_adapter(str(args.out / "adapterhub_leave_out"), name, use_safetensors=True)
        model = model.to(torch.float64).eval()
        res = model(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=labels)
        res.loss.backward()
        for n, p in trainable:
            out[f"{key}.grad.{strip_bert(n)}"] = p.grad.numpy().copy()
        out[f"{key}.logits"] = res.logits.detach().numpy().copy()
        out[f"{key}.loss"] = np.asarray(res.loss.item(), np.float64).reshape(())
        print(key, "loss", res.loss.item())
    out = {k: np.require(v, requirements="C") for k, v in out.items()}
    save_file(out, str(args.out / "depth.safetensors"),
              metadata={"sentences": str(SENTENCES), "generator": "tests/make_depth_fixtures.py",
                        "versions": f"torch {torch.__version__}, transformers {transformers.__version__}"})
    print("wrote", args.out / "depth.safetensors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
