"""The training loop on the real checkpoint and a small slice of SST-2-shaped data: frozen weights
stay bit-identical, an interrupted run resumes to exactly the same result, and a saved adapter
reloads to the same logits."""
import json
import os
import signal

import numpy as np
import pytest

import minadapt
from minadapt.errors import MinadaptError, WeightsError
from minadapt.checkpoints import Interrupted
from minadapt.train import TrainConfig, train

SENTENCES = ["a gorgeous , witty , seductive movie .", "dull and lifeless", "the best film of the year",
             "an utter waste of time", "charming and funny", "painfully boring", "i loved it",
             "it 's a mess", "warm , moving and wise", "flat , tired and predictable"] * 4
LABELS = np.array([1, 0, 1, 0, 1, 0, 1, 0, 1, 0] * 4)
DATA = {"train": (SENTENCES, LABELS), "dev": (SENTENCES[:10], LABELS[:10])}


def _cfg(tmp_path, **kw):
    base = dict(out=str(tmp_path / "run"), max_steps=6, batch_size=8, options={"bottleneck": 8},
                eval_every=3, log_every=2, lr=1e-2, seed=1)
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def frozen_copy(checkpoint_dir):
    m = minadapt.load_model(checkpoint_dir)
    return {k: v.copy() for k, v in m.params.items()}


def test_training_changes_only_trainable(tmp_path, checkpoint_dir, frozen_copy):
    model = minadapt.load_model(checkpoint_dir)
    r = train(_cfg(tmp_path), model=model, data=DATA, progress=False)
    assert r.steps == 6 and 0 <= r.dev_accuracy <= 1
    for k, v in frozen_copy.items():
        assert np.array_equal(model.params[k], v), k  # bit-identical
    up = [k for k in model.trainable if "adapter_up.weight" in k]
    assert all(np.abs(model.params[k]).max() > 0 for k in up)  # the adapters moved off identity
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if x["kind"] == "train"] == [2, 4, 6]
    assert [x["step"] for x in lines if x["kind"] == "eval"] == [3, 6]
    assert (tmp_path / "run" / "training.png").stat().st_size > 1000


def test_resume_gives_the_uninterrupted_result(tmp_path, checkpoint_dir):
    straight = minadapt.load_model(checkpoint_dir)
    train(_cfg(tmp_path / "a"), model=straight, data=DATA, progress=False)

    def stop_at_4(step, loss):
        if step == 4:
            raise Interrupted()

    first = minadapt.load_model(checkpoint_dir)
    r = train(_cfg(tmp_path / "b"), model=first, data=DATA, callback=stop_at_4, progress=False)
    assert r.interrupted and r.steps == 4
    resumed = minadapt.load_model(checkpoint_dir)
    r2 = train(_cfg(tmp_path / "b"), model=resumed, data=DATA, resume=True, progress=False)
    assert r2.steps == 6
    for k in straight.trainable:
        assert np.array_equal(straight.params[k], resumed.params[k]), k
    a = (tmp_path / "a" / "run" / "metrics.jsonl").read_text().splitlines()
    b = (tmp_path / "b" / "run" / "metrics.jsonl").read_text().splitlines()
    strip = lambda lines: [{k: v for k, v in json.loads(x).items()
                            if k not in ("elapsed_s", "sentences_per_s")} for x in lines]
    assert strip(a) == strip(b)


def _signal_during_step(model, at_step, times):
    """Make model.loss_and_grads send this process SIGINT `times` times in its `at_step`-th call,
    after the forward and backward (dropout drawn) and before AdamW: the middle of a step."""
    original, calls = model.loss_and_grads, []

    def wrapped(*a, **kw):
        out = original(*a, **kw)
        calls.append(1)
        if len(calls) == at_step:
            for _ in range(times):
                os.kill(os.getpid(), signal.SIGINT)
        return out
    model.loss_and_grads = wrapped


def test_ctrl_c_mid_step_finishes_the_step_and_resumes_exactly(tmp_path, checkpoint_dir):
    """A real SIGINT in the middle of step 4: the step completes, a checkpoint is saved after it,
    and resuming ends exactly where an uninterrupted run does."""
    # what SIGINT does outside train(): Python's KeyboardInterrupt, or SIG_IGN where pytest was
    # started in the background by a non-interactive shell (which makes its children ignore it)
    before = signal.getsignal(signal.SIGINT)
    straight = minadapt.load_model(checkpoint_dir)
    train(_cfg(tmp_path / "a"), model=straight, data=DATA, progress=False)
    first = minadapt.load_model(checkpoint_dir)
    _signal_during_step(first, at_step=4, times=1)
    r = train(_cfg(tmp_path / "b"), model=first, data=DATA, progress=False)
    assert r.interrupted and r.steps == 4
    assert signal.getsignal(signal.SIGINT) is before  # the handler is put back
    resumed = minadapt.load_model(checkpoint_dir)
    r2 = train(_cfg(tmp_path / "b"), model=resumed, data=DATA, resume=True, progress=False)
    assert r2.steps == 6
    for k in straight.trainable:
        assert np.array_equal(straight.params[k], resumed.params[k]), k


def test_second_ctrl_c_stops_at_once_and_keeps_the_last_checkpoint(tmp_path, checkpoint_dir):
    straight = minadapt.load_model(checkpoint_dir)
    train(_cfg(tmp_path / "a"), model=straight, data=DATA, progress=False)
    first = minadapt.load_model(checkpoint_dir)
    _signal_during_step(first, at_step=5, times=2)  # the evaluation after step 3 saved a checkpoint
    r = train(_cfg(tmp_path / "b"), model=first, data=DATA, progress=False)
    assert r.interrupted and r.steps == 4  # step 5 never finished
    resumed = minadapt.load_model(checkpoint_dir)
    r2 = train(_cfg(tmp_path / "b"), model=resumed, data=DATA, resume=True, progress=False)
    assert r2.steps == 6  # from the checkpoint of step 3
    for k in straight.trainable:
        assert np.array_equal(straight.params[k], resumed.params[k]), k


def test_resume_refuses_other_settings(tmp_path, checkpoint_dir):
    train(_cfg(tmp_path, max_steps=2), model=minadapt.load_model(checkpoint_dir), data=DATA,
          progress=False)
    with pytest.raises(MinadaptError, match="bottleneck"):
        train(_cfg(tmp_path, max_steps=2, options={"bottleneck": 4}), model=minadapt.load_model(checkpoint_dir),
              data=DATA, resume=True, progress=False)


def test_save_load_predict_same_logits(tmp_path, checkpoint_dir):
    model = minadapt.load_model(checkpoint_dir)
    r = train(_cfg(tmp_path, max_steps=3), model=model, data=DATA, progress=False)
    b = model.tokenizer.encode(["what a lovely surprise", "i want my two hours back"])
    want = model.logits(*b)
    fresh = minadapt.load_model(checkpoint_dir)
    name = fresh.load_adapter(r.adapter_path)
    meta = fresh.metadata[name]
    assert json.loads(meta["training"])["options"] == {"bottleneck": 8}
    assert np.array_equal(fresh.logits(*b), want)
    n = sum(fresh.params[k].size for k in fresh.trainable)  # 12 adapters of 2*8*384+8+384, head
    assert n == 12 * (2 * 8 * 384 + 8 + 384) + 384 * 384 + 384 + 2 * 384 + 2
    assert 4 * n < r.adapter_path.stat().st_size < 4 * n + 20_000  # float32 + a small header


def test_adapter_for_another_backbone_is_refused(tmp_path, checkpoint_dir):
    from tiny import tiny_model

    tiny = tiny_model(dtype=np.float32)
    tiny.backbone["sha256"] = "0" * 64
    tiny.add_adapter("sst2", bottleneck=2)
    tiny.add_classification_head("sst2")
    path = tiny.save_adapter(tmp_path / "tiny.safetensors")
    with pytest.raises(WeightsError, match="made for backbone tiny"):
        minadapt.load_model(checkpoint_dir).load_adapter(path)


def test_not_an_adapter_file(tmp_path, checkpoint_dir):
    from minadapt.io.weights import save_tensors

    save_tensors(tmp_path / "x.safetensors", {"a": np.zeros(3, np.float32)}, {"hello": "world"})
    with pytest.raises(WeightsError, match="not a minadapt adapter"):
        minadapt.load_model(checkpoint_dir).load_adapter(tmp_path / "x.safetensors")


def test_default_length_is_epochs_with_a_floor_of_steps():
    """2 passes by default, but never fewer than DEFAULT_MIN_STEPS steps (a small training set
    still warms up and decays); an explicit --epochs or --max-steps is obeyed exactly. Evaluations:
    ten a run by default (compare's), or every --eval-every steps."""
    assert TrainConfig().total_steps(2074) == 2 * 2074 > TrainConfig.DEFAULT_MIN_STEPS
    assert TrainConfig().eval_interval(4148) == 415 and TrainConfig().eval_interval(200) == 20
    assert TrainConfig(eval_every=0).eval_interval(4148) == 0
    assert TrainConfig(eval_every=7).eval_interval(4148) == 7
    assert TrainConfig().total_steps(56) == TrainConfig.DEFAULT_MIN_STEPS == 200
    assert TrainConfig(epochs=1).total_steps(56) == 56
    assert TrainConfig(epochs=3, max_steps=7).total_steps(56) == 7
