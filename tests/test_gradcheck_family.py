"""Prompt tuning, prefix tuning and IA3 (minadapt/nn/prompt.py, prefix.py, ia3.py): every backward
against centred differences in float64, and a backward with one sign flipped fails the same check.

The flipped versions change one line of the real backward (a minus where the maths has a plus),
through the op's own building blocks, so the test shows that the check sees that line, and that
the gradients here are not zero (a zero gradient passes a flipped check too).
"""
import numpy as np
import pytest

from minadapt.gradcheck import check
from minadapt.nn import attention, ia3, prefix, prompt, tanh

TOL = 1e-7
BAD = 1e-2  # a flipped sign gives a relative error near 1; anything above this is a real miss


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# --- prompt ---------------------------------------------------------------------------------------
def test_prompt(rng):
    w, p = rng.normal(size=(3, 4, 6)), rng.normal(size=(2, 6))
    dy = rng.normal(size=(3, 6, 6))
    out, cache = prompt.forward(w, p)
    assert out.shape == (3, 6, 6) and np.array_equal(out[1, :2], p) and np.array_equal(out[:, 2:], w)
    dw, dp = prompt.backward(dy, cache)
    assert check(lambda w_: prompt.forward(w_, p)[0], w, dy, dw) < TOL
    assert check(lambda p_: prompt.forward(w, p_)[0], p, dy, dp) < TOL
    # the prompt is shared by the batch: its gradient sums the sentences'. Taking one sentence's
    # (or negating it) fails.
    assert check(lambda p_: prompt.forward(w, p_)[0], p, dy, dy[0, :2]) > BAD
    assert check(lambda p_: prompt.forward(w, p_)[0], p, dy, -dp) > BAD


def test_prompt_mask_and_types():
    mask = np.array([[1, 1, 0], [1, 0, 0]])
    assert prompt.extend_mask(mask, 2).tolist() == [[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]]
    assert prompt.extend_types(np.ones((1, 2), np.int64), 2).tolist() == [[0, 0, 1, 1]]


# --- IA3 ------------------------------------------------------------------------------------------
def test_ia3(rng):
    x, l = rng.normal(size=(2, 3, 5)), 1 + 0.3 * rng.normal(size=5)
    dy = rng.normal(size=x.shape)
    _, cache = ia3.forward(x, l)
    dx, dl = ia3.backward(dy, cache)
    assert check(lambda x_: ia3.forward(x_, l)[0], x, dy, dx) < TOL
    assert check(lambda l_: ia3.forward(x, l_)[0], l, dy, dl) < TOL
    # dl = sum_rows dy * x; with a minus in it the check fails
    flipped = -(dy * x).reshape(-1, 5).sum(axis=0)
    assert check(lambda l_: ia3.forward(x, l_)[0], l, dy, flipped) > BAD


def test_ia3_ones_is_identity_and_merges(rng):
    x = rng.normal(size=(4, 5))
    assert np.array_equal(ia3.forward(x, ia3.init_params(5, np, np.float64))[0], x)
    w, b, l_out, l_in = rng.normal(size=(3, 5)), rng.normal(size=3), rng.normal(size=3), rng.normal(size=5)
    w_m, b_m = ia3.merged_output(w, b, l_out)
    np.testing.assert_allclose((x @ w.T + b) * l_out, x @ w_m.T + b_m, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose((x * l_in) @ w.T + b, x @ ia3.merged_input(w, l_in).T + b,
                               rtol=1e-12, atol=1e-12)


# --- prefix: attention with the prefix joined -----------------------------------------------------
def _prefix_case(rng, B=3, T=5, n=2, H=8):
    q, k, v = (rng.normal(size=(B, T, H)) for _ in range(3))
    pk, pv = rng.normal(size=(n, H)), rng.normal(size=(n, H))
    mask = np.ones((B, T), np.int64)
    mask[1, -2:] = 0
    bias = attention.mask_bias(mask, np.float64)
    dc = rng.normal(size=(B, T, H))
    return q, k, v, pk, pv, bias, dc


def test_prefix_attention(rng):
    q, k, v, pk, pv, bias, dc = _prefix_case(rng)
    nh = 2
    _, cache = prefix.forward(q, k, v, pk, pv, bias, nh)
    dq, dk, dv, dpk, dpv = prefix.backward(dc, cache)

    def f(q=q, k=k, v=v, pk=pk, pv=pv):
        return prefix.forward(q, k, v, pk, pv, bias, nh)[0]

    assert check(lambda a: f(q=a), q, dc, dq) < TOL
    assert check(lambda a: f(k=a), k, dc, dk) < TOL
    assert check(lambda a: f(v=a), v, dc, dv) < TOL
    assert check(lambda a: f(pk=a), pk, dc, dpk) < TOL
    assert check(lambda a: f(pv=a), pv, dc, dpv) < TOL


def test_prefix_gradient_is_the_attention_formula(rng):
    """dPk = sum_b ds[:, :, :, :n]^T q / sqrt(hs), dPv = sum_b a[:, :, :, :n]^T dc, per head: the
    docstring's formulas, written out here with the heads split, equal the backward's slice."""
    q, k, v, pk, pv, bias, dc = _prefix_case(rng)
    nh, n = 2, pk.shape[0]
    _, cache = prefix.forward(q, k, v, pk, pv, bias, nh)
    _, _, _, dpk, dpv = prefix.backward(dc, cache)
    a = cache.attn.a  # (B, nh, T, n+T)
    qh, dch = attention.split_heads(q, nh), attention.split_heads(dc, nh)
    vh = cache.attn.v
    da = dch @ vh.transpose(0, 1, 3, 2)
    ds = a * (da - (da * a).sum(axis=-1, keepdims=True))
    hs = q.shape[-1] // nh
    dpk_heads = (ds[..., :n].transpose(0, 1, 3, 2) @ qh / np.sqrt(hs)).sum(axis=0)  # (nh, n, hs)
    dpv_heads = (a[..., :n].transpose(0, 1, 3, 2) @ dch).sum(axis=0)
    np.testing.assert_allclose(dpk, dpk_heads.transpose(1, 0, 2).reshape(n, -1), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dpv, dpv_heads.transpose(1, 0, 2).reshape(n, -1), rtol=1e-12, atol=1e-12)


def test_prefix_sign_flipped_in_attention_backward_fails(rng, monkeypatch):
    """The prefix's gradient is attention's dK' and dV' sliced: flip the sign of the score term
    (dK' = ds^T q) in attention's backward and the prefix keys' check fails."""
    q, k, v, pk, pv, bias, dc = _prefix_case(rng)
    real = attention.backward

    def flipped(dc_, cache_):
        dq, dk, dv = real(dc_, cache_)
        return dq, -dk, dv

    _, cache = prefix.forward(q, k, v, pk, pv, bias, 2)
    monkeypatch.setattr(attention, "backward", flipped)
    _, _, _, dpk, dpv = prefix.backward(dc, cache)
    monkeypatch.undo()
    f = lambda a: prefix.forward(q, k, v, a, pv, bias, 2)[0]  # noqa: E731
    assert check(f, pk, dc, dpk) > BAD
    assert check(lambda a: prefix.forward(q, k, v, pk, a, bias, 2)[0], pv, dc, dpv) < TOL


def test_prefix_masks_nothing_of_the_prefix_and_pads_stay_masked(rng):
    q, k, v, pk, pv, bias, dc = _prefix_case(rng)
    _, cache = prefix.forward(q, k, v, pk, pv, bias, 2)
    a = cache.attn.a  # (B, nh, T, n+T)
    assert np.all(a[..., :2] > 0)  # every query sees the prefix
    assert np.all(a[1, :, :, -2:] == 0)  # sentence 1's [PAD] keys get nothing


def test_layer_kv_and_table_grad(rng):
    n, L, H = 2, 3, 4
    table = rng.normal(size=(n, 2 * L * H))
    pk1, pv1 = prefix.layer_kv(table, 1, H)
    # PEFT's view: (n, 2L, nh, hs) -> layer i's key is slot 2i, its value slot 2i + 1
    slots = table.reshape(n, 2 * L, H)
    assert np.array_equal(pk1, slots[:, 2]) and np.array_equal(pv1, slots[:, 3])
    dks = [rng.normal(size=(n, H)) for _ in range(L)]
    dvs = [rng.normal(size=(n, H)) for _ in range(L)]
    dtable = prefix.table_grad(dks, dvs)
    dy = np.concatenate([np.stack(dks), np.stack(dvs)], axis=0)  # (2L, n, H)

    def f(t):
        return np.stack([prefix.layer_kv(t, i, H)[0] for i in range(L)]
                        + [prefix.layer_kv(t, i, H)[1] for i in range(L)])

    assert check(f, table, dy, dtable) < TOL


# --- prefix: the reparameterisation ---------------------------------------------------------------
def _reparam_case(rng, n=3, L=2, H=4, width=5):
    params = prefix.init_reparam(n, L, H, width, rng, np.float64)
    dp = rng.normal(size=(n, 2 * L * H))
    return params, dp


def test_reparam(rng):
    p, dp = _reparam_case(rng)
    names = ("embedding", "w1", "b1", "w2", "b2")
    _, cache = prefix.reparam_forward(*(p[k] for k in names))
    grads = dict(zip(names, prefix.reparam_backward(dp, cache)))
    for name in names:
        def f(a, name=name):
            return prefix.reparam_forward(*(a if k == name else p[k] for k in names))[0]
        assert check(f, p[name], dp, grads[name]) < TOL, name


def test_reparam_sign_flipped_in_tanh_backward_fails(rng, monkeypatch):
    """Flip the sign of tanh's derivative (1 - t^2 -> t^2 - 1) inside the reparameterisation's
    backward: every gradient below the tanh (dE, dW1, db1) fails its check; dW2, db2 above it pass."""
    p, dp = _reparam_case(rng)
    names = ("embedding", "w1", "b1", "w2", "b2")
    _, cache = prefix.reparam_forward(*(p[k] for k in names))
    monkeypatch.setattr(tanh, "backward", lambda dy, c: (dy * (c.y * c.y - 1.0),))
    grads = dict(zip(names, prefix.reparam_backward(dp, cache)))
    monkeypatch.undo()
    for name in names:
        def f(a, name=name):
            return prefix.reparam_forward(*(a if k == name else p[k] for k in names))[0]
        err = check(f, p[name], dp, grads[name])
        assert (err > BAD) if name in ("embedding", "w1", "b1") else (err < TOL), name


def test_merge_is_the_table_the_mlp_makes(rng):
    p, _ = _reparam_case(rng)
    names = ("embedding", "w1", "b1", "w2", "b2")
    table = prefix.merge(*(p[k] for k in names))
    np.testing.assert_allclose(table, np.tanh(p["embedding"] @ p["w1"].T + p["b1"]) @ p["w2"].T + p["b2"],
                               rtol=1e-13, atol=1e-13)
