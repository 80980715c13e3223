"""Shards of a batch on the CPU's cores (minadapt/parallel.py): how a batch is cut, how the shards
run, and that a model gives the same loss, gradients and outputs whichever way the batch is cut."""
import os
import signal
import threading
import time

import numpy as np
import pytest

from minadapt import parallel
from minadapt.errors import ConfigError

from conftest import tiny_batch, tiny_model

needs_openblas = pytest.mark.skipif(parallel.openblas() is None,
                                    reason="shards need OpenBLAS (its thread count is set to 1)")


@needs_openblas
def test_shards_cut_the_batch_into_near_equal_slices(monkeypatch):
    monkeypatch.setenv("MINADAPT_THREADS", "2")
    assert parallel.shards(5) == [slice(0, 2), slice(2, 5)]
    assert parallel.shards(1) == [slice(0, 1)]  # never more shards than sentences
    monkeypatch.setenv("MINADAPT_THREADS", "3")
    assert parallel.shards(32) == [slice(0, 10), slice(10, 21), slice(21, 32)]
    monkeypatch.setenv("MINADAPT_THREADS", "1")
    assert parallel.shards(32) == [slice(0, 32)]


def test_one_shard_off_numpy(monkeypatch):
    monkeypatch.setenv("MINADAPT_THREADS", "2")
    assert parallel.shards(32, xp=object()) == [slice(0, 32)]  # e.g. CuPy: a GPU is one device


def test_threads_default_and_bad_value(monkeypatch):
    monkeypatch.delenv("MINADAPT_THREADS", raising=False)
    assert parallel.threads() == parallel.cores() >= 1
    for bad in ("two", "0", "-1", "1.5"):
        monkeypatch.setenv("MINADAPT_THREADS", bad)
        with pytest.raises(ConfigError, match=f"MINADAPT_THREADS='{bad}': expected a whole number"):
            parallel.threads()


@needs_openblas
def test_run_keeps_order_holds_blas_at_one_thread_and_restores_it(monkeypatch):
    monkeypatch.setenv("MINADAPT_THREADS", "2")
    get_threads = parallel.openblas()[1]("get_num_threads")
    before = get_threads()
    seen = []

    def work(s, tag):
        seen.append((threading.current_thread().name, get_threads(), parallel.shards(8)))
        return tag, s

    parts = parallel.shards(7)
    assert parallel.run(work, parts, ["a", "b"]) == [("a", parts[0]), ("b", parts[1])]
    assert get_threads() == before
    for name, blas_threads, nested in seen:
        assert name.startswith("minadapt-shard")
        assert blas_threads == 1
        assert nested == [slice(0, 8)]  # no shards inside a shard


@needs_openblas
def test_run_passes_a_shards_error_on_and_restores_blas(monkeypatch):
    get_threads = parallel.openblas()[1]("get_num_threads")
    before = get_threads()

    def work(s):
        if s.start > 0:
            raise RuntimeError("shard failed")
        return s

    with pytest.raises(RuntimeError, match="shard failed"):
        parallel.run(work, [slice(0, 2), slice(2, 4)])
    assert get_threads() == before


def test_child_rngs_follow_the_parent_state():
    a, b = np.random.default_rng(5), np.random.default_rng(5)
    ca, cb = parallel.child_rngs(a, 2), parallel.child_rngs(b, 2)
    assert [g.random() for g in ca] == [g.random() for g in cb]  # same parent state, same children
    assert ca[0].random() != ca[1].random()
    assert a.random() == b.random()  # and the parents moved on alike
    assert a.random() != np.random.default_rng(5).random()
    one = np.random.default_rng(5)
    assert parallel.child_rngs(one, 1) == [one]


@needs_openblas
@pytest.mark.parametrize("threads", ["2", "3"])
def test_model_gives_the_whole_batchs_loss_grads_and_outputs(monkeypatch, threads):
    """Shards of 5 sentences (2 + 3, or 1 + 2 + 2, padded rows among them) give the loss, logits,
    every gradient, and the hidden states of the batch run whole, to rounding."""
    model = tiny_model()
    model.add_adapter("a", bottleneck=3)
    model.add_classification_head("a")
    rng = np.random.default_rng(3)
    for k in model.trainable:  # away from the identity init, so every gradient is non-zero
        model.params[k][...] = 0.3 * rng.standard_normal(model.params[k].shape)
    ids, mask, types, labels = tiny_batch(B=5)
    results = {}
    for t in ("1", threads):
        monkeypatch.setenv("MINADAPT_THREADS", t)
        loss, logits, grads = model.loss_and_grads(ids, mask, types, labels, train=False)
        results[t] = (loss, logits, grads, model.logits(ids, mask, types), model.encode(ids, mask, types))
    (l1, z1, g1, y1, h1), (l2, z2, g2, y2, h2) = results["1"], results[threads]
    assert abs(l1 - l2) < 1e-12
    np.testing.assert_allclose(z2, z1, rtol=0, atol=1e-12)
    np.testing.assert_allclose(y2, y1, rtol=0, atol=1e-12)
    np.testing.assert_allclose(h2, h1, rtol=0, atol=1e-12)
    assert set(g2) == set(g1) == model.trainable
    for k in g1:
        assert np.abs(g1[k]).max() > 0, k
        np.testing.assert_allclose(g2[k], g1[k], rtol=0, atol=1e-12 * max(1, np.abs(g1[k]).max()))


@needs_openblas
def test_sharded_dropout_repeats_from_the_same_state(monkeypatch):
    monkeypatch.setenv("MINADAPT_THREADS", "2")
    model = tiny_model()
    model.add_adapter("a", bottleneck=3)
    model.add_classification_head("a")
    ids, mask, types, labels = tiny_batch(B=4)
    first = model.loss_and_grads(ids, mask, types, labels, rng=np.random.default_rng(9))
    again = model.loss_and_grads(ids, mask, types, labels, rng=np.random.default_rng(9))
    other = model.loss_and_grads(ids, mask, types, labels, rng=np.random.default_rng(10))
    assert first[0] == again[0] and first[0] != other[0]
    for k in first[2]:
        assert np.array_equal(first[2][k], again[2][k])


@needs_openblas
def test_inference_never_moves_the_dropout_generator(monkeypatch):
    """Evaluating between training steps (as `minadapt train` does every --eval-every steps) must
    not change the training run: logits, encode and an evaluation-mode loss draw nothing."""
    monkeypatch.setenv("MINADAPT_THREADS", "2")
    model = tiny_model()
    model.add_adapter("a", bottleneck=3)
    model.add_classification_head("a")
    ids, mask, types, labels = tiny_batch(B=4)
    before = model.rng.bit_generator.state
    model.logits(ids, mask, types)
    model.encode(ids, mask, types)
    model.loss_and_grads(ids, mask, types, labels, train=False)
    assert model.rng.bit_generator.state == before
    model.loss_and_grads(ids, mask, types, labels, train=True)
    assert model.rng.bit_generator.state != before


@needs_openblas
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_shards_run_in_a_forked_child(monkeypatch):
    """A process forked after shards have run (a data-loader worker, multiprocessing with fork)
    runs shards too: the thread pool it inherits must not leave its work waiting."""
    monkeypatch.setenv("MINADAPT_THREADS", "3")
    assert parallel.run(lambda s: s.stop, parallel.shards(6)) == [2, 4, 6]  # the parent's pool
    time.sleep(0.2)  # its threads idle now: a copied executor believes they will take the work
    monkeypatch.setenv("MINADAPT_THREADS", "2")
    pid = os.fork()
    if pid == 0:  # the child: exit 0 only if its shards ran
        code = 1
        try:
            code = 0 if parallel.run(lambda s: s.stop, parallel.shards(4)) == [2, 4] else 1
        finally:
            os._exit(code)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail("the forked child's shards never ran")
