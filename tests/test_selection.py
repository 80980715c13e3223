"""Which step a run keeps: the best on a validation set that is not the dev set (a held-out slice of
the training data, or --validation-file), early stopping on it, and --keep last; on the real
checkpoint with SST-2-shaped sentences."""
import json

import numpy as np
import pytest

import minadapt
from minadapt.checkpoints import Interrupted
from minadapt.io.weights import read_safetensors
from minadapt.selection import HOLDOUT_MIN_TRAIN, Keeper, holdout
from minadapt.tasks import Examples
from minadapt.train import TrainConfig, train

from test_train import DATA, LABELS, SENTENCES


def _cfg(tmp_path, **kw):
    base = dict(out=str(tmp_path / "run"), max_steps=8, batch_size=8, options={"bottleneck": 8},
                eval_every=1, log_every=2, lr=1e-2, seed=1)
    return TrainConfig(**{**base, **kw})


@pytest.fixture
def flipped(tmp_path):
    """A validation file of the dev sentences with every label flipped: the step it prefers is the
    one the dev set likes least, so a choice made on dev scores would show."""
    path = tmp_path / "validation.tsv"
    path.write_text("sentence\tlabel\n" + "".join(f"{s}\t{1 - y}\n" for s, y in zip(SENTENCES[:10], LABELS[:10])))
    return path


def _evals(tmp_path):
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    return [x for x in lines if x["kind"] == "eval"]


def test_holdout_is_disjoint_deterministic_and_spares_small_sets():
    n = 4000
    ex = Examples([f"t{i}" for i in range(n)], None, np.arange(n))
    train_part, val = holdout(ex, seed=3)
    assert len(val.labels) == 400 and len(train_part.labels) == n - 400  # a tenth
    assert not set(val.labels) & set(train_part.labels)
    assert np.array_equal(holdout(ex, seed=3)[1].labels, val.labels)
    assert not np.array_equal(holdout(ex, seed=4)[1].labels, val.labels)
    assert np.array_equal(holdout(ex)[1].labels, holdout(ex, seed=0)[1].labels)  # split seed 0 by default
    assert len(holdout(Examples(["x"] * 60000, None, np.zeros(60000)))[1].labels) == 1000  # capped
    assert len(holdout(ex, size=7, seed=3)[1].labels) == 7
    small = Examples(["x"] * (HOLDOUT_MIN_TRAIN - 1), None, np.zeros(HOLDOUT_MIN_TRAIN - 1))
    assert holdout(small) == (small, None)


def test_keeper_keeps_the_first_best_and_counts_patience():
    k = Keeper("best", patience=2)
    r = [{"step": s, "validation_score": v} for s, v in ((1, 0.5), (2, 0.7), (3, 0.7), (4, 0.6))]
    assert [k.update(x) for x in r[:3]] == [True, True, False] and not k.stop
    assert not k.update(r[3]) and k.stop and k.best is r[1]
    assert Keeper("best", None, [{"kind": "eval", **x} for x in r]).best["step"] == 2  # from history


def test_the_step_kept_is_the_best_on_validation_not_on_dev(tmp_path, checkpoint_dir, flipped):
    model = minadapt.load_model(checkpoint_dir)
    r = train(_cfg(tmp_path, validation_file=str(flipped)), model=model, data=DATA, progress=False)
    evals = _evals(tmp_path)
    assert [e["step"] for e in evals] == list(range(1, 9))
    best = max(evals, key=lambda e: (e["validation_score"], -e["step"]))  # the first of the best
    assert r.kept["step"] == best["step"] and r.last["step"] == 8 and r.steps == 8
    assert r.dev_metrics == best["dev"]
    meta = read_safetensors(r.adapter_path)[1]
    assert json.loads(meta["kept"])["step"] == best["step"] and int(meta["steps"]) == best["step"]
    # the file and the model in memory hold the kept step's parameters
    again = minadapt.load_model(checkpoint_dir)
    name = again.load_adapter(r.adapter_path)
    ids, mask, types = model.tokenizer.pad(model.tokenizer.ids(SENTENCES[:4]))
    assert np.allclose(again.logits(ids, mask, types, adapter=name),
                       model.logits(ids, mask, types, adapter="sst2"), atol=1e-6)
    acc = float((again.logits(*model.tokenizer.pad(model.tokenizer.ids(SENTENCES[:10])),
                              adapter=name).argmax(1) == 1 - LABELS[:10]).mean())
    assert acc == pytest.approx(best["validation"]["accuracy"])


def test_keep_last_keeps_the_last_step(tmp_path, checkpoint_dir, flipped):
    r = train(_cfg(tmp_path, validation_file=str(flipped), keep="last"),
              model=minadapt.load_model(checkpoint_dir), data=DATA, progress=False)
    assert r.kept is r.last and r.kept["step"] == 8
    assert json.loads(read_safetensors(r.adapter_path)[1]["kept"])["step"] == 8


def test_early_stopping_stops_patience_evaluations_after_the_best(tmp_path, checkpoint_dir, flipped):
    r = train(_cfg(tmp_path, validation_file=str(flipped), early_stopping_patience=2, max_steps=40),
              model=minadapt.load_model(checkpoint_dir), data=DATA, progress=False)
    evals = _evals(tmp_path)
    scores = [e["validation_score"] for e in evals]
    first_best = scores.index(max(scores))
    assert r.steps < 40 and len(evals) == first_best + 1 + 2  # stopped 2 evaluations after the best
    assert r.kept["step"] == evals[first_best]["step"] and r.last["step"] == r.steps


def test_resume_after_the_best_still_keeps_it(tmp_path, checkpoint_dir, flipped):
    straight = train(_cfg(tmp_path / "a", validation_file=str(flipped)),
                     model=minadapt.load_model(checkpoint_dir), data=DATA, progress=False)

    def stop_at_7(step, loss):
        if step == 7:
            raise Interrupted()

    cfg = _cfg(tmp_path / "b", validation_file=str(flipped))
    assert train(cfg, model=minadapt.load_model(checkpoint_dir), data=DATA, callback=stop_at_7,
                 progress=False).interrupted
    resumed = train(cfg, model=minadapt.load_model(checkpoint_dir), data=DATA, resume=True, progress=False)
    assert resumed.kept["step"] == straight.kept["step"]
    a, b = read_safetensors(straight.adapter_path)[0], read_safetensors(resumed.adapter_path)[0]
    assert all(np.array_equal(a[k], b[k]) for k in a)
