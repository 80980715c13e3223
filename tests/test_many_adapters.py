"""One backbone, many tasks: each adapter runs as if it were alone, training one never touches
another, and the backbone is held once however many adapters are loaded."""
import numpy as np
import pytest

from minadapt.errors import ConfigError
from minadapt.optim import AdamW
from minadapt.parallel.cores import DataParallel

from tiny import tiny_batch, tiny_model


def _randomise(model, name, seed):
    """Move task `name`'s parameters off their init, so that its outputs differ from the bare model."""
    rng = np.random.default_rng(seed)
    for k in sorted(model.trainable_names(name)):
        model.params[k][...] = 0.3 * rng.standard_normal(model.params[k].shape)


def _two_tasks(model):
    model.add_adapter("a", bottleneck=3, seed=1)
    model.add_classification_head("a", num_labels=2, seed=1)
    model.add_adapter("b", bottleneck=2, seed=2, non_linearity="relu", train_layer_norms=True)
    model.add_classification_head("b", num_labels=3, seed=2)
    _randomise(model, "a", 1)
    _randomise(model, "b", 2)
    return model


@pytest.mark.parametrize("ops", ["fast", "reference"])
def test_each_adapter_gives_what_it_gives_alone(ops, tmp_path):
    """Logits of each task on a model of two equal, bit for bit, those of a model holding it alone."""
    both = _two_tasks(tiny_model())
    ids, mask, types, _ = tiny_batch()
    for name in ("a", "b"):
        path = both.save_adapter(tmp_path / f"{name}.safetensors", adapter=name)
        alone = tiny_model()
        alone.load_adapter(path, check_backbone=False)
        for model in (both, alone):
            model.set_ops(ops)
        assert np.array_equal(both.logits(ids, mask, types, adapter=name), alone.logits(ids, mask, types))
        assert np.array_equal(both.encode(ids, mask, types, adapter=name), alone.encode(ids, mask, types))
    assert both.logits(ids, mask, types, adapter="b").shape == (3, 3)


def test_training_one_task_leaves_the_other_bit_identical():
    model = _two_tasks(tiny_model())
    ids, mask, types, labels = tiny_batch()
    before = {k: v.copy() for k, v in model.params.items()}
    logits_a = model.logits(ids, mask, types, adapter="a")
    names_b = model.trainable_names("b")
    opt = AdamW({k: model.params[k] for k in names_b}, lr=1e-2)
    dp = DataParallel(model, adapter="b")
    for _ in range(3):
        _, _, grads = dp.loss_and_grads(ids, mask, types, np.array([0, 2, 1]), train=True)
        assert set(grads) == names_b
        opt.step(model.params, grads)
    dp.close()
    changed = {k for k in model.params if not np.array_equal(model.params[k], before[k])}
    assert changed and changed <= names_b  # only b's parameters moved...
    assert any("LayerNorm" in k for k in changed)  # ...its own LayerNorm copies among them
    assert np.array_equal(model.logits(ids, mask, types, adapter="a"), logits_a)


def test_a_call_names_its_adapter_when_there_are_several():
    model = _two_tasks(tiny_model())
    ids, mask, types, labels = tiny_batch()
    with pytest.raises(ConfigError, match="holds 2 adapters .a, b.: say which"):
        model.logits(ids, mask, types)
    with pytest.raises(ConfigError, match="no adapter or head named 'c'"):
        model.logits(ids, mask, types, adapter="c")
    with pytest.raises(ConfigError, match="already adapts the backbone"):
        model.add_adapter("a")


def test_the_backbone_is_held_once(tmp_path):
    """Five tasks loaded from files: the model's parameter memory is the backbone's plus the five
    files' tensors, nothing copied per task."""
    model = tiny_model(dtype=np.float32)
    backbone = sum(v.nbytes for v in model.params.values())
    model.add_adapter("t", bottleneck=3)
    model.add_classification_head("t", num_labels=4)
    path = model.save_adapter(tmp_path / "t.safetensors")
    model.remove("t")
    task_bytes = 0
    for i in range(5):
        renamed = tmp_path / f"t{i}.safetensors"
        _rename_task(path, renamed, "t", f"t{i}")
        model.load_adapter(renamed, check_backbone=False)
        task_bytes += sum(model.params[k].nbytes for k in model.trainable_names(f"t{i}"))
    held = {id(v.base if v.base is not None else v): v.base if v.base is not None else v
            for v in model.params.values()}
    total = sum(a.nbytes for a in held.values())
    assert total == backbone + task_bytes
    assert model.names() == [f"t{i}" for i in range(5)]


def _rename_task(src, dst, old, new):
    """An adapter file with its task renamed (names and metadata): a stand-in for five trained tasks."""
    import json

    from minadapt.io.weights import read_safetensors, save_tensors

    tensors, meta = read_safetensors(src)
    tensors = {k.replace(f"adapters.{old}.", f"adapters.{new}.").replace(f"heads.{old}.", f"heads.{new}."): v
               for k, v in tensors.items()}
    for key in ("adapter", "head"):
        d = json.loads(meta[key])
        d["name"] = new
        meta[key] = json.dumps(d)
    save_tensors(dst, tensors, meta)


def test_a_regression_head_trains_on_mean_squared_error():
    """A regression task (STS-B) beside a classifier: one output, MSE loss, gradients that match
    finite differences."""
    from minadapt.gradcheck import numerical_grad, rel_error

    model = tiny_model()
    model.add_adapter("sts", bottleneck=2)
    model.add_classification_head("sts", regression=True)
    _randomise(model, "sts", 3)
    ids, mask, types, _ = tiny_batch()
    scores = np.array([0.5, 4.0, 2.5])
    loss, logits, grads = model.loss_and_grads(ids, mask, types, scores, adapter="sts", train=False)
    assert logits.shape == (3, 1) and model.heads["sts"].regression
    assert abs(loss - ((logits[:, 0] - scores) ** 2).mean()) < 1e-14

    def f(_):
        return np.asarray(model.loss_and_grads(ids, mask, types, scores, adapter="sts", train=False)[0])

    for name in ("heads.sts.4.weight", "encoder.layer.0.output.adapters.sts.adapter_up.weight"):
        num = numerical_grad(f, model.params[name], np.array(1.0), h=1e-5)
        assert rel_error(grads[name], num) < 1e-7, name
