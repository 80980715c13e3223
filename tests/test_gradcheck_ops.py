"""Every op's backward against centred finite differences, in float64 (relative error < 1e-7).

Each test perturbs one input at a time through `minadapt.gradcheck`; a flipped sign or a missing
term in a backward gives a relative error near 1, so these tests fail on any real mistake.
"""
import numpy as np
import pytest

from minadapt.gradcheck import check, rel_error
from minadapt.nn import (adapter, attention, cls_attention, dropout, embedding, gelu, layernorm,
                         linear, loss, relu, swish, tanh)

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
    y32, _ = gelu.forward(x.astype(np.float32))
    assert np.max(np.abs(y32 - exact)) < 2e-6  # the float32 erf approximation


def test_dropout_with_fixed_mask(rng):
    x = rng.normal(size=(4, 6))
    scale = dropout.make_scale(x.shape, 0.3, rng, x.dtype, np)
    p_used = round(0.3 * 65536) / 65536  # the mask draws 16-bit integers: p is rounded to 2^-16
    assert set(np.unique(scale)) == {0.0, np.float64(1 / (1 - p_used))}
    dy = rng.normal(size=x.shape)
    _, cache = dropout.forward(x, 0.3, scale=scale)
    (dx,) = dropout.backward(dy, cache)
    assert check(lambda x_: dropout.forward(x_, 0.3, scale=scale)[0], x, dy, dx) < TOL
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
    f = lambda *a: adapter.forward(*a, non_linearity=non_linearity)[0]
    _, cache = adapter.forward(h, wd, bd, wu, bu, non_linearity)
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


def _softmax_ref(s, padded):
    """softmax over the last axis in float64 with padded keys at exactly 0"""
    s = s.astype(np.float64)
    e = np.where(padded, 0.0, np.exp(s - np.where(padded, -np.inf, s).max(-1, keepdims=True)))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("case", ["row far below", "padded key 0", "all near", "all high",
                                  "no padding"])
def test_attention_softmax_shift(rng, case):
    """The softmax needs no shift when scores are moderate ("all near"), shifts by each head's
    maximum when some are large ("all high": exp(100) overflows float32), and falls back to each
    row's maximum when a row may lie too far below it (its exps would underflow): every case is the
    exact softmax, with padded keys and without."""
    B, nh, Tq, Tk = 2, 3, 4, 5
    s = rng.normal(size=(B, nh, Tq, Tk))
    padded = np.zeros((B, 1, 1, Tk), bool)
    if case != "no padding":
        padded[0, ..., -1] = True
    if case == "all high":
        s += 100.0
    if case == "row far below":
        s[0, 1, 2] -= 500.0  # with the head's maximum, this row's float32 exps would all be 0
    if case == "padded key 0":
        padded[1, ..., 0] = True  # the check reads key 0's score, so it cannot vouch for rows
    for dtype, tol in ((np.float64, 1e-15), (np.float32, 1e-6)):
        got = s.astype(dtype)
        want = _softmax_ref(got, padded)
        attention._softmax_block(got, np.where(padded, np.finfo(dtype).min, 0).astype(dtype))
        assert np.all(np.isfinite(got))
        assert rel_error(got, want) < tol


def test_gelu_without_cache_is_the_same_gelu(rng):
    """grad=False (inference) computes Phi(x) in y's memory: the same numbers, and no cache."""
    for dtype in (np.float32, np.float64):
        x = (rng.normal(size=(7, 300)) * 3).astype(dtype)
        y, cache = gelu.forward(x)
        y_inf, none = gelu.forward(x, grad=False)
        assert none is None and cache is not None
        assert np.array_equal(y, y_inf)


def _cls_attention_inputs(rng, B=2, Tq=1, Tk=5, H=8):
    q, x, _, bias = _attention_inputs(rng, B, Tq, Tk, H)
    w_k, w_v = rng.normal(size=(H, H)), rng.normal(size=(H, H))
    b_k, b_v = rng.normal(size=H), rng.normal(size=H)
    return q, x, w_k, b_k, w_v, b_v, bias


@pytest.mark.parametrize("train", [False, True])  # without and with dropout on the probabilities
def test_cls_attention_is_attention_over_projected_keys_and_values(rng, train):
    """Keys and values never formed give the same context as forming them (the key bias included:
    softmax ignores it), with the same dropout masks drawn."""
    q, x, w_k, b_k, w_v, b_v, bias = _cls_attention_inputs(rng)
    k, v = x @ w_k.T + b_k, x @ w_v.T + b_v
    c, _ = cls_attention.forward(q, x, w_k, w_v, b_v, bias, 2, 0.3, np.random.default_rng(5), train)
    want, _ = attention.forward(q, k, v, bias, 2, 0.3, np.random.default_rng(5), train)
    assert rel_error(c, want) < 1e-14


@pytest.mark.parametrize("Tq", [1, 3])
@pytest.mark.parametrize("train", [False, True])
def test_cls_attention(rng, Tq, train):
    q, x, w_k, _, w_v, b_v, bias = _cls_attention_inputs(rng, Tq=Tq)
    dc = rng.normal(size=q.shape)
    f = lambda q_, x_: cls_attention.forward(q_, x_, w_k, w_v, b_v, bias, 2, 0.3,  # noqa: E731
                                             np.random.default_rng(5), train)[0]
    _, cache = cls_attention.forward(q, x, w_k, w_v, b_v, bias, 2, 0.3, np.random.default_rng(5), train)
    dq, dx = cls_attention.backward(dc, cache)
    assert check(lambda t: f(t, x), q, dc, dq) < TOL
    assert check(lambda t: f(q, t), x, dc, dx) < TOL
    assert np.all(dx[1, -2:] == 0)  # padded tokens get no gradient
