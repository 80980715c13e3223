"""Adapters in some layers only (`adapter_layers`; AdapterHub's `leave_out`): against AdapterHub
(tests/make_depth_fixtures.py: logits, loss, every gradient in float64), its saved directory read
and written, gradients against centred differences on the tiny model, the option's refusals."""
import argparse
import json
from pathlib import Path

import numpy as np
import pytest

import minadapt
from minadapt.errors import ConfigError, WeightsError
from minadapt.gradcheck import numerical_grad, rel_error
from minadapt.io.weights import read_safetensors
from minadapt.methods import AdapterConfig, get
from minadapt.methods.bottleneck import layer_list

from tiny import tiny_batch, tiny_model

FIXTURES = Path(__file__).parent / "fixtures"
CASES = {"top2": ("hb", "houlsby", "swish", 2, (4, 5)), "odd": ("pf", "pfeiffer", "relu", (1, 3, 5), (1, 3, 5))}


@pytest.fixture(scope="module")
def ref():
    return read_safetensors(FIXTURES / "depth.safetensors")[0]


def _inputs(t):
    return t["inputs.input_ids"], t["inputs.attention_mask"], t["inputs.token_type_ids"]


@pytest.mark.parametrize("ops", ["fast", "reference"])
@pytest.mark.parametrize("key", sorted(CASES))
def test_matches_adapterhub_leave_out(ref, checkpoint_dir, ops, key):
    name, arch, act, layers, where = CASES[key]
    model = minadapt.load_model(checkpoint_dir, dtype="float64", ops=ops)
    model.add_adapter(name, bottleneck=12, architecture=arch, non_linearity=act, adapter_layers=layers)
    model.add_classification_head(name)
    assert model.config_of(name).layers(6) == where and model.lowest_trainable_layer(name) == where[0]
    stored = {k[len(key) + 7:]: v for k, v in ref.items() if k.startswith(key + ".param.")}
    assert set(stored) == model.trainable_names(name)  # no adapter where AdapterHub has none
    model.put(stored)
    loss, logits, grads = model.loss_and_grads(*_inputs(ref), ref["labels"], adapter=name, train=False)
    assert abs(float(loss) - float(ref[key + ".loss"])) < 1e-10
    assert np.abs(logits - ref[key + ".logits"]).max() < 1e-10
    assert set(grads) == set(stored)
    for k, g in grads.items():
        want = ref[f"{key}.grad.{k}"]
        assert np.abs(g - want).max() / np.abs(want).max() < 1e-8, k


def test_reads_and_writes_adapterhub_leave_out(ref, checkpoint_dir, tmp_path):
    model = minadapt.load_model(checkpoint_dir, dtype="float64")
    assert model.load_adapter(FIXTURES / "adapterhub_leave_out") == "hb"
    assert model.config_of("hb").adapter_layers == (4, 5) and model.lowest_trainable_layer("hb") == 4
    logits = model.logits(*_inputs(ref), adapter="hb")
    assert np.abs(logits - ref["top2.logits"]).max() < 1e-10
    d = model.save_adapter(tmp_path / "again", adapter="hb", format="adapterhub")
    assert json.loads((d / "adapter_config.json").read_text())["config"]["leave_out"] == [0, 1, 2, 3]
    model.remove("hb")
    assert model.load_adapter(d) == "hb"
    assert np.array_equal(model.logits(*_inputs(ref), adapter="hb"), logits)


def test_minadapt_file_keeps_the_layers(tmp_path):
    model = tiny_model()
    model.add_adapter("a", bottleneck=3, adapter_layers=1)
    model.add_classification_head("a")
    path = model.save_adapter(tmp_path / "a.safetensors", adapter="a")
    other = tiny_model()
    other.load_adapter(path)
    assert other.config_of("a").adapter_layers == 1
    assert other.trainable_names("a") == model.trainable_names("a")
    assert not any(k.startswith("encoder.layer.0.") for k in other.trainable_names("a"))


def test_a_bad_leave_out_is_named(tmp_path):
    model = tiny_model()
    model.add_adapter("a", bottleneck=3)
    model.add_classification_head("a")
    d = model.save_adapter(tmp_path / "a", adapter="a", format="adapterhub")
    config = json.loads((d / "adapter_config.json").read_text())
    config["config"]["leave_out"] = [0, 1]
    (d / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsError, match="leaves out every layer"):
        tiny_model().load_adapter(d)
    config["config"]["leave_out"] = [7]
    (d / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsError, match="leave_out=\\[7\\]"):
        tiny_model().load_adapter(d)


@pytest.mark.parametrize("ops", ["fast", "reference"])
@pytest.mark.parametrize("arch,layers", [("houlsby", 1), ("pfeiffer", (0,)), ("houlsby", (1,))])
def test_gradients_with_adapters_in_some_layers(ops, arch, layers):
    """Centred differences on the tiny 2-layer model, dropout on; backward stops at the lowest
    layer with an adapter, and what it returns still equals the numbers."""
    model = tiny_model()
    model.set_ops(ops)
    model.add_adapter("a", bottleneck=3, architecture=arch, adapter_layers=layers)
    model.add_classification_head("a", num_labels=3)
    lowest = model.config_of("a").layers(2)[0]
    assert model.lowest_trainable_layer("a") == lowest
    rng = np.random.default_rng(7)
    for k in sorted(model.trainable_names("a")):
        model.params[k] += 0.3 * rng.standard_normal(model.params[k].shape)
    batch = (*tiny_batch()[:3], np.array([0, 2, 1]))

    def f(_):
        return model.loss_and_grads(*batch, adapter="a", train=True, rng=np.random.default_rng(3))[0]

    _, _, grads = model.loss_and_grads(*batch, adapter="a", train=True, rng=np.random.default_rng(3))
    assert set(grads) == model.trainable_names("a")
    for k in sorted(grads):
        num = numerical_grad(f, model.params[k], np.array(1.0), h=1e-5)
        assert rel_error(grads[k], num) < 1e-7, k
        assert np.abs(grads[k]).max() > 0, k


def test_an_adapter_in_no_layer_changes_nothing_there():
    """Layer 0 without an adapter computes the bare layer: the same hidden states as a model with
    no adapter at all, up to the layer that has one."""
    model = tiny_model()
    model.add_adapter("a", bottleneck=3, adapter_layers=(1,))
    model.add_classification_head("a")
    rng = np.random.default_rng(0)
    for k in model.trainable_names("a"):
        model.params[k] += rng.standard_normal(model.params[k].shape)
    bare = tiny_model()
    bare.add_classification_head("a")
    bare.put({k: v for k, v in model.params.items() if k.startswith("heads.")})
    ids, mask, types = tiny_batch()[:3]
    assert not np.allclose(model.logits(ids, mask, types, adapter="a"), bare.logits(ids, mask, types))
    one = tiny_model(num_hidden_layers=1)
    with_one = tiny_model(num_hidden_layers=1)
    with_one.add_adapter("a", bottleneck=3, adapter_layers=(0,))
    for m in (one, with_one):
        m.params.update({k: v for k, v in model.params.items() if k.startswith("encoder.layer.0.")
                         and ".adapters." not in k})
    assert np.array_equal(one.encode(ids, mask, types), with_one.encode(ids, mask, types))


def test_refusals():
    with pytest.raises(ConfigError, match="adapter_layers 0"):
        AdapterConfig("a", adapter_layers=0)
    with pytest.raises(ConfigError, match="distinct"):
        AdapterConfig("a", adapter_layers=(1, 1))
    with pytest.raises(ConfigError, match="only 2 layers"):
        tiny_model().add_adapter("a", adapter_layers=3)
    with pytest.raises(ConfigError, match="layer 2 does not exist"):
        tiny_model().add_adapter("a", adapter_layers=(0, 2))
    assert layer_list("2") == 2 and layer_list("4,5") == (4, 5)
    for bad in ("0", "a", ",", "-1"):
        with pytest.raises(argparse.ArgumentTypeError):
            layer_list(bad)
    assert get("houlsby").make_config("t", {"adapter_layers": 2}).adapter_layers == 2
    with pytest.raises(ConfigError, match="only method houlsby or pfeiffer"):
        get("lora").make_config("t", {"adapter_layers": 2})
