"""Composed adapters (minadapt/compose.py) against AdapterHub in float64: Fuse, Stack, Parallel,
Average and BatchSplit (logits and loss to 1e-10, gradients to 1e-8), and AdapterHub's
average_adapter. The fixtures come from tests/make_composition_fixtures.py."""
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from minadapt import compose
from minadapt.config import BertConfig
from minadapt.model import Model

FIXTURE = Path(__file__).parent / "fixtures" / "composition.safetensors"
CONFIG = dict(vocab_size=20, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
              intermediate_size=24, max_position_embeddings=16, layer_norm_eps=1e-5)


@pytest.fixture(scope="module")
def ref():
    return load_file(str(FIXTURE))


def fixture_model(ref, ops="reference"):
    """The fixture's backbone with adapters a, b, c, heads a, b, c, f and Fuse(a, b)'s layers."""
    # copies: Model._put writes into existing arrays, and `ref` is shared by the module's tests
    params = {k[len("backbone."):]: v.copy() for k, v in ref.items() if k.startswith("backbone.")}
    model = Model(BertConfig(**CONFIG), params, backbone={"name": "fixture"}, ops=ops)
    for name in "abc":
        model.add_adapter(name, bottleneck=4, non_linearity="swish")
    for name in "pq":  # AdapterHub's SeqBnConfig: Pfeiffer, relu
        model.add_adapter(name, bottleneck=4, non_linearity="relu", architecture="pfeiffer")
    for name in "abcfg":
        model.add_classification_head(name, num_labels=2)
    model.put({k.split(".", 1)[1]: v.copy() for k, v in ref.items() if k.startswith(("adapter.", "fusion."))})
    return model


def inputs(ref):
    return (ref["inputs.input_ids"], ref["inputs.attention_mask"], ref["inputs.token_type_ids"],
            ref["labels"])


def rel(a, b):
    return float(np.max(np.abs(a - b)) / max(1e-30, float(np.max(np.abs(b)))))


def check(ref, key, loss, logits, grads):
    assert abs(float(loss) - float(ref[f"{key}.loss"])) < 1e-10
    for k, lg in logits.items():
        assert np.max(np.abs(lg - ref[f"{key}.logits{k}"])) < 1e-10, k
    want = {k[len(key) + 6:]: v for k, v in ref.items() if k.startswith(f"{key}.grad.")}
    assert set(grads) == set(want), set(grads) ^ set(want)
    for k, g in want.items():
        assert np.max(np.abs(grads[k] - g)) < 1e-8 * max(1.0, np.max(np.abs(g))), k


def trains(model, adapters, heads, fusion=()):
    names = set()
    for n in model.params:
        if any(f".adapters.{a}." in n for a in adapters) or any(n.startswith(f"heads.{h}.") for h in heads):
            names.add(n)
        if any(f".adapter_fusion_layer.{f}." in n for f in fusion):
            names.add(n)
    return names


@pytest.mark.parametrize("ops", ["reference", "fast"])
def test_fuse_equals_adapterhub(ref, ops):
    model = fixture_model(ref, ops)
    ids, mask, types, labels = inputs(ref)
    a, b = model.adapters["a"], model.adapters["b"]
    block = compose.Fuse(a, b)
    loss, (logits,), grads = compose.run_groups(model, ids, mask, types, [(block, "f", slice(None))],
                                                labels, trainable=trains(model, "", "f", ["a,b"]))
    check(ref, "fuse", loss, {"": logits}, grads)


def test_stack_equals_adapterhub(ref):
    model = fixture_model(ref)
    ids, mask, types, labels = inputs(ref)
    block = compose.Stack(model.adapters["a"], model.adapters["b"])
    loss, (logits,), grads = compose.run_groups(model, ids, mask, types, [(block, "b", slice(None))],
                                                labels, trainable=trains(model, "ab", "b"))
    check(ref, "stack", loss, {"": logits}, grads)


def test_average_equals_adapterhub(ref):
    model = fixture_model(ref)
    ids, mask, types, labels = inputs(ref)
    block = compose.Average(model.adapters["a"], model.adapters["b"], weights=[3, 1])
    loss, (logits,), grads = compose.run_groups(model, ids, mask, types, [(block, "a", slice(None))],
                                                labels, trainable=trains(model, "ab", "a"))
    check(ref, "average", loss, {"": logits}, grads)


def test_batchsplit_equals_adapterhub(ref):
    model = fixture_model(ref)
    ids, mask, types, labels = inputs(ref)
    a, b = model.adapters["a"], model.adapters["b"]
    loss, (la, lb), grads = compose.run_groups(model, ids, mask, types, [(a, "a", [0]), (b, "b", [1, 2])],
                                               labels, trainable=trains(model, "ab", "ab"))
    check(ref, "batchsplit", loss, {".a": la, ".b": lb}, grads)


def test_parallel_equals_adapterhub(ref):
    """Parallel: the batch once per block, as rows of one batch."""
    model = fixture_model(ref)
    ids, mask, types, labels = inputs(ref)
    B = len(ids)
    rep = [np.concatenate([x, x]) for x in (ids, mask, types, labels)]
    a, b = model.adapters["a"], model.adapters["b"]
    loss, (la, lb), grads = compose.run_groups(model, *rep[:3], [(a, "a", range(B)), (b, "b", range(B, 2 * B))],
                                               rep[3], trainable=trains(model, "ab", "ab"))
    check(ref, "parallel", loss, {".a": la, ".b": lb}, grads)


def test_average_adapter_equals_adapterhub(ref):
    model = fixture_model(ref)
    compose.average_adapter(model, "avg", ["a", "c"], weights=[2, 1])
    want = {k[len("average_adapter."):]: v for k, v in ref.items() if k.startswith("average_adapter.")}
    assert set(want) == model.trainable_names("avg")
    for k, v in want.items():  # AdapterHub adds the new adapter in float32: equal to its rounding
        assert v.dtype == np.float32 and np.array_equal(model.params[k].astype(np.float32), v), k


def test_average_adapter_refuses_different_shapes(ref):
    model = fixture_model(ref)
    model.add_adapter("wide", bottleneck=8)
    with pytest.raises(Exception, match="'a' and 'wide' differ"):
        compose.average_adapter(model, "avg", ["a", "wide"])
    with pytest.raises(Exception, match="no adapter 'zz'"):
        compose.average_adapter(model, "avg", ["a", "zz"])
    assert "avg" not in model.adapters


def test_parallel_logits_equal_adapterhub(ref):
    model = fixture_model(ref)
    ids, mask, types, _ = inputs(ref)
    out = compose.parallel_logits(model, ids, mask, types, ["a", "b"])
    for t in "ab":
        assert np.max(np.abs(out[t] - ref[f"parallel.logits.{t}"])) < 1e-10


def test_pfeiffer_fuse_and_stack_equal_adapterhub(ref):
    """Pfeiffer adapters read LayerNorm(o + h): Fuse's query and each stacked adapter read it too."""
    model = fixture_model(ref)
    ids, mask, types, labels = inputs(ref)
    p, q = model.adapters["p"], model.adapters["q"]
    loss, (logits,), grads = compose.run_groups(model, ids, mask, types, [(compose.Fuse(p, q), "g", slice(None))],
                                                labels, trainable=trains(model, "", "g", ["p,q"]))
    check(ref, "fuse_pf", loss, {"": logits}, grads)
    loss, (logits,), grads = compose.run_groups(model, ids, mask, types, [(compose.Stack(p, q), "g", slice(None))],
                                                labels, trainable=trains(model, "pq", "g"))
    check(ref, "stack_pf", loss, {"": logits}, grads)
