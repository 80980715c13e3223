"""A tiny random BERT (fast, float64) and a batch for it, shared by the tests. A plain module, not
conftest.py: `pytest` collects lessons/ too, whose conftest.py would shadow a `from conftest import`."""
from pathlib import Path

import numpy as np

from minadapt.config import BertConfig
from minadapt.model import Model
from minadapt.io.weights import expected_shapes

REPO = Path(__file__).resolve().parents[1]
TINY = dict(vocab_size=20, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=12, max_position_embeddings=16, layer_norm_eps=1e-5)


def tiny_model(seed=0, dtype=np.float64, **overrides) -> Model:
    """A 2-layer BERT with random weights (LayerNorm gains near 1), for end-to-end gradient checks."""
    cfg = BertConfig(**{**TINY, **overrides})
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in expected_shapes(cfg).items():
        if "LayerNorm.weight" in name:
            params[name] = 1 + 0.1 * rng.standard_normal(shape)
        else:
            params[name] = 0.5 * rng.standard_normal(shape)
    return Model(cfg, {k: v.astype(dtype) for k, v in params.items()}, backbone={"name": "tiny"})


def tiny_batch(seed=1, B=3, T=6, vocab=20):
    """Token ids with [CLS]=1 first and some rows padded (mask 0, id 0) at the end."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(2, vocab, size=(B, T))
    ids[:, 0] = 1
    mask = np.ones((B, T), np.int64)
    mask[1, -2:] = 0
    mask[2, -4:] = 0
    ids[mask == 0] = 0
    types = np.zeros((B, T), np.int64)
    types[0, 3:] = 1
    labels = rng.integers(0, 2, size=B)
    return ids, mask, types, labels
