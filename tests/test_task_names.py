"""Tasks are named by the user: a file loads under another name (load_adapter(path, name=)), in
every format, and two tasks with one name are refused with a message that says how to rename."""
import numpy as np
import pytest

from minadapt.errors import ConfigError, WeightsError
from minadapt.io.task_names import rename_task, split_name

from tiny import tiny_batch, tiny_model


def _trained(method, name="custom"):
    model = tiny_model()
    if method == "lora":
        model.add_lora(name, r=2, alpha=4)
    elif method == "houlsby":
        model.add_adapter(name, bottleneck=3, train_layer_norms=True)
    elif method == "pfeiffer":
        model.add_adapter(name, architecture="pfeiffer", bottleneck=3)
    model.add_classification_head(name, num_labels=3, labels=["a", "b", "c"])
    rng = np.random.default_rng(0)
    for k in sorted(model.trainable_names(name)):
        model.params[k][...] = 0.3 * rng.standard_normal(model.params[k].shape)
    return model


@pytest.mark.parametrize("method,fmt", [("houlsby", "minadapt"), ("lora", "minadapt"),
                                        ("pfeiffer", "adapterhub"), ("lora", "peft")])
def test_one_file_loads_twice_under_two_names(tmp_path, method, fmt):
    src = _trained(method)
    ids, mask, types, _ = tiny_batch()
    want = src.logits(ids, mask, types, adapter="custom")
    path = src.save_adapter(tmp_path / ("a.safetensors" if fmt == "minadapt" else "dir"), "custom", format=fmt)
    model = tiny_model()
    assert model.load_adapter(path, name="news") == "news"
    assert model.load_adapter(path, name="reviews") == "reviews"
    for name in ("news", "reviews"):
        assert np.allclose(model.logits(ids, mask, types, adapter=name), want, atol=1e-6)
        assert all(".custom." not in k for k in model.trainable_names(name))
    with pytest.raises(WeightsError, match=r"already holds a task named 'news'.*--adapter NEWNAME=.*name="):
        model.load_adapter(path, name="news")
    assert sorted(model.heads) == ["news", "reviews"]  # the refused load left nothing behind


def test_without_name_the_stored_name_is_kept_and_a_clash_says_how_to_rename(tmp_path):
    path = _trained("houlsby").save_adapter(tmp_path / "a.safetensors", "custom")
    model = tiny_model()
    assert model.load_adapter(path) == "custom"
    with pytest.raises(WeightsError, match="already holds a task named 'custom'; load it under another name"):
        model.load_adapter(path)


@pytest.mark.parametrize("bad", ["a.b", "has space", "", "-lead", "x" * 65])
def test_names_that_would_break_parameter_names_are_refused(tmp_path, bad):
    path = _trained("houlsby").save_adapter(tmp_path / "a.safetensors", "custom")
    with pytest.raises(ConfigError, match="letters, digits"):
        tiny_model().load_adapter(path, name=bad)


def test_rename_touches_only_the_tasks_own_keys():
    keys = {"heads.t.1.weight": 1, "encoder.layer.0.output.adapters.t.adapter_down.0.weight": 2,
            "encoder.layer.0.attention.self.query.lora_A.t.weight": 3,
            "encoder.layer.0.output.adapters.t.LayerNorm.bias": 4, "encoder.layer.0.output.dense.weight": 5,
            "heads.tt.1.weight": 6, "encoder.layer.0.output.adapters.other.adapter_up.weight": 7}
    out = rename_task(keys, "t", "n")
    assert out == {"heads.n.1.weight": 1, "encoder.layer.0.output.adapters.n.adapter_down.0.weight": 2,
                   "encoder.layer.0.attention.self.query.lora_A.n.weight": 3,
                   "encoder.layer.0.output.adapters.n.LayerNorm.bias": 4,
                   "encoder.layer.0.output.dense.weight": 5, "heads.tt.1.weight": 6,
                   "encoder.layer.0.output.adapters.other.adapter_up.weight": 7}


def test_name_equals_path():
    assert split_name("news=runs/news/adapter.safetensors") == ("news", "runs/news/adapter.safetensors")
    assert split_name("runs/news/adapter.safetensors") == (None, "runs/news/adapter.safetensors")
    assert split_name("a b=c") == (None, "a b=c")
    assert split_name("news=") == (None, "news=")


@pytest.mark.parametrize("method,fmt", [("pfeiffer", "adapterhub"), ("lora", "peft")])
def test_the_task_record_travels_in_other_formats(tmp_path, method, fmt):
    import json

    src = _trained(method)
    record = {"name": "custom", "labels": ["a", "b", "c"], "builtin": False, "text_column": "q",
              "text_pair_column": "p", "max_length": 40}
    src.metadata["custom"] = {"task": json.dumps(record), "labels": json.dumps(["a", "b", "c"]),
                              "backbone": "not carried"}
    d = src.save_adapter(tmp_path / "d", "custom", format=fmt)
    model = tiny_model()
    model.load_adapter(d, name="quest")
    got = json.loads(model.metadata["quest"]["task"])
    assert got == {**record, "name": "quest"} and "backbone" not in model.metadata["quest"]


def test_a_regression_head_round_trips_through_adapterhub(tmp_path):
    model = tiny_model()
    model.add_adapter("r", bottleneck=3)
    model.add_classification_head("r", num_labels=1, regression=True)
    ids, mask, types, _ = tiny_batch()
    d = model.save_adapter(tmp_path / "r", "r", format="adapterhub")
    back = tiny_model()
    back.load_adapter(d)
    assert back.heads["r"].regression
    assert np.allclose(back.logits(ids, mask, types, adapter="r"), model.logits(ids, mask, types, adapter="r"))
