"""Every reference op's backward (minadapt.nn) against centred finite differences, in float64
(relative error < 1e-7). tests/test_fast_ops.py holds the fast ops against these.

Each test perturbs one input at a time through `minadapt.gradcheck`; a flipped sign or a missing
term in a backward gives a relative error near 1, so these tests fail on any real mistake.
"""
import numpy as np
import pytest

from minadapt.gradcheck import check, rel_error
from minadapt.nn import (adapter, attention, dropout, embedding, gelu, layernorm, linear, loss, relu,
                         swish, tanh)

TOL = 1e-7


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_linear(rng):
    x, w, b = rng.normal(size=(2, 3, 5)), rng.normal(size=(4, 5)), rng.normal(size=4)
    dy = rng.normal(size=(2, 3, 4))
    _, cache = linear.forward(x, w, b)
    dx, dw, db = linear.backward(dy, cache)
    assert check(lambda x_: linear.forward(x_, w, b)[0], x, dy, dx) < TOL
    assert check(lambda w_: linear.forward(x, w_, b)[0], w, dy, dw) < TOL
    assert check(lambda b_: linear.forward(x, w, b_)[0], b, dy, db) < TOL


def test_linear_frozen_skips_weight_gradient(rng):
    x, w, b = rng.normal(size=(3, 5)), rng.normal(size=(4, 5)), rng.normal(size=4)
    y, cache = linear.forward(x, w, b, frozen=True)
    assert cache.x is None  # nothing kept for dW
    dx, dw, db = linear.backward(np.ones_like(y), cache)
    assert dw is None and db is None
    assert check(lambda x_: linear.forward(x_, w, b)[0], x, np.ones_like(y), dx) < TOL
    assert linear.backward(np.ones_like(y), cache, need_dx=False)[0] is None


@pytest.mark.parametrize("trainable", [False, True])
def test_layernorm(rng, trainable):
    x = rng.normal(size=(2, 3, 8)) * 3 + 1
    g, b = rng.normal(size=8), rng.normal(size=8)
    dy = rng.normal(size=x.shape)
    _, cache = layernorm.forward(x, g, b, eps=1e-5, trainable=trainable)
    dx, dg, db = layernorm.backward(dy, cache)
    assert check(lambda x_: layernorm.forward(x_, g, b, 1e-5)[0], x, dy, dx) < TOL
    if trainable:
        assert check(lambda g_: layernorm.forward(x, g_, b, 1e-5)[0], g, dy, dg) < TOL
        assert check(lambda b_: layernorm.forward(x, g, b_, 1e-5)[0], b, dy, db) < TOL
    else:
        assert dg is None and db is None


@pytest.mark.parametrize("op", [gelu, swish, tanh, relu])
def test_elementwise(rng, op):
    x = rng.normal(size=(3, 7)) * 2
    if op is relu:  # keep clear of the kink at 0, where the derivative does not exist
        x = np.where(np.abs(x) < 1e-3, 0.5, x)
    dy = rng.normal(size=x.shape)
    _, cache = op.forward(x)
    (dx,) = op.backward(dy, cache)
    assert check(lambda x_: op.forward(x_)[0], x, dy, dx) < TOL


def test_gelu_is_exact_erf_form():
    import math

    x = np.linspace(-5, 5, 101)
    y, _ = gelu.forward(x)
    exact = np.array([v * 0.5 * (1 + math.erf(v / math.sqrt(2))) for v in x])
    assert np.max(np.abs(y - exact)) < 1e-15


def test_dropout(rng):
    x = rng.normal(size=(40, 60))
    y, cache = dropout.forward(x, 0.3, np.random.default_rng(4))
    kept = y != 0
    assert abs(kept.mean() - 0.7) < 0.03  # each element kept with probability 1 - p
    assert np.allclose(y[kept], x[kept] / 0.7)  # and scaled by 1 / (1 - p)
    dy = rng.normal(size=x.shape)
    (dx,) = dropout.backward(dy, cache)
    # replaying the generator's seed draws the same mask
    assert check(lambda x_: dropout.forward(x_, 0.3, np.random.default_rng(4))[0], x, dy, dx) < TOL
    y_eval, cache_eval = dropout.forward(x, 0.3, rng, train=False)
    assert y_eval is x and cache_eval is None


def _attention_inputs(rng, B=2, Tq=5, Tk=5, H=8):
    q, k, v = rng.normal(size=(B, Tq, H)), rng.normal(size=(B, Tk, H)), rng.normal(size=(B, Tk, H))
    mask = np.ones((B, Tk))
    mask[1, -2:] = 0  # the second sentence has two [PAD] tokens
    return q, k, v, attention.mask_bias(mask, np.float64)


@pytest.mark.parametrize("Tq", [5, 1])  # full self-attention, and the [CLS]-only query
def test_attention(rng, Tq):
    q, k, v, bias = _attention_inputs(rng, Tq=Tq)
    dc = rng.normal(size=(2, Tq, 8))
    f = lambda q_, k_, v_: attention.forward(q_, k_, v_, bias, n_heads=2)[0]
    _, cache = attention.forward(q, k, v, bias, n_heads=2)
    dq, dk, dv = attention.backward(dc, cache)
    assert check(lambda t: f(t, k, v), q, dc, dq) < TOL
    assert check(lambda t: f(q, t, v), k, dc, dk) < TOL
    assert check(lambda t: f(q, k, t), v, dc, dv) < TOL
    assert np.all(dk[1, -2:] == 0) and np.all(dv[1, -2:] == 0)  # padded keys get no gradient


def test_attention_masks_padding(rng):
    q, k, v, bias = _attention_inputs(rng)
    c, cache = attention.forward(q, k, v, bias, n_heads=2)
    assert np.all(cache.a[1, :, :, -2:] == 0)
    k2, v2 = k.copy(), v.copy()
    k2[1, -2:], v2[1, -2:] = 99.0, -99.0  # whatever sits at [PAD] positions changes nothing
    c2, _ = attention.forward(q, k2, v2, bias, n_heads=2)
    assert rel_error(c, c2) < 1e-15


def test_attention_with_dropout(rng):
    q, k, v, bias = _attention_inputs(rng)
    dc = rng.normal(size=q.shape)
    _, cache = attention.forward(q, k, v, bias, 2, p_drop=0.2, rng=np.random.default_rng(5), train=True)
    dq, dk, dv = attention.backward(dc, cache)
    # replaying the same generator seed gives the same dropout mask on every call
    f = lambda q_, k_, v_: attention.forward(q_, k_, v_, bias, 2, 0.2, np.random.default_rng(5), True)[0]
    assert check(lambda t: f(t, k, v), q, dc, dq) < TOL
    assert check(lambda t: f(q, t, v), k, dc, dk) < TOL
    assert check(lambda t: f(q, k, t), v, dc, dv) < TOL


def test_embedding(rng):
    ids = np.array([[1, 4, 4, 0], [2, 3, 1, 4]])  # repeated ids must add up
    types = np.array([[0, 0, 1, 1], [0, 1, 1, 1]])
    ww, wp, wt = rng.normal(size=(6, 3)), rng.normal(size=(7, 3)), rng.normal(size=(2, 3))
    de = rng.normal(size=(2, 4, 3))
    _, cache = embedding.forward(ids, types, ww, wp, wt)
    dww, dwp, dwt = embedding.backward(de, cache)
    assert check(lambda t: embedding.forward(ids, types, t, wp, wt)[0], ww, de, dww) < TOL
    assert check(lambda t: embedding.forward(ids, types, ww, t, wt)[0], wp, de, dwp) < TOL
    assert check(lambda t: embedding.forward(ids, types, ww, wp, t)[0], wt, de, dwt) < TOL


def test_cross_entropy(rng):
    z, labels = rng.normal(size=(5, 3)), np.array([0, 2, 1, 1, 0])
    _, cache = loss.forward(z, labels)
    (dz,) = loss.backward(1.0, cache)
    assert check(lambda z_: loss.forward(z_, labels)[0], z, np.array(1.0), dz) < TOL
    value, _ = loss.forward(z, labels)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    assert abs(value - (-np.log(p[np.arange(5), labels]).mean())) < 1e-14


@pytest.mark.parametrize("non_linearity", ["swish", "gelu", "relu"])
def test_adapter(rng, non_linearity):
    h = rng.normal(size=(2, 3, 8))
    wd, bd, wu, bu = (rng.normal(size=s) for s in [(4, 8), (4,), (8, 4), (8,)])
    dy = rng.normal(size=h.shape)
    act = adapter.NON_LINEARITIES[non_linearity]
    f = lambda *a: adapter.forward(*a, act=act)[0]  # noqa: E731
    _, cache = adapter.forward(h, wd, bd, wu, bu, act)
    dh, dwd, dbd, dwu, dbu = adapter.backward(dy, cache)
    assert check(lambda t: f(t, wd, bd, wu, bu), h, dy, dh) < TOL
    assert check(lambda t: f(h, t, bd, wu, bu), wd, dy, dwd) < TOL
    assert check(lambda t: f(h, wd, t, wu, bu), bd, dy, dbd) < TOL
    assert check(lambda t: f(h, wd, bd, t, bu), wu, dy, dwu) < TOL
    assert check(lambda t: f(h, wd, bd, wu, t), bu, dy, dbu) < TOL


def test_adapter_init_is_identity(rng):
    p = adapter.init_params(8, 4, rng, np.float64)
    h = rng.normal(size=(2, 3, 8))
    y, _ = adapter.forward(h, p["adapter_down.0.weight"], p["adapter_down.0.bias"],
                           p["adapter_up.weight"], p["adapter_up.bias"])
    assert np.array_equal(y, h)
    assert np.any(p["adapter_down.0.weight"] != 0)
