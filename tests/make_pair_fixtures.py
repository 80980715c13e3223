"""Regenerate tests/fixtures/pairs.safetensors: what transformers makes of sentence pairs.

Usage (needs the ``ref`` extra: torch, transformers; never imported by minadapt itself)::

    python tests/make_pair_fixtures.py [--weights weights/all-MiniLM-L6-v2] \
                                       [--out tests/fixtures/pairs.safetensors]

Everything runs on the CPU from the local checkpoint folder. The file holds:

``pairs.input_ids``, ``pairs.attention_mask``, ``pairs.token_type_ids`` (int64, (B, L))
    The four pairs in ``PAIRS``, tokenised by ``AutoTokenizer.from_pretrained(weights)`` (the fast
    BERT tokenizer from tokenizer.json) as ``tok(texts, pairs, truncation=True, max_length=128,
    padding="longest")``: ``[CLS] a [SEP] b [SEP]``, type ids 1 on b and its [SEP], 0 on padding.
``pairs.last_hidden_state`` (float64, (B, L, 384))
    ``transformers.BertModel`` (eager attention, no pooler, eval mode) in float64 on that batch, so
    a test can check minadapt's encoder on pairs (the segment embedding of type 1 included).
metadata (strings)
    ``pairs`` (JSON list of [a, b]), ``versions`` (JSON), and ``truncation``: a JSON list of
    ``{"text", "pair", "max_length", "input_ids", "token_type_ids"}``, each tokenised alone with
    ``truncation=True, max_length=...`` (longest first): a long first text, a long second text,
    two long texts with an even and an odd budget, a tie, and a pair cut to 512 tokens.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAIRS = [
    ("A man is playing a guitar.", "A person plays an instrument."),
    ("The cat sat on the mat.", "Is the cat on the mat?"),
    ("it 's a charming and often affecting journey .", "unflinchingly bleak and desperate"),
    ("Naïve café owners", "Don't stop believin'!"),
]
LONG_A = "the quick brown fox jumps over the lazy dog " * 6  # 54 words
LONG_B = "a stitch in time saves nine , they say " * 5  # 45 words
TRUNCATION = [
    (LONG_A, "short pair here", 16),  # only a is cut
    ("short text", LONG_B, 16),  # only b is cut
    (LONG_A, LONG_B, 20),  # both cut, even budget (17 for the texts)
    (LONG_A, LONG_B, 21),  # both cut, odd budget
    ("one two three four five", "six seven eight nine ten", 10),  # a tie: 7 tokens for 5 + 5
    ("one two three", "four five six seven eight nine ten eleven", 9),  # shorter kept whole?
    (LONG_A * 8, LONG_B * 8, 512),  # the longest the checkpoint allows
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", type=Path, default=REPO / "weights" / "all-MiniLM-L6-v2")
    ap.add_argument("--out", type=Path, default=REPO / "tests" / "fixtures" / "pairs.safetensors")
    args = ap.parse_args()

    import numpy as np
    import tokenizers
    import torch
    import transformers
    from safetensors.numpy import save_file
    from transformers import AutoTokenizer, BertModel

    torch.set_num_threads(2)
    tok = AutoTokenizer.from_pretrained(str(args.weights))
    assert tok.is_fast, type(tok)
    a, b = [p[0] for p in PAIRS], [p[1] for p in PAIRS]
    enc = tok(a, b, truncation=True, max_length=128, padding="longest", return_tensors="pt")
    model = BertModel.from_pretrained(str(args.weights), add_pooling_layer=False,
                                      attn_implementation="eager", torch_dtype=torch.float32)
    model = model.to(torch.float64).eval()
    with torch.no_grad():
        h = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                  token_type_ids=enc["token_type_ids"]).last_hidden_state
    assert h.dtype == torch.float64

    cases = []
    for text, pair, max_length in TRUNCATION:
        e = tok(text, pair, truncation=True, max_length=max_length)
        assert len(e["input_ids"]) <= max_length
        cases.append(dict(text=text, pair=pair, max_length=max_length, input_ids=e["input_ids"],
                          token_type_ids=e["token_type_ids"]))
        print(f"max_length {max_length}: {len(e['input_ids'])} tokens, "
              f"{sum(e['token_type_ids'])} of them type 1")

    out = {"pairs.input_ids": enc["input_ids"].numpy().astype(np.int64),
           "pairs.attention_mask": enc["attention_mask"].numpy().astype(np.int64),
           "pairs.token_type_ids": enc["token_type_ids"].numpy().astype(np.int64),
           "pairs.last_hidden_state": h.numpy()}
    versions = dict(torch=torch.__version__, transformers=transformers.__version__,
                    tokenizers=tokenizers.__version__)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file(out, str(args.out), metadata={"pairs": json.dumps(PAIRS), "versions": json.dumps(versions),
                                            "truncation": json.dumps(cases)})
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes): batch {tuple(enc['input_ids'].shape)}")


if __name__ == "__main__":
    main()
