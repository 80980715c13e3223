"""The other adaptation methods: Pfeiffer adapters against AdapterHub, LoRA against PEFT (stored
numbers, tests/make_method_fixtures.py), every new backward against centred differences on the
tiny model, the houlsby-paper preset, LoRA merging, full fine-tuning and the linear probe."""
from pathlib import Path

import numpy as np
import pytest

import minadapt
import minadapt.ops
from minadapt.errors import ConfigError
from minadapt.gradcheck import numerical_grad, rel_error
from minadapt.nn import gelu_tanh, lora
from minadapt.io.weights import read_safetensors

from tiny import tiny_batch, tiny_model

FIXTURE = Path(__file__).parent / "fixtures" / "methods.safetensors"
TOL = 1e-7


@pytest.fixture(scope="module")
def ref():
    return read_safetensors(FIXTURE)[0]


def _inputs(t):
    return t["inputs.input_ids"], t["inputs.attention_mask"], t["inputs.token_type_ids"]


def _with_ops(model, ops):
    model.set_ops(ops)
    return model


# --- reference numbers ----------------------------------------------------------------------------
@pytest.mark.parametrize("ops", ["fast", "reference"])
def test_pfeiffer_matches_adapterhub(ref, checkpoint_dir, ops):
    """SeqBnConfig (bottleneck 24, relu) + head, float64, dropout off: logits, loss, hidden state and
    every gradient as AdapterHub's."""
    model = minadapt.load_model(checkpoint_dir, dtype="float64", ops=ops)
    model.add_adapter("pf", architecture="pfeiffer", non_linearity="relu")
    model.add_classification_head("pf")
    assert model.config_of("pf").bottleneck == 24 and model.method("pf") == "pfeiffer"
    stored = {k[len("pfeiffer.param."):]: v for k, v in ref.items() if k.startswith("pfeiffer.param.")}
    assert set(stored) == model.trainable_names("pf")
    model.put(stored)
    ids, mask, types = _inputs(ref)
    loss, logits, grads = model.loss_and_grads(ids, mask, types, ref["labels"], train=False)
    assert abs(float(loss) - float(ref["pfeiffer.loss"])) < 1e-10
    assert np.abs(logits - ref["pfeiffer.logits"]).max() < 1e-10
    h = model.encode(ids, mask, types)
    assert np.abs(h - ref["pfeiffer.last_hidden_state"])[mask.astype(bool)].max() < 1e-10
    for k, g in grads.items():
        want = ref["pfeiffer.grad." + k]
        assert np.abs(g - want).max() / np.abs(want).max() < 1e-8, k


@pytest.mark.parametrize("ops", ["fast", "reference"])
def test_lora_matches_peft(ref, checkpoint_dir, ops):
    """PEFT LoraConfig(target_modules=["query", "value"], r=4, lora_alpha=8) on BertModel, float64:
    hidden state, logits, loss and every A, B and head gradient."""
    model = minadapt.load_model(checkpoint_dir, dtype="float64", ops=ops)
    model.add_lora("lora", r=4, alpha=8, dropout=0.0)
    model.add_classification_head("lora")
    stored = {k[len("lora.param."):]: v for k, v in ref.items() if k.startswith("lora.param.")}
    assert set(stored) == model.trainable_names("lora")
    model.put(stored)
    ids, mask, types = _inputs(ref)
    h = model.encode(ids, mask, types)
    assert np.abs(h - ref["lora.last_hidden_state"])[mask.astype(bool)].max() < 1e-10
    loss, logits, grads = model.loss_and_grads(ids, mask, types, ref["labels"], train=False)
    assert abs(float(loss) - float(ref["lora.loss"])) < 1e-10
    assert np.abs(logits - ref["lora.logits"]).max() < 1e-10
    assert set(grads) == model.trainable_names("lora")
    for k, g in grads.items():
        want = ref["lora.grad." + k]
        assert np.abs(g - want).max() / np.abs(want).max() < 1e-8, k


def test_merged_lora_gives_the_same_logits_on_the_bare_path(ref, checkpoint_dir):
    model = minadapt.load_model(checkpoint_dir, dtype="float32")
    model.add_lora("lora", r=4, alpha=8, dropout=0.0)
    model.add_classification_head("lora")
    model.add_adapter("other", bottleneck=8)  # another task: merging must leave it and the backbone be
    model.put({k[len("lora.param."):]: v for k, v in ref.items() if k.startswith("lora.param.")})
    ids, mask, types = _inputs(ref)
    before = {k: v.copy() for k, v in model.params.items()}
    merged = model.merge_lora("lora")
    assert all(np.array_equal(model.params[k], v) for k, v in before.items())
    assert merged.methods == {} and merged.method("lora") == "probe"
    assert not any("lora_" in k for k in merged.params)  # runs the bare backbone's code
    want = model.logits(ids, mask, types, adapter="lora")
    assert np.abs(merged.logits(ids, mask, types, adapter="lora") - want).max() < 1e-5
    with pytest.raises(ConfigError, match="nothing to merge"):
        model.merge_lora("other")


# --- gradient checks --------------------------------------------------------------------------------
def _check_task(model, name, train, skip=()):
    rng = np.random.default_rng(7)
    for k in sorted(model.trainable_names(name)):  # off the init, so no gradient is trivially zero
        model.params[k] += 0.3 * rng.standard_normal(model.params[k].shape)
    batch = (*tiny_batch()[:3], np.array([0, 2, 1]))
    _, _, grads = model.loss_and_grads(*batch, adapter=name, train=train, rng=np.random.default_rng(3))
    assert set(grads) == model.trainable_names(name)

    def f(_):
        return model.loss_and_grads(*batch, adapter=name, train=train, rng=np.random.default_rng(3))[0]

    for k in sorted(model.trainable_names(name)):
        if k in skip:
            continue
        num = numerical_grad(f, model.params[k], np.array(1.0), h=1e-5)
        assert rel_error(grads[k], num) < TOL, k
        assert np.abs(grads[k]).max() > 0, k
    return grads


@pytest.mark.parametrize("ops", ["fast", "reference"])
@pytest.mark.parametrize("train", [False, True])
def test_pfeiffer_gradients(ops, train):
    """Every Pfeiffer parameter, with trained LayerNorm copies (the LayerNorm runs twice there, so
    its gradients add up), dropout on and off, on the reference and the fast path ([CLS] layer)."""
    model = _with_ops(tiny_model(), ops)
    model.add_adapter("a", architecture="pfeiffer", bottleneck=3, train_layer_norms=True)
    model.add_classification_head("a", num_labels=3)
    _check_task(model, "a", train)


@pytest.mark.parametrize("ops", ["fast", "reference"])
@pytest.mark.parametrize("targets", [("query", "value"), ("key",), ("query", "key", "value")])
def test_lora_gradients(ops, targets):
    model = _with_ops(tiny_model(), ops)
    model.add_lora("a", r=2, alpha=3.0, dropout=0.2, targets=targets)
    model.add_classification_head("a", num_labels=3)
    _check_task(model, "a", train=True)


def test_houlsby_paper_preset_gradients_and_init():
    model = tiny_model()
    model.add_adapter("a", preset="houlsby-paper", bottleneck=3)
    a = model.config_of("a")
    assert (a.non_linearity, a.train_layer_norms, a.init, a.init_std) == ("gelu_tanh", True, "truncated_normal", 1e-3)
    for k in model.trainable_names("a"):
        if k.endswith(("adapter_down.0.weight", "adapter_up.weight")):
            w = model.params[k]
            assert np.abs(w).max() <= 2e-3 and np.abs(w).max() > 0, k  # drawn, truncated at 2 std
    model.add_classification_head("a", num_labels=3)
    _check_task(model, "a", train=False)


@pytest.mark.parametrize("ops", ["fast", "reference"])
def test_full_finetuning_gradients(ops):
    model = _with_ops(tiny_model(), ops)
    model.add_full_finetuning("a", num_labels=3)
    assert model.lowest_trainable_layer("a") == -1 and model.method("a") == "full"
    key_bias = {f"encoder.layer.{i}.attention.self.key.bias" for i in range(2)}
    grads = _check_task(model, "a", train=False, skip=key_bias)
    for k in key_bias:  # softmax ignores a shift of a row's scores: the key bias's gradient is 0
        assert np.abs(grads[k]).max() < 1e-12
    with pytest.raises(ConfigError, match="full fine-tuning"):
        model.add_adapter("b")


def test_full_finetuning_refuses_beside_other_tasks():
    model = tiny_model()
    model.add_adapter("a")
    with pytest.raises(ConfigError, match="share"):
        model.add_full_finetuning("b")


def test_probe_gradients_touch_only_the_head():
    model = tiny_model()
    model.add_probe("p", num_labels=3)
    assert model.lowest_trainable_layer("p") is None and model.method("p") == "probe"
    grads = _check_task(model, "p", train=True)
    assert all(k.startswith("heads.p.") for k in grads)


# --- the new ops on their own -----------------------------------------------------------------------
def test_gelu_tanh_gradient_and_its_distance_from_erf_gelu():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 5)) * 2
    dy = rng.standard_normal((4, 5))
    y, cache = gelu_tanh.forward(x)
    (dx,) = gelu_tanh.backward(dy, cache)
    assert rel_error(dx, numerical_grad(lambda v: gelu_tanh.forward(v)[0], x, dy)) < 1e-8
    from minadapt.nn import gelu

    assert 0 < np.abs(y - gelu.forward(x)[0]).max() < 1e-3
    # the largest gap over the line, as nn/gelu.py and nn/gelu_tanh.py state it: 4.7e-4 near |x| = 2.7
    t = np.linspace(-10, 10, 200001)
    gap = np.abs(gelu_tanh.forward(t)[0] - gelu.forward(t)[0])
    assert round(gap.max(), 5) == 4.7e-4 and 2.6 < abs(t[gap.argmax()]) < 2.8


def test_lora_linear_gradients():
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((2, 3, 5)), rng.standard_normal((4, 5)), rng.standard_normal(4)
    a, bb = rng.standard_normal((2, 5)), rng.standard_normal((4, 2))
    dy = rng.standard_normal((2, 3, 4))

    def f(x_, a_, b_, p=0.3):
        return lora.forward(x_, w, b, a_, b_, 1.5, p, np.random.default_rng(5), True)[0]

    y, cache = lora.forward(x, w, b, a, bb, 1.5, 0.3, np.random.default_rng(5), True)
    dx, da, db = lora.backward(dy, cache)
    assert rel_error(dx, numerical_grad(lambda v: f(v, a, bb), x, dy)) < 1e-8
    assert rel_error(da, numerical_grad(lambda v: f(x, v, bb), a, dy)) < 1e-8
    assert rel_error(db, numerical_grad(lambda v: f(x, a, v), bb, dy)) < 1e-8
    merged = lora.merged_weight(w, a, bb, 1.5)  # no dropout: the folded weight gives the same y
    assert np.allclose(x @ merged.T + b, lora.forward(x, w, b, a, bb, 1.5)[0], atol=1e-12)
    init = lora.init_params(5, 4, 3, rng, np.float64)
    assert np.abs(init["lora_A"]).max() <= 1 / np.sqrt(5) and not init["lora_B"].any()
