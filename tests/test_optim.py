"""AdamW against closed forms and a scalar re-implementation; schedule and clipping values."""
import math

import numpy as np
import pytest

from minadapt.optim import AdamW, clip_grad_norm, lr_schedule


def make_params(seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return {
        "encoder.layer.0.output.adapters.sst2.adapter_down.0.weight": rng.normal(size=(4, 6)).astype(dtype),
        "encoder.layer.0.output.adapters.sst2.adapter_down.0.bias": rng.normal(size=4).astype(dtype),
        "encoder.layer.0.output.LayerNorm.weight": rng.normal(size=6).astype(dtype),
        "heads.sst2.1.weight": rng.normal(size=(2, 6)).astype(dtype),
    }


def make_grads(params, seed):
    rng = np.random.default_rng(seed)
    return {k: rng.normal(size=p.shape).astype(p.dtype) for k, p in params.items()}


def scalar_adamw(p, grads, lrs, b1=0.9, b2=0.999, eps=1e-8, wd=0.0):
    """torch.optim.AdamW for one scalar parameter, in plain Python floats, written out longhand."""
    m = v = 0.0
    for t, (g, lr) in enumerate(zip(grads, lrs), start=1):
        p = p - lr * wd * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat = m / (1 - b1**t)
        v_hat = v / (1 - b2**t)
        p = p - lr * m_hat / (math.sqrt(v_hat) + eps)
    return p


def test_first_step_closed_form():
    # At t=1, m_hat = g and v_hat = g^2, so the step is lr * g / (|g| + eps): about lr * sign(g).
    params = make_params()
    before = {k: p.copy() for k, p in params.items()}
    grads = make_grads(params, 1)
    grads["heads.sst2.1.weight"][0, :3] = [1e-9, -3e-8, 0.0]  # where eps matters
    AdamW(params, lr=0.01, weight_decay=0.0).step(params, grads)
    for k in params:
        g = grads[k]
        np.testing.assert_allclose(params[k], before[k] - 0.01 * g / (np.abs(g) + 1e-8), rtol=1e-12, atol=1e-15)


def test_three_steps_match_scalar_reimplementation():
    params = make_params()
    start = {k: p.copy() for k, p in params.items()}
    grads = [make_grads(params, s) for s in (1, 2, 3)]
    lrs = [0.1, 0.05, 0.02]  # per-step rates, as a schedule passes them
    opt = AdamW(params, lr=123.0, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.3)
    for g, lr in zip(grads, lrs):
        opt.step(params, g, lr=lr)
    for k in params:
        wd = 0.0 if (k.endswith("bias") or "LayerNorm" in k) else 0.3
        for i in np.ndindex(params[k].shape):
            expected = scalar_adamw(start[k][i], [g[k][i] for g in grads], lrs, 0.8, 0.95, 1e-6, wd)
            assert params[k][i] == pytest.approx(expected, rel=1e-12, abs=1e-15), (k, i)


def test_weight_decay_applied_before_update_and_skipped_for_bias_and_layernorm():
    params = make_params()
    start = {k: p.copy() for k, p in params.items()}
    zero = {k: np.zeros_like(p) for k, p in params.items()}
    # With g = 0 the Adam step is 0, so only decay moves p: p <- (1 - lr * wd) p, once per step.
    opt = AdamW(params, lr=0.1, weight_decay=0.5)
    opt.step(params, zero)
    opt.step(params, zero)
    for k in params:
        factor = 1.0 if (k.endswith("bias") or "LayerNorm" in k) else (1 - 0.1 * 0.5) ** 2
        np.testing.assert_allclose(params[k], factor * start[k], rtol=1e-14)
    # Decay first: p1 = (1 - lr wd) p0 - lr g/(|g|+eps); decaying after the step would give
    # (1 - lr wd)(p0 - lr g/(|g|+eps)), which differs by lr^2 wd g/|g|.
    p = {"w": np.array([2.0])}
    AdamW(p, lr=0.1, weight_decay=0.5).step(p, {"w": np.array([3.0])})
    assert p["w"][0] == pytest.approx((1 - 0.05) * 2.0 - 0.1 * 3.0 / (3.0 + 1e-8), rel=1e-14)


def test_custom_no_decay():
    p = {"a": np.ones(3), "b": np.ones(3)}
    AdamW(p, lr=0.1, weight_decay=0.5, no_decay=lambda name: name == "a").step(p, {k: np.zeros(3) for k in p})
    assert np.all(p["a"] == 1.0) and np.allclose(p["b"], 0.95)


def test_params_not_in_grads_untouched_and_arrays_updated_in_place():
    params = make_params()
    arrays = {k: p for k, p in params.items()}
    start = {k: p.copy() for k, p in params.items()}
    only = "heads.sst2.1.weight"
    opt = AdamW(params, lr=0.1)
    opt.step(params, {only: np.ones_like(params[only])})
    for k in params:
        assert params[k] is arrays[k]  # same array objects, updated in place
        assert np.array_equal(params[k], start[k]) == (k != only)
    assert opt.state_dict()["step"] == {k: int(k == only) for k in params}


def test_unknown_gradient_name_is_an_error():
    params = make_params()
    with pytest.raises(KeyError, match="does not own"):
        AdamW(params).step(params, {"not.a.param": np.zeros(2)})


def test_state_dict_round_trip_continues_identically():
    params = make_params(dtype=np.float32)
    opt = AdamW(params, lr=0.01)
    for s in (1, 2):
        opt.step(params, make_grads(params, s))
    state = opt.state_dict()
    saved = {k: p.copy() for k, p in params.items()}
    assert all(isinstance(a, np.ndarray) for part in ("m", "v") for a in state[part].values())

    opt.step(params, make_grads(params, 3))  # the original run goes on
    opt.step(params, make_grads(params, 4))
    # the state dict is a snapshot, not a view of the live buffers
    assert state["step"] == {k: 2 for k in params}

    resumed = {k: p.copy() for k, p in saved.items()}
    opt2 = AdamW(resumed, lr=0.01)
    opt2.load_state_dict(state, resumed)
    opt2.step(resumed, make_grads(resumed, 3))
    opt2.step(resumed, make_grads(resumed, 4))
    for k in params:
        assert np.array_equal(resumed[k], params[k]), k
        assert opt2.m[k].dtype == np.float32
    # a fresh optimiser (no state) would not reproduce it: the test above can fail
    fresh = {k: p.copy() for k, p in saved.items()}
    opt3 = AdamW(fresh, lr=0.01)
    opt3.step(fresh, make_grads(fresh, 3))
    opt3.step(fresh, make_grads(fresh, 4))
    assert not all(np.array_equal(fresh[k], params[k]) for k in params)


def test_state_dict_snapshot_not_aliased():
    params = make_params()
    opt = AdamW(params)
    opt.step(params, make_grads(params, 1))
    state = opt.state_dict()
    m0 = {k: a.copy() for k, a in state["m"].items()}
    opt.step(params, make_grads(params, 2))
    assert all(np.array_equal(state["m"][k], m0[k]) for k in params)
    opt2 = AdamW(params)
    opt2.load_state_dict(state, params)
    opt2.step(params, make_grads(params, 3))
    assert all(np.array_equal(state["m"][k], m0[k]) for k in params)


def test_load_state_dict_rejects_mismatch():
    params = make_params()
    state = AdamW(params).state_dict()
    other = dict(params, extra=np.zeros(3))
    with pytest.raises(ValueError, match="missing \\['extra'\\]"):
        AdamW(other).load_state_dict(state, other)
    name = "heads.sst2.1.weight"
    state["m"][name] = np.zeros((3, 6))
    with pytest.raises(ValueError, match="heads.sst2.1.weight.*shape"):
        AdamW(params).load_state_dict(state, params)


def test_lr_schedule_values():
    base, total, warm = 2e-3, 1000, 100
    assert lr_schedule(0, total, warm, base) == 0.0
    assert lr_schedule(50, total, warm, base) == pytest.approx(1e-3)
    assert lr_schedule(warm, total, warm, base) == pytest.approx(base)
    assert lr_schedule(550, total, warm, base) == pytest.approx(1e-3)  # halfway down the decay
    assert lr_schedule(total, total, warm, base) == 0.0
    assert lr_schedule(total + 10, total, warm, base) == 0.0
    assert lr_schedule(0, total, 0, base) == pytest.approx(base)  # no warm-up


def test_clip_grad_norm_scales_large_and_leaves_small():
    grads = {"a": np.array([3.0, 0.0], dtype=np.float32), "b": np.array([[4.0]], dtype=np.float32)}
    norm = clip_grad_norm(grads, 1.0)
    assert isinstance(norm, float) and norm == pytest.approx(5.0)
    assert grads["a"].dtype == np.float32
    after = math.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in grads.values()))
    assert after == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_allclose(grads["a"], [0.6, 0.0], rtol=1e-5)  # direction kept
    np.testing.assert_allclose(grads["b"], [[0.8]], rtol=1e-5)

    small = {"a": np.array([0.3, 0.4])}
    assert clip_grad_norm(small, 1.0) == pytest.approx(0.5)
    assert np.array_equal(small["a"], [0.3, 0.4])


def test_clip_grad_norm_accumulates_in_float64():
    # Summing a million float32 squares in float32 is off by ~1e-7 relative; in float64, by ~1e-10.
    g = np.random.default_rng(0).normal(size=2**20).astype(np.float32)
    exact = math.sqrt(float(np.sum(g.astype(np.float64) ** 2)))
    assert clip_grad_norm({"g": g}, 1e9) == pytest.approx(exact, rel=1e-9)


def test_clip_grad_norm_non_finite_leaves_grads():
    grads = {"a": np.array([np.inf, 1.0])}
    assert clip_grad_norm(grads, 1.0) == math.inf
    assert grads["a"][1] == 1.0


@pytest.mark.gpu
def test_adamw_and_clipping_on_cupy_match_numpy():
    from minadapt.backend import gpu_available

    if not gpu_available():
        pytest.skip("needs CuPy and a CUDA device")
    import cupy

    params = make_params(dtype=np.float32)
    on_gpu = {k: cupy.asarray(p) for k, p in params.items()}
    opt, opt_gpu = AdamW(params, lr=0.01), AdamW(on_gpu, lr=0.01)
    for seed in (1, 2, 3):
        grads = make_grads(params, seed)
        grads_gpu = {k: cupy.asarray(g) for k, g in grads.items()}
        assert clip_grad_norm(grads_gpu, 1.0) == pytest.approx(clip_grad_norm(grads, 1.0), rel=1e-6)
        opt.step(params, grads)
        opt_gpu.step(on_gpu, grads_gpu)
    for k in params:
        assert isinstance(on_gpu[k], cupy.ndarray)
        np.testing.assert_allclose(cupy.asnumpy(on_gpu[k]), params[k], rtol=1e-5, atol=1e-7)
    state = opt_gpu.state_dict()
    assert all(isinstance(a, np.ndarray) for a in state["m"].values())
    resumed = AdamW(on_gpu)
    resumed.load_state_dict(state, on_gpu)
    assert all(isinstance(a, cupy.ndarray) for a in resumed.v.values())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_packed_parameters_step_as_one_vector_with_the_same_numbers(dtype):
    """Parameters that tile one vector (as Model packs them) take the whole-vector path; it gives
    bit-for-bit what the per-array path gives, decay and no-decay names alike, and clipping too."""
    from minadapt.packed import pack, packed_offsets

    loose = make_params(dtype=dtype)
    names = sorted(loose)
    vector, packed = pack({k: v.copy() for k, v in loose.items()}, names)
    assert packed_offsets(packed)[0] is vector and packed_offsets(loose) is None
    opts = {"loose": AdamW(loose, lr=0.05, weight_decay=0.3),
            "packed": AdamW(packed, lr=0.05, weight_decay=0.3)}
    assert opts["packed"]._packed is not None and opts["loose"]._packed is None
    for s in range(4):
        g_loose = make_grads(loose, s)
        for k in g_loose:
            g_loose[k] *= 10.0  # big enough to be clipped
        _, g_packed = pack(g_loose, names)
        norms = (clip_grad_norm(g_loose, 1.0), clip_grad_norm(g_packed, 1.0))
        assert norms[0] == pytest.approx(norms[1], rel=1e-14)
        for k in names:
            np.testing.assert_allclose(g_loose[k], g_packed[k], rtol=1e-6 if dtype == np.float32 else 1e-14)
            g_packed[k][...] = g_loose[k]  # the same gradients in, so the updates must agree exactly
        opts["loose"].step(loose, g_loose, lr=0.05 * (s + 1))
        opts["packed"].step(packed, g_packed, lr=0.05 * (s + 1))
    for k in names:
        assert np.array_equal(loose[k], packed[k]), k
    assert packed_offsets(packed)[0] is vector  # still views of the same vector, updated in place
    assert opts["packed"].state_dict()["step"] == {k: 4 for k in names}


def test_model_packs_its_trainable_parameters(tmp_path):
    from tiny import tiny_model, tiny_batch
    from minadapt.packed import packed_offsets

    model = tiny_model(dtype=np.float32)
    model.add_adapter("a", bottleneck=3)
    model.add_classification_head("a")
    trainable = {k: model.params[k] for k in model.trainable}
    assert packed_offsets(trainable) is not None
    ids, mask, types, labels = tiny_batch()
    from minadapt.parallel.cores import DataParallel

    # the data-parallel layer hands back the gradients as one vector, laid out like the parameters
    _, _, grads = DataParallel(model, n=1).loss_and_grads(ids, mask, types, labels)
    assert packed_offsets(grads)[1] == packed_offsets(trainable)[1]
    opt = AdamW(trainable)
    opt.step(model.params, grads)
    # an adapter file loads into the packed views in place
    path = model.save_adapter(tmp_path / "a.safetensors")
    other = tiny_model(dtype=np.float32)
    other.load_adapter(path, check_backbone=False)
    assert packed_offsets({k: other.params[k] for k in other.trainable}) is not None
    for k in model.trainable:
        np.testing.assert_array_equal(other.params[k], model.params[k])


def test_packed_adamw_equals_the_plain_one():
    """minadapt.optim.AdamW (in place, over one packed vector when the parameters tile one) gives
    the same parameters as nn/adamw.py's plain update, step after step, decay and no-decay names
    alike, with a changing learning rate and gradients from 1e-7 to 1e2."""
    from minadapt.nn import adamw
    from minadapt.optim import default_no_decay
    from minadapt.packed import pack

    base = make_params(3)
    names = sorted(base)
    vector, views = pack(base, names)  # the layout Model gives its trainable parameters
    packed = dict(views)
    opt = AdamW(packed, lr=1e-2, weight_decay=0.1)
    assert opt._packed is not None  # the whole-vector path is the one under test
    plain = {k: v.copy() for k, v in base.items()}
    state = {k: adamw.init(v) for k, v in plain.items()}
    rng = np.random.default_rng(7)
    for step in range(6):
        lr = 1e-2 * (step + 1) / 6
        grads = {k: rng.normal(size=p.shape) * 10.0 ** rng.integers(-7, 3, size=p.shape) for k, p in base.items()}
        opt.step(packed, grads, lr=lr)
        for k in names:
            wd = 0.0 if default_no_decay(k) else 0.1
            plain[k], state[k] = adamw.update(plain[k], grads[k], state[k], lr, weight_decay=wd)
    for k in names:
        np.testing.assert_allclose(packed[k], plain[k], rtol=1e-12, atol=1e-15, err_msg=k)
        np.testing.assert_allclose(opt.m[k], state[k].m, rtol=1e-12, atol=1e-300)


def test_plain_adamw_sign_and_decay_matter():
    """The comparison above can fail: a flipped step sign or an L2 decay moves the parameters."""
    from minadapt.nn import adamw

    p, g = np.ones(3), np.array([1.0, -2.0, 3.0])
    right, _ = adamw.update(p, g, adamw.init(p), 0.1, weight_decay=0.1)
    np.testing.assert_allclose(right, 0.99 - 0.1 * np.sign(g), rtol=1e-6)  # first step: lr * sign(g)
