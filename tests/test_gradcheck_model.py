"""End-to-end gradient checks through a tiny random 2-layer BERT, in float64.

These catch what per-op checks cannot: a residual branch forgotten in the layer's backward, a
cache mixed up between layers, the [CLS]-only last layer, the fused Q|K|V split.
"""
import numpy as np
import pytest

from minadapt import bert
from minadapt.gradcheck import numerical_grad, rel_error
from tests.conftest import tiny_batch, tiny_model

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
    run = bert.Run(train=False)
    x0, _ = bert.embeddings_forward(model.params, model.cfg, ids, types, run)
    bias = bert.attention.mask_bias(mask, np.float64)

    def layers(x):
        for i in range(model.cfg.num_hidden_layers):
            x, _ = bert.layer_forward(model.params, i, x, bias, model.qkv[i], model.cfg, run)
        return x

    h, caches = bert.encoder_forward(model.params, model.qkv, model.cfg, ids, mask, types, run)
    dh = np.random.default_rng(2).standard_normal(h.shape)
    dx, grads = bert.encoder_backward(dh, caches, run, lowest=0, return_dx=True)
    assert grads == {}
    assert rel_error(dx, numerical_grad(layers, x0, dh)) < TOL


def test_cls_only_last_layer_matches_full():
    model = tiny_model()
    model.add_adapter("a", bottleneck=2)
    ids, mask, types, _ = tiny_batch()
    run = model._run(False)
    full, _ = bert.encoder_forward(model.params, model.qkv, model.cfg, ids, mask, types, run)
    cls, _ = bert.encoder_forward(model.params, model.qkv, model.cfg, ids, mask, types, run, cls_only=True)
    assert cls.shape == (3, 1, 8)
    assert rel_error(full[:, :1], cls) < 1e-14


def test_query_key_value_train_together():
    model = tiny_model()
    model.add_classification_head("a")
    model.trainable.add("encoder.layer.1.attention.self.key.weight")
    with pytest.raises(ValueError, match="trainable together"):
        model.loss_and_grads(*tiny_batch(), train=False)


def test_transposed_copies_of_frozen_weights_follow_the_weights():
    """The forward's contiguous W^T copies (nn/linear.py) give the same outputs as W.T, and follow a
    weight that is replaced or starts to train (then it has none: its copy would go stale)."""
    from minadapt.nn import linear

    model = tiny_model()
    model.add_classification_head("a")
    ids, mask, types, _ = tiny_batch(B=3)
    name = "encoder.layer.1.intermediate.dense.weight"
    copies = model._frozen_transposed()
    assert np.array_equal(copies[name], model.params[name].T) and copies[name].flags.c_contiguous
    assert np.array_equal(copies["qkv.0"], model.qkv[0][0].T)
    with_copies = model.logits(ids, mask, types)
    plain = linear.forward
    try:
        linear.forward = lambda x, w, b=None, frozen=False, w_t=None: plain(x, w, b, frozen)
        without = model.logits(ids, mask, types)
    finally:
        linear.forward = plain
    np.testing.assert_allclose(with_copies, without, rtol=0, atol=1e-12)
    model.params[name] = model.params[name] * 2.0
    assert np.array_equal(model._frozen_transposed()[name], model.params[name].T)
    model.trainable.add(name)
    assert name not in model._frozen_transposed()


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
