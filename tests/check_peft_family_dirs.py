"""PEFT itself reads the directories minadapt writes: for each of prompt, prefix (plain and through
the MLP) and IA3, the tiny model of tests/test_family_methods.py is saved with format="peft" and
loaded by `PeftModel.from_pretrained(BertForSequenceClassification(...), dir)`; the logits must
agree with minadapt's.

Usage (needs torch, transformers, peft; minadapt's tests never import them)::

    /work/refvenv/bin/python tests/check_peft_family_dirs.py
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))


def main() -> int:
    import torch
    import transformers
    from peft import PeftModel
    from safetensors.numpy import load_file
    from transformers import BertConfig, BertForSequenceClassification

    import test_family_methods as t
    from tiny import tiny_model

    transformers.logging.set_verbosity_error()
    ref = load_file(str(t.FIXTURES / "peft_family.safetensors"))
    tm = tiny_model()
    c = tm.cfg
    hf = BertConfig(vocab_size=c.vocab_size, hidden_size=c.hidden_size, num_hidden_layers=c.num_hidden_layers,
                    num_attention_heads=c.num_attention_heads, intermediate_size=c.intermediate_size,
                    max_position_embeddings=c.max_position_embeddings, layer_norm_eps=c.layer_norm_eps,
                    num_labels=2, attn_implementation="eager")
    ids, mask, types, _ = t._inputs(ref)
    worst = 0.0
    for case in ("prompt", "prefix", "prefix_mlp", "ia3"):
        model = t._model(ref, case)
        ours = model.logits(ids, mask, types, adapter=t.HEAD)
        with tempfile.TemporaryDirectory() as d:
            model.save_adapter(Path(d) / case, adapter=t.HEAD, format="peft")
            base = BertForSequenceClassification(hf).double()
            base.load_state_dict({"bert." + k: torch.from_numpy(np.asarray(v)) for k, v in tm.params.items()},
                                 strict=False)
            pm = PeftModel.from_pretrained(base.eval(), str(Path(d) / case)).double().eval()
            with torch.no_grad():
                theirs = pm(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                            token_type_ids=torch.from_numpy(types)).logits.numpy()
        gap = float(np.abs(theirs - ours).max())
        worst = max(worst, gap)
        print(f"{case:<11} PEFT reads minadapt's directory: logits within {gap:.1e}")
    return 0 if worst < 1e-8 else 1


if __name__ == "__main__":
    sys.exit(main())
