"""Torch pickles for tests/test_torch_pickle.py: what `torch.save` and AdapterHub's default save write.

Usage (needs torch and adapters; never imported by minadapt itself)::

    python tests/make_torch_pickle_fixtures.py [--weights weights/all-MiniLM-L6-v2]

Writes into ``tests/fixtures/``:

``torch_pickle/zip.bin``, ``torch_pickle/legacy.bin``
    one OrderedDict of small tensors saved by ``torch.save`` in the zip layout and in the legacy
    layout (``_use_new_zipfile_serialization=False``): float32, a transposed (non-contiguous)
    float32 view, float16, bfloat16, float64, int64 from an offset into its storage, bool, two
    tensors sharing one storage, and an ``nn.Parameter``; ``torch_pickle/expected.safetensors``
    holds the same tensors as NumPy wrote them (bfloat16 widened to float32).
``torch_pickle/tiny_bert/``
    a 2-layer random BertModel (tests/tiny.py's TINY sizes, ``torch.manual_seed(3)``) saved by
    ``save_pretrained(dir, safe_serialization=False)``: ``config.json`` and ``pytorch_model.bin``, as
    older hub repositories hold it; ``torch_pickle/tiny_bert.safetensors`` holds its float64
    ``last_hidden_state`` on tests/tiny.py's ``tiny_batch()``, and that batch.
``adapterhub_houlsby_bin/``
    the directory ``adapterhub_houlsby/`` (made by tests/make_method_fixtures.py) loaded into
    AdapterHub and saved again with its default ``save_adapter(dir, name)``: ``pytorch_adapter.bin``
    and ``pytorch_model_head.bin`` beside the two JSON configs; its logits are
    ``ah_houlsby.logits`` in methods.safetensors.
"""
from __future__ import annotations

import argparse
import logging
import sys
from collections import OrderedDict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", type=Path, default=REPO / "weights" / "all-MiniLM-L6-v2")
    ap.add_argument("--out", type=Path, default=REPO / "tests" / "fixtures")
    args = ap.parse_args(argv)

    import numpy as np
    import torch
    from adapters import BertAdapterModel
    from safetensors.numpy import save_file

    logging.getLogger("adapters").setLevel(logging.ERROR)
    torch.manual_seed(0)
    shared = torch.randn(10)
    tensors = OrderedDict([
        ("f32", torch.randn(3, 4)),
        ("f32_t", torch.randn(4, 3).t()),
        ("f16", torch.randn(5).half()),
        ("bf16", torch.randn(2, 3).bfloat16()),
        ("f64", torch.randn(2, 2).double()),
        ("i64_offset", torch.arange(10)[3:7]),
        ("bool", torch.tensor([True, False, True])),
        ("shared_a", shared[:4]),
        ("shared_b", shared[6:].view(2, 2)),
        ("param", torch.nn.Parameter(torch.randn(2, 2))),
    ])
    d = args.out / "torch_pickle"
    d.mkdir(parents=True, exist_ok=True)
    torch.save(tensors, d / "zip.bin")
    torch.save(tensors, d / "legacy.bin", _use_new_zipfile_serialization=False)
    expected = {k: (v.detach().float() if v.dtype == torch.bfloat16 else v.detach()).contiguous().numpy()
                for k, v in tensors.items()}
    save_file({k: np.ascontiguousarray(v) for k, v in expected.items()}, str(d / "expected.safetensors"),
              metadata={"generator": "tests/make_torch_pickle_fixtures.py", "torch": torch.__version__})

    sys.path.insert(0, str(REPO / "tests"))
    from tiny import TINY, tiny_batch
    from transformers import BertConfig, BertModel

    torch.manual_seed(3)
    bert = BertModel(BertConfig(**TINY, hidden_act="gelu", attn_implementation="eager"),
                     add_pooling_layer=False).eval()
    bert.save_pretrained(str(d / "tiny_bert"), safe_serialization=False)
    ids, mask, types, _ = tiny_batch()
    with torch.no_grad():
        h = bert.double()(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                          token_type_ids=torch.from_numpy(types)).last_hidden_state.numpy()
    save_file({"input_ids": ids, "attention_mask": mask, "token_type_ids": types,
               "last_hidden_state": np.ascontiguousarray(h)}, str(d / "tiny_bert.safetensors"))

    m = BertAdapterModel.from_pretrained(str(args.weights), attn_implementation="eager")
    name = m.load_adapter(str(args.out / "adapterhub_houlsby"), use_safetensors=True)
    m.save_adapter(str(args.out / "adapterhub_houlsby_bin"), name)  # AdapterHub's default: .bin
    print("wrote", d, "and", args.out / "adapterhub_houlsby_bin",
          sorted(p.name for p in (args.out / "adapterhub_houlsby_bin").iterdir()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
