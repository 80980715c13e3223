"""Shards of a batch on the CPU's cores (minadapt/parallel/cores.py): how a batch is cut, how the shards
run, and that a model gives the same loss, gradients and outputs whichever way the batch is cut."""
import os
import signal
import time

import numpy as np
import pytest

from minadapt.parallel import cores as parallel
from minadapt.errors import ConfigError

from tiny import tiny_batch, tiny_model

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


def _two_shards_of_an_adapted_model(monkeypatch):
    """A tiny model with an adapter and a head, its DataParallel, and a batch of 4 that runs as
    two shards."""
    monkeypatch.setenv("MINADAPT_THREADS", "2")
    model = tiny_model()
    model.add_adapter("a", bottleneck=3)
    model.add_classification_head("a")
    return model, parallel.DataParallel(model), tiny_batch(B=4)


class Probe:
    """A stand-in for a model: what a shard sees of its process and of shared memory."""

    def __init__(self):
        self.shared = parallel.shared_empty(3, np.float64)
        self.shared[...] = 0
        self.private = np.zeros(3)

    def look(self, i):
        get_threads = parallel.openblas()[1]("get_num_threads")
        return os.getpid(), get_threads(), parallel.shards(8), float(self.shared[i]), self.private[i]

    def write(self, i, slot):
        slot[...] = i + 1
        return i

    def fail(self, i):
        if i == 1:
            raise ValueError(f"shard {i} failed")
        return i


@needs_openblas
def test_workers_run_shards_in_other_processes_that_see_shared_memory():
    probe = Probe()
    workers = parallel.Workers(probe, 3, slot_size=2)
    try:
        probe.shared[...] = [1, 2, 3]  # after the fork: shared memory carries it over
        probe.private[...] = 7  # ordinary memory does not: the workers keep their copy
        get_threads = parallel.openblas()[1]("get_num_threads")
        before = get_threads()
        seen = workers.map(probe, Probe.look, [(0,), (1,), (2,)])
        assert get_threads() == before
        assert [s[0] for s in seen] == [os.getpid(), *workers.pids] and len(set(workers.pids)) == 2
        assert [s[1] for s in seen] == [1, 1, 1]  # single-threaded BLAS in every shard
        assert [s[2] for s in seen] == [[slice(0, 8)]] * 3  # no shards inside a shard
        assert [s[3] for s in seen] == [1, 2, 3]
        assert [s[4] for s in seen] == [7, 0, 0]
        assert workers.map(probe, Probe.write, [(0,), (1,), (2,)], slots=True) == [0, 1, 2]
        assert workers.slots.tolist() == [[1, 1], [2, 2], [3, 3]]
    finally:
        workers.close()
    assert not workers.alive


@needs_openblas
def test_a_shards_error_reaches_the_caller_and_the_workers_go_on():
    probe = Probe()
    workers = parallel.Workers(probe, 2)
    try:
        with pytest.raises(ValueError, match="shard 1 failed") as info:
            workers.map(probe, Probe.fail, [(0,), (1,)])
        assert "in shard worker process" in "".join(getattr(info.value, "__notes__", ["in shard worker process"]))
        assert workers.map(probe, Probe.fail, [(0,), (2,)]) == [0, 2]  # the pipes are still in step
    finally:
        workers.close()


@needs_openblas
def test_a_dead_worker_is_an_error_that_says_so(monkeypatch):
    model, dp, (ids, mask, types, labels) = _two_shards_of_an_adapted_model(monkeypatch)
    dp.logits(ids, mask, types)
    workers = dp._workers
    os.kill(workers.pids[0], signal.SIGKILL)
    workers._procs[0].join()
    assert not workers.alive
    dp.logits(ids, mask, types)  # a dead worker found before the call: new workers
    assert dp._workers is not workers and dp._workers.alive
    os.kill(dp._workers.pids[0], signal.SIGKILL)
    time.sleep(0.2)
    here = parallel._Shard(model, "a", None, dp.shapes)
    calls = [(False, ids[:2], mask[:2], types[:2], 0.5, None), (True, ids[2:], mask[2:], types[2:], 0.5, None)]
    with pytest.raises(parallel.WorkerError, match="died"):  # ... or during it
        dp._workers.map(here, parallel._Shard.logits, calls)
    dp.close()


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
def test_data_parallel_gives_the_whole_batchs_loss_grads_and_outputs(monkeypatch, threads):
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
        with parallel.DataParallel(model) as dp:
            loss, logits, grads = dp.loss_and_grads(ids, mask, types, labels, train=False)
            results[t] = (loss, logits, grads, dp.logits(ids, mask, types), dp.encode(ids, mask, types))
            assert len(dp.pids) == int(t) - 1
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
def test_workers_follow_the_tasks_parameters(monkeypatch):
    """Training changes the task's parameters in place between calls: the workers see each change
    (the parent sends them before every call), and their answers equal the model's own."""
    model, dp, (ids, mask, types, labels) = _two_shards_of_an_adapted_model(monkeypatch)
    rng = np.random.default_rng(1)
    losses = []
    for _ in range(3):
        for k in model.trainable:  # in place, as AdamW does
            model.params[k][...] = 0.3 * rng.standard_normal(model.params[k].shape)
        whole = model.loss_and_grads(ids, mask, types, labels, train=False)
        sharded = dp.loss_and_grads(ids, mask, types, labels, train=False)
        assert abs(whole[0] - sharded[0]) < 1e-12
        for k in whole[2]:
            np.testing.assert_allclose(sharded[2][k], whole[2][k], rtol=0, atol=1e-12)
        losses.append(float(sharded[0]))
    assert len(set(losses)) == 3
    pids = dp.pids
    assert len(pids) == 1 and pids[0] != os.getpid()
    os.kill(pids[0], 0)  # a live process (signal 0 only checks)
    dp.close()
    assert dp.pids == []


@needs_openblas
def test_data_parallel_runs_one_task_of_several(monkeypatch):
    """A model with two tasks: the DataParallel of one gives that task's logits and gradients only."""
    model, _, (ids, mask, types, labels) = _two_shards_of_an_adapted_model(monkeypatch)
    model.add_adapter("b", bottleneck=2, seed=4)
    model.add_classification_head("b", num_labels=3, seed=4)
    with parallel.DataParallel(model, adapter="b") as dp:
        loss, logits, grads = dp.loss_and_grads(ids, mask, types, labels, train=False)
        assert logits.shape == (4, 3) and set(grads) == model.trainable_names("b")
        np.testing.assert_allclose(dp.logits(ids, mask, types), model.logits(ids, mask, types, adapter="b"),
                                   rtol=0, atol=1e-12)


@needs_openblas
def test_sharded_dropout_repeats_from_the_same_state(monkeypatch):
    model, dp, (ids, mask, types, labels) = _two_shards_of_an_adapted_model(monkeypatch)
    first = dp.loss_and_grads(ids, mask, types, labels, rng=np.random.default_rng(9))
    again = dp.loss_and_grads(ids, mask, types, labels, rng=np.random.default_rng(9))
    other = dp.loss_and_grads(ids, mask, types, labels, rng=np.random.default_rng(10))
    assert first[0] == again[0] and first[0] != other[0]
    for k in first[2]:
        assert np.array_equal(first[2][k], again[2][k])


@needs_openblas
def test_inference_never_moves_the_dropout_generator(monkeypatch):
    """Evaluating between training steps (as `minadapt train` does every --eval-every steps) must
    not change the training run: logits, encode and an evaluation-mode loss draw nothing."""
    model, dp, (ids, mask, types, labels) = _two_shards_of_an_adapted_model(monkeypatch)
    before = model.rng.bit_generator.state
    dp.logits(ids, mask, types)
    dp.encode(ids, mask, types)
    dp.loss_and_grads(ids, mask, types, labels, train=False)
    assert model.rng.bit_generator.state == before
    dp.loss_and_grads(ids, mask, types, labels, train=True)
    assert model.rng.bit_generator.state != before


@needs_openblas
def test_shards_run_in_a_forked_child(monkeypatch):
    """A process forked after shards have run (a data-loader worker, multiprocessing with fork)
    runs shards too, with workers of its own (the parent's pipes are not its to use)."""
    monkeypatch.setenv("MINADAPT_THREADS", "2")
    model = tiny_model()
    model.add_classification_head("a")
    ids, mask, types, labels = tiny_batch(B=4)
    dp = parallel.DataParallel(model)
    expected = dp.logits(ids, mask, types)
    pid = os.fork()
    if pid == 0:  # the child: exit 0 only if its shards ran and agree
        code = 1
        try:
            dp = parallel.DataParallel(model)  # the parent's workers belong to the parent
            got = dp.logits(ids, mask, types)
            code = 0 if np.abs(got - expected).max() < 1e-12 else 1
        finally:
            os._exit(code)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail("the forked child's shards never ran")


@needs_openblas
def test_workers_end_with_the_process_that_made_them(tmp_path):
    """A parent that dies without closing its workers (killed, os._exit) leaves none behind: their
    pipes reach their end. (Workers ignore SIGINT and SIGTERM, so nothing else would stop them.)"""
    import subprocess
    import sys

    script = tmp_path / "parent.py"
    script.write_text(
        "import os, sys\n"
        f"sys.path.insert(0, {os.path.dirname(__file__)!r})\n"
        "os.environ['MINADAPT_THREADS'] = '3'\n"
        "from tiny import tiny_batch, tiny_model\n"
        "model = tiny_model()\n"
        "model.add_classification_head('a')\n"
        "ids, mask, types, labels = tiny_batch(B=4)\n"
        "from minadapt.parallel.cores import DataParallel\n"
        "dp = DataParallel(model)\n"
        "dp.logits(ids, mask, types)\n"
        "print(*dp.pids, flush=True)\n"
        "os._exit(0)\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    pids = [int(p) for p in out.stdout.split()]
    assert len(pids) == 2, out.stderr
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.05)
    assert not any(_alive(p) for p in pids)


def _alive(pid) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False
