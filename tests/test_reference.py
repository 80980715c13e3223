"""minadapt against stored numbers from transformers' BertModel and AdapterHub (tests/fixtures/).

The fixture file is made by tests/make_fixtures.py (rerun it with the `ref` extra installed);
these tests need only the real checkpoint, which the `checkpoint_dir` fixture fetches when missing.
"""
from pathlib import Path

import numpy as np
import pytest

import minadapt
from minadapt.io.weights import read_safetensors

FIXTURE = Path(__file__).parent / "fixtures" / "reference.safetensors"


@pytest.fixture(scope="module")
def ref():
    tensors, meta = read_safetensors(FIXTURE)
    return tensors, meta


@pytest.fixture(scope="module", params=["fast", "reference"])
def ops(request):
    """Both implementations of the ops must match transformers and AdapterHub."""
    return request.param


@pytest.fixture(scope="module")
def model64(checkpoint_dir, ops):
    return minadapt.load_model(checkpoint_dir, dtype="float64", ops=ops)


def _inputs(tensors):
    return (tensors["inputs.input_ids"], tensors["inputs.attention_mask"],
            tensors["inputs.token_type_ids"])


def test_fixture_matches_this_checkpoint(ref, model64):
    _, meta = ref
    assert meta["model_sha256"] == model64.backbone_id()["sha256"]


def test_bert_float64_matches_transformers(ref, model64):
    tensors, _ = ref
    ids, mask, types = _inputs(tensors)
    h = model64.encode(ids, mask, types)
    real = mask.astype(bool)  # padded positions are not compared: nothing reads them
    err = np.abs(h - tensors["bert.f64.last_hidden_state"])[real].max()
    assert err < 1e-10, err


def test_bert_float32_matches_transformers(ref, checkpoint_dir, ops):
    tensors, _ = ref
    ids, mask, types = _inputs(tensors)
    model = minadapt.load_model(checkpoint_dir, dtype="float32", ops=ops)
    h = model.encode(ids, mask, types)
    assert h.dtype == np.float32
    err = np.abs(h - tensors["bert.f32.last_hidden_state"])[mask.astype(bool)].max()
    assert err < 1e-4, err


def test_adapter_step_zero_is_the_frozen_model(checkpoint_dir):
    model = minadapt.load_model(checkpoint_dir, dtype="float32")
    b = model.tokenizer.encode(["a gripping, funny film", "dull"])
    before = model.encode(*b)
    model.add_adapter("sst2", bottleneck=64, seed=3)
    after = model.encode(*b)
    assert np.array_equal(before, after)


def test_adapterhub_logits_loss_and_gradients(ref, checkpoint_dir, ops):
    """AdapterHub's Houlsby adapters (bottleneck 64, swish) + default head, float64, dropout off:
    minadapt given the same parameters gives the same logits, loss and every gradient."""
    tensors, _ = ref
    model = minadapt.load_model(checkpoint_dir, dtype="float64", ops=ops)
    model.add_adapter("sst2", bottleneck=64, non_linearity="swish")
    model.add_classification_head("sst2", num_labels=2)
    stored = {k[len("adapter.param."):]: v for k, v in tensors.items() if k.startswith("adapter.param.")}
    assert set(stored) == model.trainable
    for k, v in stored.items():
        model.params[k][...] = v
    ids, mask, types = _inputs(tensors)
    loss, logits, grads = model.loss_and_grads(ids, mask, types, tensors["adapter.labels"], train=False)
    assert abs(float(loss) - float(tensors["adapter.loss"])) < 1e-10
    assert np.abs(logits - tensors["adapter.logits"]).max() < 1e-10
    assert set(grads) == model.trainable
    for k, g in grads.items():
        want = tensors["adapter.grad." + k]
        rel = np.abs(g - want).max() / np.abs(want).max()
        assert rel < 1e-8, (k, rel)
