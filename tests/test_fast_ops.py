"""Every fast op (minadapt.fast) against its reference op (minadapt.nn) in float64: forward and
backward on random inputs with padded sentences, to ~1e-12 relative. The reference ops are the
ones tests/test_gradcheck_ops.py checks against finite differences, so a fast op that equals its
reference is right. Ops whose random masks differ (dropout) are compared with dropout off, and
gradient-checked with it on.
"""
import numpy as np
import pytest

from minadapt import fast, nn
from minadapt.fast import attention as fast_attention
from minadapt.fast import cls_attention
from minadapt.fast import dropout as fast_dropout
from minadapt.fast import gelu as fast_gelu
from minadapt.fast import layernorm as fast_layernorm
from minadapt.fast import lora as fast_lora
from minadapt.fast import swish as fast_swish
from minadapt.fast.linear import Linear
from minadapt.gradcheck import check, rel_error

TOL = 1e-12


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def _padded(rng, B=3, T=7, H=24):
    """Hidden states (B, T, H) and the bias of a mask whose rows have 0, 2 and 5 [PAD] tokens."""
    x = rng.normal(size=(B, T, H))
    mask = np.ones((B, T))
    mask[1, -2:] = 0
    mask[2, -5:] = 0
    return x, nn.attention.mask_bias(mask, np.float64)


def _same(a, b):
    if a is None or b is None:
        assert a is None and b is None
        return
    assert a.shape == b.shape
    assert rel_error(a, b) < TOL


@pytest.mark.parametrize("frozen", [False, True])
def test_linear(rng, frozen):
    x, _ = _padded(rng)
    w, b, dy = rng.normal(size=(10, 24)), rng.normal(size=10), rng.normal(size=(3, 7, 10))
    op = Linear()
    y, cache = op.forward(x, w, b, frozen=frozen)
    y_ref, cache_ref = nn.linear.forward(x, w, b, frozen=frozen)
    _same(y, y_ref)
    assert op.copies == int(frozen)  # a W^T copy for a frozen weight only
    for got, want in zip(op.backward(dy, cache), nn.linear.backward(dy, cache_ref)):
        _same(got, want)


def test_linear_forgets_the_copy_of_a_weight_that_trains(rng):
    x, w, b = rng.normal(size=(4, 6)), rng.normal(size=(5, 6)), rng.normal(size=5)
    op = Linear()
    op.forward(x, w, b, frozen=True)
    op.forward(x, w, b, frozen=False)  # trains now: the copy would go stale with the first update
    w += 1.0
    y, _ = op.forward(x, w, b, frozen=True)
    _same(y, x @ w.T + b)


@pytest.mark.parametrize("trainable", [False, True])
def test_layernorm(rng, trainable):
    x, _ = _padded(rng)
    x = 3 * x + 1
    g, b, dy = rng.normal(size=24), rng.normal(size=24), rng.normal(size=x.shape)
    y, cache = fast_layernorm.forward(x, g, b, 1e-5, trainable)
    y_ref, cache_ref = nn.layernorm.forward(x, g, b, 1e-5, trainable)
    _same(y, y_ref)
    for got, want in zip(fast_layernorm.backward(dy, cache), nn.layernorm.backward(dy, cache_ref)):
        _same(got, want)


@pytest.mark.parametrize("fast_op, ref_op", [(fast_gelu, nn.gelu), (fast_swish, nn.swish)])
def test_elementwise(rng, fast_op, ref_op):
    x = rng.normal(size=(5, 300)) * 3  # several of the blocks fast.gelu cuts the rows into
    dy = rng.normal(size=x.shape)
    y, cache = fast_op.forward(x)
    y_ref, cache_ref = ref_op.forward(x)
    _same(y, y_ref)
    _same(fast_op.backward(dy, cache)[0], ref_op.backward(dy, cache_ref)[0])


def test_gelu_without_cache_is_the_same_gelu(rng):
    """grad=False (inference) computes Phi(x) in y's memory: the same numbers, and no cache."""
    for dtype in (np.float32, np.float64):
        x = (rng.normal(size=(7, 300)) * 3).astype(dtype)
        y, cache = fast_gelu.forward(x)
        y_inf, none = fast_gelu.forward(x, grad=False)
        assert none is None and cache is not None
        assert np.array_equal(y, y_inf)


def test_gelu_float32_is_close_to_the_exact_form(rng):
    """fast.gelu's float32 erf is an approximation: within a few float32 ulps of the exact GELU."""
    x = np.linspace(-12, 12, 40001)
    want, _ = nn.gelu.forward(x)
    got, _ = fast_gelu.forward(x.astype(np.float32))
    assert np.abs(got - want).max() < 2e-6


@pytest.mark.parametrize("Tq", [7, 1])  # self-attention, and a [CLS]-only query
def test_attention(rng, Tq):
    x, bias = _padded(rng)
    q, k, v = rng.normal(size=(3, Tq, 24)), x, rng.normal(size=x.shape)
    dc = rng.normal(size=(3, Tq, 24))
    c, cache = fast_attention.forward(q, k, v, bias, 4)
    c_ref, cache_ref = nn.attention.forward(q, k, v, bias, 4)
    _same(c, c_ref)
    for got, want in zip(fast_attention.backward(dc, cache), nn.attention.backward(dc, cache_ref)):
        _same(got, want)


def test_attention_with_dropout_gradients(rng):
    """Dropout's masks differ from the reference's (16-bit draws), so with dropout on the fast
    attention is held against finite differences, the same generator seed replaying its masks."""
    x, bias = _padded(rng)
    q, v, dc = rng.normal(size=x.shape), rng.normal(size=x.shape), rng.normal(size=x.shape)
    f = lambda q_, k_, v_: fast_attention.forward(q_, k_, v_, bias, 4, 0.2,  # noqa: E731
                                                  np.random.default_rng(5), True)[0]
    _, cache = fast_attention.forward(q, x, v, bias, 4, 0.2, np.random.default_rng(5), True)
    dq, dk, dv = fast_attention.backward(dc, cache)
    assert check(lambda t: f(t, x, v), q, dc, dq) < 1e-7
    assert check(lambda t: f(q, t, v), x, dc, dk) < 1e-7
    assert check(lambda t: f(q, x, t), v, dc, dv) < 1e-7


def _softmax_ref(s, padded):
    """softmax over the last axis in float64 with padded keys at exactly 0"""
    s = s.astype(np.float64)
    e = np.where(padded, 0.0, np.exp(s - np.where(padded, -np.inf, s).max(-1, keepdims=True)))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("case", ["row far below", "padded key 0", "all near", "all high",
                                  "no padding"])
def test_attention_softmax_shift(rng, case):
    """The fast softmax needs no shift when scores are moderate ("all near"), shifts by each head's
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
        fast_attention._softmax_block(got, np.where(padded, np.finfo(dtype).min, 0).astype(dtype))
        assert np.all(np.isfinite(got))
        assert rel_error(got, want) < tol


def test_dropout_is_inverted_dropout(rng):
    """The fast mask draws 16 random bits per element, so p is rounded to a multiple of 2^-16;
    given its mask, forward and backward are the reference's formula."""
    x, dy = rng.normal(size=(40, 60)), rng.normal(size=(40, 60))
    scale = fast_dropout.make_scale(x.shape, 0.3, rng, x.dtype, np)
    p_used = round(0.3 * 65536) / 65536
    assert set(np.unique(scale)) == {0.0, np.float64(1 / (1 - p_used))}
    y, cache = fast_dropout.forward(x, 0.3, scale=scale)
    _same(y, x * scale)
    _same(fast_dropout.backward(dy, cache)[0], dy * scale)


def _cls_inputs(rng, Tq=1):
    x, bias = _padded(rng)
    q = rng.normal(size=(3, Tq, 24))
    w_k, w_v, b_k, b_v = rng.normal(size=(24, 24)), rng.normal(size=(24, 24)), rng.normal(size=24), rng.normal(size=24)
    return q, x, w_k, b_k, w_v, b_v, bias


@pytest.mark.parametrize("Tq", [1, 3])
def test_cls_attention_is_reference_attention_over_projected_keys_and_values(rng, Tq):
    """Keys and values never formed give the reference attention's context and gradients (the
    key bias included: softmax ignores it)."""
    q, x, w_k, b_k, w_v, b_v, bias = _cls_inputs(rng, Tq)
    dc = rng.normal(size=q.shape)
    c, cache = cls_attention.forward(q, x, w_k, w_v, b_v, bias, 4)
    (k, k_cache), (v, v_cache) = nn.linear.forward(x, w_k, b_k), nn.linear.forward(x, w_v, b_v)
    c_ref, cache_ref = nn.attention.forward(q, k, v, bias, 4)
    _same(c, c_ref)
    dq, dx = cls_attention.backward(dc, cache)
    dq_ref, dk, dv = nn.attention.backward(dc, cache_ref)
    dx_ref = nn.linear.backward(dk, k_cache)[0] + nn.linear.backward(dv, v_cache)[0]
    _same(dq, dq_ref)
    _same(dx, dx_ref)


@pytest.mark.parametrize("Tq", [1, 3])
def test_cls_attention_with_dropout(rng, Tq):
    """With dropout: the same masks as fast attention over projected keys and values, and its
    gradients against finite differences."""
    q, x, w_k, b_k, w_v, b_v, bias = _cls_inputs(rng, Tq)
    c, _ = cls_attention.forward(q, x, w_k, w_v, b_v, bias, 4, 0.3, np.random.default_rng(5), True)
    want, _ = fast_attention.forward(q, x @ w_k.T + b_k, x @ w_v.T + b_v, bias, 4, 0.3,
                                     np.random.default_rng(5), True)
    _same(c, want)
    dc = rng.normal(size=q.shape)
    f = lambda q_, x_: cls_attention.forward(q_, x_, w_k, w_v, b_v, bias, 4, 0.3,  # noqa: E731
                                             np.random.default_rng(5), True)[0]
    _, cache = cls_attention.forward(q, x, w_k, w_v, b_v, bias, 4, 0.3, np.random.default_rng(5), True)
    dq, dx = cls_attention.backward(dc, cache)
    assert check(lambda t: f(t, x), q, dc, dq) < 1e-7
    assert check(lambda t: f(q, t), x, dc, dx) < 1e-7
    assert np.all(dx[2, -5:] == 0)  # padded tokens get no gradient


def test_lora_terms_added_in_place_equal_the_reference(rng):
    """fast.lora.add_to_slices writes into y itself; nn.lora.add_to_slices returns a new array and
    leaves y as it was (the reference path changes no op's output in place)."""
    y = rng.normal(size=(3, 7, 12))  # three 4-wide slices side by side, as Q|K|V
    deltas = {0: rng.normal(size=(3, 7, 4)), 2: rng.normal(size=(3, 7, 4))}
    y_before = y.copy()
    want = nn.lora.add_to_slices(y, deltas)
    assert want is not y and np.array_equal(y, y_before)
    assert np.array_equal(want[..., 4:8], y[..., 4:8])  # no term on the middle slice
    assert np.array_equal(want[..., 8:], y[..., 8:] + deltas[2])
    got = fast_lora.add_to_slices(y, deltas)
    assert got is y and np.array_equal(got, want)


def test_fast_ops_share_the_reference_caches_and_maths():
    """Where a fast op keeps what its reference keeps, it uses the reference's cache type, and its
    docstring carries the reference's maths instead of a copy of it."""
    for fast_op, ref_op, cache in [(fast_layernorm, nn.layernorm, "LayerNormCache"),
                                   (fast_swish, nn.swish, "SwishCache"),
                                   (fast_gelu, nn.gelu, "GeluCache"),
                                   (fast_dropout, nn.dropout, "DropoutCache"),
                                   (fast_lora, nn.lora, "LoraCache")]:
        assert getattr(fast_op, cache) is getattr(ref_op, cache)
        if fast_op is not fast_lora:
            assert fast_op.__doc__.endswith(ref_op.__doc__)


def test_every_fast_op_module_is_tested():
    """A new module in minadapt/fast needs its test here (or a reason in this list)."""
    import pkgutil

    tested = {"attention", "cls_attention", "dropout", "gelu", "layernorm", "linear", "lora", "swish"}
    not_ops = {"numerics", "cuda_kernels"}  # helpers of the ops above, and their GPU kernels
    elsewhere = {"cls_layer"}  # a whole layer: tests/test_gradcheck_model.py holds it against bert.layer_forward
    found = {m.name for m in pkgutil.iter_modules(fast.__path__)}
    assert found == tested | not_ops | elsewhere, found ^ (tested | not_ops | elsewhere)
