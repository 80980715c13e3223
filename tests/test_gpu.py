"""The same code on CuPy: every op, a short training run, and CPU <-> GPU adapter files.

Skipped, with the reason, where CuPy is not installed or sees no CUDA device (CI has none).
Run on a GPU machine with `python -m pytest tests/test_gpu.py -p no:nbmake -o addopts=''`.
"""
import dataclasses

import numpy as np
import pytest

from minadapt import backend
from minadapt.nn import (adapter, attention, dropout, embedding, gelu, layernorm, linear, loss,
                         relu, swish, tanh)

cupy = pytest.importorskip("cupy", reason="CuPy is not installed (pip install 'minadapt[gpu]')")
if not backend.gpu_available():
    pytest.skip("CuPy is installed but finds no CUDA device", allow_module_level=True)

TOL = 1e-10


def _same(cpu, gpu):
    """Each output of a GPU call against the CPU's, to TOL relative to its scale."""
    for c, g in zip(cpu, gpu):
        if c is None:
            assert g is None
            continue
        g = backend.to_numpy(g)
        assert g.shape == np.shape(c)
        scale = max(1.0, float(np.abs(c).max()))
        assert np.abs(g - c).max() <= TOL * scale


def _both(fn, *arrays):
    """fn on NumPy arrays and on the same values as CuPy arrays."""
    return fn(*arrays), fn(*(cupy.asarray(a) if isinstance(a, np.ndarray) else a for a in arrays))


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_elementwise_ops(rng):
    x, dy = rng.normal(size=(4, 9)), rng.normal(size=(4, 9))
    for op in (gelu, swish, relu, tanh):
        (yc, cc), (yg, cg) = _both(op.forward, x)
        _same([yc], [yg])
        _same(op.backward(dy, cc), op.backward(cupy.asarray(dy), cg))


def test_linear_layernorm_adapter(rng):
    x, w, b = rng.normal(size=(2, 3, 8)), rng.normal(size=(5, 8)), rng.normal(size=5)
    dy = rng.normal(size=(2, 3, 5))
    (yc, cc), (yg, cg) = _both(linear.forward, x, w, b)
    _same([yc], [yg])
    _same(linear.backward(dy, cc), linear.backward(cupy.asarray(dy), cg))
    g, bb = rng.normal(size=8), rng.normal(size=8)
    (yc, cc), (yg, cg) = _both(lambda *a: layernorm.forward(*a, 1e-12, True), x, g, bb)
    _same([yc], [yg])
    dx = rng.normal(size=x.shape)
    _same(layernorm.backward(dx, cc), layernorm.backward(cupy.asarray(dx), cg))
    wd, bd, wu, bu = (rng.normal(size=s) for s in [(3, 8), (3,), (8, 3), (8,)])
    (yc, cc), (yg, cg) = _both(adapter.forward, x, wd, bd, wu, bu)
    _same([yc], [yg])
    _same(adapter.backward(dx, cc), adapter.backward(cupy.asarray(dx), cg))


def test_attention_embedding_loss_dropout(rng):
    q, k, v = (rng.normal(size=(2, 5, 8)) for _ in range(3))
    mask = np.ones((2, 5))
    mask[1, -2:] = 0
    bias_c = attention.mask_bias(mask, np.float64)
    (cc_, cc), (cg_, cg) = (attention.forward(q, k, v, bias_c, 2),
                            attention.forward(*(cupy.asarray(t) for t in (q, k, v)),
                                              attention.mask_bias(cupy.asarray(mask), np.float64), 2))
    _same([cc_], [cg_])
    dc = rng.normal(size=q.shape)
    _same(attention.backward(dc, cc), attention.backward(cupy.asarray(dc), cg))
    ids, types = rng.integers(0, 6, size=(2, 4)), np.zeros((2, 4), np.int64)
    tables = rng.normal(size=(6, 3)), rng.normal(size=(7, 3)), rng.normal(size=(2, 3))
    (ec, ecache), (eg, egache) = _both(embedding.forward, ids, types, *tables)
    _same([ec], [eg])
    de = rng.normal(size=ec.shape)
    _same(embedding.backward(de, ecache), embedding.backward(cupy.asarray(de), egache))
    z, labels = rng.normal(size=(4, 3)), np.array([0, 2, 1, 1])
    (lc, lcache), (lg, lgache) = _both(loss.forward, z, labels)
    _same([lc], [lg])
    _same(loss.backward(1.0, lcache), loss.backward(1.0, lgache))
    scale = dropout.make_scale(z.shape, 0.3, rng, z.dtype, np)  # one mask for both
    (dc_, dcache), (dg_, dgache) = (dropout.forward(z, 0.3, scale=scale),
                                     dropout.forward(cupy.asarray(z), 0.3, scale=cupy.asarray(scale)))
    _same([dc_], [dg_])
    dz = rng.normal(size=z.shape)
    _same(dropout.backward(dz, dcache), dropout.backward(cupy.asarray(dz), dgache))


def _no_dropout(model):
    model.cfg = dataclasses.replace(model.cfg, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return model


def test_training_50_steps_same_losses(checkpoint_dir):
    """Dropout off (CPU and GPU draw different masks); float32; the same batches and updates."""
    import minadapt
    from minadapt.optim import AdamW, clip_grad_norm

    losses = {}
    texts = ["a gorgeous , witty movie", "dull and lifeless", "i loved it", "a mess from start to end"]
    labels = np.array([1, 0, 1, 0])
    for device in ("cpu", "gpu"):
        model = _no_dropout(minadapt.load_model(checkpoint_dir, device=device))
        model.add_adapter("sst2", bottleneck=16, seed=0)
        model.add_classification_head("sst2", dropout=0.0)
        opt = AdamW({k: model.params[k] for k in model.trainable}, lr=1e-3)
        batch = model.tokenizer.encode(texts)
        out = []
        for _ in range(50):
            loss_, _, grads = model.loss_and_grads(*batch, labels, train=True)
            clip_grad_norm(grads, 1.0)
            opt.step(model.params, grads)
            out.append(float(loss_))
        losses[device] = np.array(out)
    assert np.abs(losses["cpu"] - losses["gpu"]).max() < 1e-4
    assert losses["cpu"][-1] < losses["cpu"][0]  # it learned something


def test_adapter_trained_on_gpu_predicts_on_cpu(tmp_path, checkpoint_dir):
    import minadapt

    gpu = minadapt.load_model(checkpoint_dir, device="gpu")
    gpu.add_adapter("sst2", bottleneck=8)
    gpu.add_classification_head("sst2")
    for k in gpu.trainable:  # some non-identity values, as after training
        gpu.params[k] += 0.01 * cupy.random.default_rng(0).standard_normal(gpu.params[k].shape,
                                                                           dtype=cupy.float32)
    batch = gpu.tokenizer.encode(["what a lovely film", "a total bore"])
    want = backend.to_numpy(gpu.logits(*batch))
    path = gpu.save_adapter(tmp_path / "a.safetensors")
    cpu = minadapt.load_model(checkpoint_dir, device="cpu")
    cpu.load_adapter(path)
    assert np.abs(cpu.logits(*batch) - want).max() < 1e-4


def test_fused_kernels_at_model_sizes(rng):
    """The fused kernels (cuda_kernels.py) at the model's sizes: rows of H = 384, more values than
    a block has threads, the [CLS]-only query of the last layer, padded keys; float64 and float32."""
    for dtype, tol in ((np.float64, TOL), (np.float32, 1e-5)):
        x = rng.normal(size=(3, 37, 384)).astype(dtype)
        g, b = (1 + 0.1 * rng.normal(size=384)).astype(dtype), rng.normal(size=384).astype(dtype)
        dy = rng.normal(size=x.shape).astype(dtype)
        (yc, cc), (yg, cg) = _both(lambda *a: layernorm.forward(*a, 1e-12, False), x, g, b)
        dc, dg = layernorm.backward(dy, cc), layernorm.backward(cupy.asarray(dy), cg)
        for c_, g_ in ((yc, yg), (dc[0], dg[0])):
            assert np.abs(backend.to_numpy(g_) - c_).max() <= tol * max(1.0, np.abs(c_).max())
        mask = np.ones((3, 37))
        mask[1, 20:] = 0
        for tq in (37, 1):  # every query, then the [CLS] query alone
            q = rng.normal(size=(3, tq, 48)).astype(dtype)
            k, v = (rng.normal(size=(3, 37, 48)).astype(dtype) for _ in range(2))
            out_c, cache_c = attention.forward(q, k, v, attention.mask_bias(mask, dtype), 4)
            out_g, cache_g = attention.forward(*(cupy.asarray(t) for t in (q, k, v)),
                                               attention.mask_bias(cupy.asarray(mask), dtype), 4)
            dc_ = rng.normal(size=out_c.shape).astype(dtype)
            pairs = [(out_c, out_g), *zip(attention.backward(dc_, cache_c),
                                          attention.backward(cupy.asarray(dc_), cache_g))]
            for c_, g_ in pairs:
                assert np.abs(backend.to_numpy(g_) - c_).max() <= tol * max(1.0, np.abs(c_).max())


def test_fused_dropout_keeps_the_right_share_and_scales_by_the_same_mask():
    x = cupy.random.default_rng(1).standard_normal((256, 384), dtype=cupy.float32) + 3.0
    y, cache = dropout.forward(x, 0.1, cupy.random.default_rng(0), True)
    scale = backend.to_numpy(cache.scale)
    assert set(np.unique(scale)) == {np.float32(0.0), np.float32(1 / 0.9)}
    assert abs((scale == 0).mean() - 0.1) < 0.005  # 98k draws: 0.1 +- 0.001 (1 sigma)
    np.testing.assert_array_equal(backend.to_numpy(y), backend.to_numpy(x) * scale)
    dy = cupy.ones_like(x)
    np.testing.assert_array_equal(backend.to_numpy(dropout.backward(dy, cache)[0]), scale)
