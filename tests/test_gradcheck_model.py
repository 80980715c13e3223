"""End-to-end gradient checks through a tiny random 2-layer BERT, in float64.

These catch what per-op checks cannot: a residual branch forgotten in the layer's backward, a
cache mixed up between layers, the [CLS]-only last layer, the fused Q|K|V split.
"""
import numpy as np
import pytest


from minadapt import bert
from minadapt.nn.attention import mask_bias
from minadapt.gradcheck import numerical_grad, rel_error
from tiny import tiny_batch, tiny_model

TOL = 1e-7


def _boost_head(model, factor=8.0):
    """Scale the head up so that gradients deep in the model are large against the ~1e-11 rounding
    noise of a finite difference of an O(1) loss."""
    for k in model.trainable:
        if k.startswith("heads."):
            model.params[k] *= factor


def _loss_fn(model, batch, train, seed):
    ids, mask, types, labels = batch

    def f(_):  # the parameter is perturbed in place inside model.params
        rng = np.random.default_rng(seed)  # the same dropout masks on every call
        return model.loss_and_grads(ids, mask, types, labels, train=train, rng=rng)[0]

    return f


@pytest.mark.parametrize("non_linearity", ["swish", "gelu", "relu"])
@pytest.mark.parametrize("train", [False, True])
def test_adapter_and_head_gradients(non_linearity, train):
    model = tiny_model()
    model.add_adapter("a", bottleneck=3, non_linearity=non_linearity, init_std=0.5)
    model.add_classification_head("a", num_labels=3)
    rng = np.random.default_rng(7)
    for k in sorted(model.trainable):  # move W_up off zero so every gradient is non-trivial
        model.params[k] += 0.3 * rng.standard_normal(model.params[k].shape)
    batch = tiny_batch()
    batch = (*batch[:3], np.array([0, 2, 1]))
    _, _, grads = model.loss_and_grads(*batch, train=train, rng=np.random.default_rng(3))
    assert set(grads) == model.trainable
    f = _loss_fn(model, batch, train, seed=3)
    for name in sorted(model.trainable):
        num = numerical_grad(f, model.params[name], np.array(1.0), h=1e-5)
        assert rel_error(grads[name], num) < TOL, name
        assert np.abs(grads[name]).max() > 0, name


def test_trainable_layer_norms_and_lowest_layer():
    model = tiny_model()
    model.add_adapter("a", bottleneck=2, train_layer_norms=True)
    model.add_classification_head("a")
    _boost_head(model)
    assert model.lowest_trainable_layer() == 0
    batch = tiny_batch()
    _, _, grads = model.loss_and_grads(*batch, train=False)
    f = _loss_fn(model, batch, False, 0)
    for name in [k for k in model.trainable if "LayerNorm" in k]:
        assert rel_error(grads[name], numerical_grad(f, model.params[name], np.array(1.0), h=1e-5)) < TOL, name


def test_full_fine_tuning_gradients():
    """With every parameter trainable, the encoder returns every gradient, embeddings included."""
    model = tiny_model(num_hidden_layers=2)
    model.add_classification_head("a")
    _boost_head(model)
    model.trainable.update(model.params)
    assert model.lowest_trainable_layer() == -1
    batch = tiny_batch()
    _, _, grads = model.loss_and_grads(*batch, train=False)
    f = _loss_fn(model, batch, False, 0)
    names = ["embeddings.word_embeddings.weight", "embeddings.LayerNorm.bias",
             "encoder.layer.0.attention.self.query.weight", "encoder.layer.0.attention.self.key.weight",
             "encoder.layer.1.attention.self.value.weight", "encoder.layer.1.attention.self.query.bias",
             "encoder.layer.0.intermediate.dense.weight", "encoder.layer.1.output.dense.bias",
             "encoder.layer.1.attention.output.dense.weight"]
    for name in names:
        assert rel_error(grads[name], numerical_grad(f, model.params[name], np.array(1.0), h=1e-5)) < TOL, name
    # The key bias adds the same q . b_k to every score of a row, which softmax ignores: its true
    # gradient is 0, so the relative error is meaningless; both sides must be ~0 instead (the
    # numerical one is rounding noise / h, ~1e-11).
    name = "encoder.layer.0.attention.self.key.bias"
    assert np.abs(grads[name]).max() < 1e-14, name
    assert np.abs(numerical_grad(f, model.params[name], np.array(1.0), h=1e-5)).max() < 1e-9, name


def test_encoder_gradient_wrt_embeddings_output():
    """encoder_backward's dx: d sum(h * dh) / d x0, x0 the embeddings' output."""
    model = tiny_model()
    ids, mask, types, _ = tiny_batch()
    run = bert.Run(ops=model.ops, train=False)
    x0, _ = bert.embeddings_forward(model.params, model.cfg, ids, types, run)
    bias = mask_bias(mask, np.float64)

    def layers(x):
        for i in range(model.cfg.num_hidden_layers):
            x, _ = bert.layer_forward(model.params, i, x, bias, model.qkv[i], model.cfg, run)
        return x

    h, caches = bert.encoder_forward(model.params, model.qkv, model.cfg, ids, mask, types, run)
    dh = np.random.default_rng(2).standard_normal(h.shape)
    dx, grads = bert.encoder_backward(dh, caches, run, lowest=0, return_dx=True)
    assert grads == {}
    assert rel_error(dx, numerical_grad(layers, x0, dh)) < TOL


@pytest.mark.parametrize("train_qkv", [False, True])  # cls_attention, or attention over formed k, v
def test_cls_only_last_layer_matches_full(train_qkv):
    """fast/cls_layer.py's last layer for [CLS] alone equals row 0 of bert.layer_forward, and so do
    its gradients (the adapters', and Q|K|V's when they train) and the gradient reaching x."""
    model = tiny_model()
    model.add_adapter("a", bottleneck=2)
    trainable = set(model.trainable)
    if train_qkv:
        trainable |= {f"encoder.layer.1.attention.self.{n}.{t}" for n in ("query", "key", "value")
                      for t in ("weight", "bias")}
    rng = np.random.default_rng(4)
    for k in sorted(model.trainable):
        model.params[k] += 0.3 * rng.standard_normal(model.params[k].shape)
    ids, mask, types, _ = tiny_batch()
    run = bert.Run(ops=model.ops, trainable=frozenset(trainable), adapter=model.config_of("a"))
    full, full_cache = bert.encoder_forward(model.params, model.qkv, model.cfg, ids, mask, types, run)
    cls, cls_cache = bert.encoder_forward(model.params, model.qkv, model.cfg, ids, mask, types, run,
                                          cls_only=True)
    assert cls.shape == (3, 1, 8) and cls_cache.cls_only
    assert rel_error(full[:, :1], cls) < 1e-14
    dcls = rng.standard_normal(cls.shape)
    dfull = np.zeros(full.shape)
    dfull[:, :1] = dcls
    dx_full, g_full = bert.encoder_backward(dfull, full_cache, run, lowest=1, return_dx=True)
    dx_cls, g_cls = bert.encoder_backward(dcls, cls_cache, run, lowest=1, return_dx=True)
    assert rel_error(dx_full, dx_cls) < 1e-13
    assert set(g_full) == set(g_cls) and any("attention.self" in k for k in g_cls) == train_qkv
    for k in g_full:
        if k.endswith("key.bias"):  # its true gradient is 0 (softmax ignores it): both ~1e-17
            assert np.abs(g_full[k]).max() < 1e-14 and np.abs(g_cls[k]).max() < 1e-14
            continue
        assert rel_error(g_full[k], g_cls[k]) < 1e-13, k


@pytest.mark.parametrize("ops", ["reference", "fast"])
def test_both_ops_give_the_same_model(ops):
    """The same tiny model and adapter on the reference ops and on the fast ones: loss, logits and
    every gradient agree to rounding (the fast path's last layer computes [CLS] alone)."""
    results = {}
    for name in ("reference", ops):
        model = tiny_model()
        model.set_ops(name)
        model.add_adapter("a", bottleneck=2, train_layer_norms=True)
        model.add_classification_head("a", num_labels=3)
        _boost_head(model)
        batch = (*tiny_batch()[:3], np.array([0, 2, 1]))
        results[name] = model.loss_and_grads(*batch, train=False) + (model.logits(*batch[:3]),)
    (l1, z1, g1, y1), (l2, z2, g2, y2) = results["reference"], results[ops]
    assert abs(l1 - l2) < 1e-13 and rel_error(z1, z2) < 1e-13 and rel_error(y1, y2) < 1e-13
    assert set(g1) == set(g2)
    for k in g1:
        assert rel_error(g1[k], g2[k]) < 1e-12, k


def test_the_reference_ops_run_no_fast_code():
    """ops="reference" takes no speed route: training steps (dropout on) and predictions of an
    adapter task, a LoRA task and prompt, prefix and IA3 tasks call no function of minadapt/fast,
    and the fast ops do (so the trace sees what it looks for)."""
    import sys
    from pathlib import Path

    import minadapt.fast

    fast_dir = str(Path(minadapt.fast.__file__).parent)

    def fast_calls(name):
        model = tiny_model()
        model.set_ops(name)
        model.add_adapter("a", bottleneck=2)
        model.add_classification_head("a", num_labels=2)
        model.add_lora("l", r=2, alpha=4.0, dropout=0.1, targets=("query", "key", "value"))
        model.add_classification_head("l", num_labels=2)
        for task, method in (("pt", "prompt"), ("px", "prefix"), ("ia", "ia3")):
            options = {"virtual_tokens": 2} if method != "ia3" else {}
            model.add(task, method, **options)
            model.add_classification_head(task, num_labels=2)
        ids, mask, types, labels = tiny_batch()
        seen = set()

        def trace(frame, event, arg):
            if event == "call" and frame.f_code.co_filename.startswith(fast_dir):
                seen.add(frame.f_code.co_name)

        sys.setprofile(trace)
        try:
            for task in ("a", "l", "pt", "px", "ia"):
                model.loss_and_grads(ids, mask, types, labels, adapter=task, train=True)
                model.logits(ids, mask, types, adapter=task)
        finally:
            sys.setprofile(None)
        return seen

    assert fast_calls("reference") == set()
    assert {"add_to_slices", "forward"} <= fast_calls("fast")


def test_query_key_value_train_together():
    model = tiny_model()
    model.add_classification_head("a")
    model.trainable.add("encoder.layer.1.attention.self.key.weight")
    with pytest.raises(ValueError, match="trainable together"):
        model.loss_and_grads(*tiny_batch(), train=False)


def test_transposed_copies_of_frozen_weights_follow_the_weights():
    """The fast linear's W^T copies (fast/linear.py) are made for the frozen backbone's linears,
    give the same outputs as the reference ops, and are dropped for a weight that starts to train."""
    model = tiny_model()
    model.add_classification_head("a")
    ids, mask, types, _ = tiny_batch(B=3)
    with_copies = model.logits(ids, mask, types)
    assert model.ops.linear.copies == 4 * model.cfg.num_hidden_layers  # Q|K|V, Wo, Wi, Wo2
    model.set_ops("reference")
    np.testing.assert_allclose(model.logits(ids, mask, types), with_copies, rtol=0, atol=1e-12)
    model = tiny_model()
    model.add_classification_head("a")
    name = "encoder.layer.1.intermediate.dense.weight"
    for _ in range(2):  # the last layer's W_q, a view made afresh on each call, finds its copy
        model.logits(ids, mask, types)
    assert model.ops.linear.copies == 4 * model.cfg.num_hidden_layers
    model.trainable.update({name, name.replace("weight", "bias")})
    model.loss_and_grads(ids, mask, types, np.array([0, 1, 0]), train=False)
    assert model.ops.linear.copies == 4 * model.cfg.num_hidden_layers - 1


def test_lowest_layer_attention_output_trains_alone():
    """Only the last layer's attention output dense (and the head) trains: backward stops right
    after its dW, skipping the attention backward that would only feed dx."""
    model = tiny_model()
    model.add_classification_head("a")
    _boost_head(model)
    name = "encoder.layer.1.attention.output.dense.weight"
    model.trainable.update({name, name.replace("weight", "bias")})
    assert model.lowest_trainable_layer() == 1
    batch = tiny_batch()
    _, _, grads = model.loss_and_grads(*batch, train=False)
    f = _loss_fn(model, batch, False, 0)
    for n in (name, name.replace("weight", "bias")):
        assert rel_error(grads[n], numerical_grad(f, model.params[n], np.array(1.0), h=1e-5)) < TOL, n
