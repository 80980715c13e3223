"""AdapterFusion's attention over adapters (minadapt/nn/fusion.py) against centred differences in
float64, with and without the value matrix and with dropout on the scores; and the check fails when
a sign in the backward is flipped."""
import inspect

import numpy as np
import pytest

from minadapt.gradcheck import check, numerical_grad
from minadapt.nn import fusion

TOL = 1e-7
R, N, H = (2, 3), 3, 5


def _inputs(seed=0, value=True):
    rng = np.random.default_rng(seed)
    x, u, r = rng.normal(size=(*R, H)), rng.normal(size=(*R, N, H)), rng.normal(size=(*R, H))
    # scores of order 1, so the softmax is neither flat nor saturated
    names = fusion.KEYS if value else fusion.KEYS[:4]
    w = {k: rng.normal(size=(H, H) if k.endswith("weight") else H) * 0.5 for k in names}
    return x, u, r, w, rng.normal(size=(*R, H))


def _run(x, u, r, w, train, forward=fusion.forward):
    rng = np.random.default_rng(7) if train else None  # the same mask at every call
    return forward(x, u, r, w["query.weight"], w["query.bias"], w["key.weight"], w["key.bias"],
                   w.get("value.weight"), p_drop=0.3 if train else 0.0, rng=rng, train=train)


@pytest.mark.parametrize("value", [True, False])
@pytest.mark.parametrize("train", [False, True])
def test_fusion_gradcheck(value, train):
    x, u, r, w, dy = _inputs(value=value)
    _, cache = _run(x, u, r, w, train)
    dx, du, dr, dwq, dbq, dwk, dbk, dwv = fusion.backward(dy, cache)
    assert check(lambda x_: _run(x_, u, r, w, train)[0], x, dy, dx) < TOL
    assert check(lambda u_: _run(x, u_, r, w, train)[0], u, dy, du) < TOL
    assert check(lambda r_: _run(x, u, r_, w, train)[0], r, dy, dr) < TOL
    got = {"query.weight": dwq, "query.bias": dbq, "key.weight": dwk, "key.bias": dbk,
           "value.weight": dwv}
    for k in w:
        def f(p_, k=k):
            return _run(x, u, r, {**w, k: p_}, train)[0]
        if k == "key.bias" and not train:
            # bk adds Q . bk to every adapter's score alike, and softmax ignores a shared shift:
            # its gradient is exactly 0 (with dropout the masks scale the scores apart, so not then)
            assert np.abs(numerical_grad(f, w[k], dy)).max() < 1e-8 and np.abs(got[k]).max() < 1e-12
            continue
        assert check(f, w[k], dy, got[k]) < TOL, k
    if not value:
        assert dwv is None


def test_fusion_is_a_softmax_over_adapters():
    x, u, r, w, _ = _inputs()
    y, cache = _run(x, u, r, w, False)
    assert np.allclose(cache.p.sum(-1), 1.0) and cache.p.shape == (*R, N)
    # with Wv = I the output is the p-weighted mix of the adapters' outputs, plus the residual
    w = {**w, "value.weight": np.eye(H)}
    y, cache = _run(x, u, r, w, False)
    assert np.allclose(y, (cache.p[..., None] * u).sum(-2) + r, atol=1e-14)


def test_fusion_init_is_adapterhub_s():
    p = fusion.init_params(6, np.random.default_rng(0), np.float64)
    assert np.all(np.diag(p["value.weight"]) == 1.0)
    assert np.allclose(p["value.weight"] - np.eye(6), 1e-6 * (1 - np.eye(6)))
    assert not p["query.bias"].any() and not p["key.bias"].any()
    assert "value.weight" not in fusion.init_params(6, np.random.default_rng(0), np.float64, value=False)


@pytest.mark.parametrize("line, flipped", [
    ("dV = p[..., None] * dy[..., None, :]", "dV = -p[..., None] * dy[..., None, :]"),
    ("ds = p * (dp - (p * dp).sum(axis=-1, keepdims=True))",
     "ds = p * (dp + (p * dp).sum(axis=-1, keepdims=True))"),
    ("dK = ds[..., None] * Q[..., None, :]", "dK = -ds[..., None] * Q[..., None, :]"),
    ("return dx, du_k + du_v, dr,", "return dx, du_k - du_v, dr,"),
])
def test_flipped_sign_fails(line, flipped):
    """The same backward with one sign flipped: the gradient check must see it."""
    src = inspect.getsource(fusion.backward)
    assert line in src
    namespace = dict(vars(fusion))
    exec(src.replace(line, flipped), namespace)
    wrong = namespace["backward"]
    x, u, r, w, dy = _inputs()
    _, cache = _run(x, u, r, w, False)
    dx, du, *_ = wrong(dy, cache)
    err = max(check(lambda x_: _run(x_, u, r, w, False)[0], x, dy, dx),
              check(lambda u_: _run(x, u_, r, w, False)[0], u, dy, du))
    assert err > 1e-2
