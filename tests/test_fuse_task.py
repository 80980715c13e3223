"""A fusion task through the Model (minadapt/methods/fusion.py): equal to AdapterHub's Fuse through
model.loss_and_grads, trains only its fusion layers and head, saves to a file that names its
adapters by name and sha256, and refuses to load without them (one line)."""
import json

import numpy as np
import pytest

from minadapt.errors import ConfigError
from minadapt.methods.fusion import FUSION, FusionConfig

from test_composition import fixture_model, inputs, ref  # noqa: F401  (ref: the fixture)


def fused_model(ref):  # noqa: F811
    model = fixture_model(ref)
    model.remove("f")  # the fixture's head "f" becomes the fusion task's
    model.add_classification_head("f", num_labels=2)
    model.add_method("f", FUSION, FusionConfig("f", adapters=("a", "b")))
    model.put({k.split(".", 1)[1]: v.copy() for k, v in ref.items()
                if k.startswith(("fusion.", "adapter.heads.f."))})
    return model


def test_fusion_task_equals_adapterhub(ref):  # noqa: F811
    model = fused_model(ref)
    ids, mask, types, labels = inputs(ref)
    loss, logits, grads = model.loss_and_grads(ids, mask, types, labels, adapter="f", train=False)
    assert abs(float(loss) - float(ref["fuse.loss"])) < 1e-10
    assert np.max(np.abs(logits - ref["fuse.logits"])) < 1e-10
    want = {k[len("fuse.grad."):]: v for k, v in ref.items() if k.startswith("fuse.grad.")}
    assert set(grads) == set(want) == model.trainable_names("f")
    for k, g in want.items():
        assert np.max(np.abs(grads[k] - g)) < 1e-8 * max(1.0, np.max(np.abs(g))), k
    assert model.method("f") == "fusion"
    assert np.max(np.abs(model.logits(ids, mask, types, adapter="f") - ref["fuse.logits"])) < 1e-10


def test_fusion_in_a_mixed_batch(ref):  # noqa: F811
    model = fused_model(ref)
    ids, mask, types, labels = inputs(ref)
    out = model.logits(ids, mask, types, adapter=["f", "a", "f"])
    assert np.max(np.abs(out["f"] - ref["fuse.logits"][[0, 2]])) < 1e-12
    assert np.max(np.abs(out["a"] - model.logits(ids[1:2], mask[1:2], types[1:2], adapter="a"))) < 1e-12


def test_fusion_file_round_trip_and_missing_adapters(ref, tmp_path):  # noqa: F811
    model = fused_model(ref)
    ids, mask, types, _ = inputs(ref)
    for name in ("a", "b", "f"):
        model.save_adapter(tmp_path / f"{name}.safetensors", adapter=name)
    want = model.logits(ids, mask, types, adapter="f")

    other = fixture_model(ref)
    for name in ("a", "b", "c", "f"):
        other.remove(name)
    other.load_adapter(tmp_path / "a.safetensors")
    with pytest.raises(ConfigError, match=r"fuses adapters a, b; b \(sha256 [0-9a-f]{12}…\) is missing: "
                                          r"load them first"):
        other.load_adapter(tmp_path / "f.safetensors")
    assert "f" not in other.names()
    other.load_adapter(tmp_path / "b.safetensors")
    assert other.load_adapter(tmp_path / "f.safetensors") == "f"
    assert np.array_equal(other.logits(ids, mask, types, adapter="f"), want)

    changed = fixture_model(ref)
    for name in ("a", "b", "c", "f"):
        changed.remove(name)
    changed.load_adapter(tmp_path / "a.safetensors")
    changed.load_adapter(tmp_path / "b.safetensors")
    changed.params["encoder.layer.0.output.adapters.a.adapter_up.bias"][0] += 1.0
    with pytest.raises(ConfigError, match=r"a differs from the one it was trained with"):
        changed.load_adapter(tmp_path / "f.safetensors")


def test_bad_fusions_say_what_is_wrong(ref):  # noqa: F811
    model = fixture_model(ref)
    with pytest.raises(ConfigError, match=r"fuses adapters a, zz; zz is missing: load them first"):
        model.add_method("z", FUSION, FusionConfig("z", adapters=("a", "zz")))
    model.add_adapter("pw", bottleneck=2, architecture="pfeiffer")
    with pytest.raises(ConfigError, match="adapters of different architectures"):
        model.add_method("z", FUSION, FusionConfig("z", adapters=("a", "pw")))
    with pytest.raises(ConfigError, match="2 or more different adapters"):
        model.add_method("z", FUSION, FusionConfig("z", adapters=("a", "a")))
    with pytest.raises(ConfigError, match="name the adapters to fuse"):
        FusionConfig("z")
    assert "z" not in model.names()


ROWS = ["a gorgeous , witty movie\t1", "dull and lifeless\t0", "i loved it\t1", "a mess\t0"] * 2


def test_train_fuse_from_the_command_line(tmp_path, checkpoint_dir, capsys):
    """minadapt train sst2 --fuse A B: fuses two trained adapter files, trains the fusion and a new
    head only (the adapters' numbers unchanged), and the file predicts beside them."""
    from minadapt.cli import main
    from minadapt.io.weights import read_safetensors

    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "dev"):
        (data / f"{split}.tsv").write_text("sentence\tlabel\n" + "\n".join(ROWS) + "\n")
    common = ["--data-dir", str(data), "--weights", str(checkpoint_dir), "--max-steps", "2",
              "--batch-size", "4", "--eval-every", "0"]
    for seed in ("1", "2"):
        assert main(["train", "sst2", "--bottleneck", "2", "--seed", seed, "--out",
                     str(tmp_path / f"a{seed}"), "--lr", "0.05"] + common) == 0
    # the second adapter is task "sst2" too: fusing needs distinct names, so it is renamed here
    a1, a2 = tmp_path / "a1" / "adapter.safetensors", tmp_path / "a2" / "adapter.safetensors"
    import minadapt
    m = minadapt.load_model(checkpoint_dir)
    m.load_adapter(a2, name="other")
    m.save_adapter(tmp_path / "other.safetensors", adapter="other")
    out = tmp_path / "fused"
    assert main(["train", "sst2", "--fuse", str(a1), str(tmp_path / "other.safetensors"), "--out", str(out)]
                + common) == 0
    tensors, meta = read_safetensors(out / "adapter.safetensors")
    assert meta["method"] == "fusion"
    fusion = json.loads(meta["fusion"])
    assert fusion["name"] == "sst2-fusion" and fusion["adapters"] == ["sst2", "other"]
    assert all(len(h) == 64 for h in fusion["sha256"])
    assert set(tensors) == {k for k in tensors if "adapter_fusion_layer.sst2,other." in k
                            or k.startswith("heads.sst2-fusion.")}
    # the adapters did not move: loading them beside the fusion file passes its sha256 check
    capsys.readouterr()
    assert main(["predict", "--weights", str(checkpoint_dir), "--adapter", str(a1), "--adapter",
                 str(tmp_path / "other.safetensors"), "--adapter", str(out / "adapter.safetensors"),
                 "--task", "sst2-fusion", "a gorgeous film"]) == 0
    assert capsys.readouterr().out.strip()
    assert main(["eval", "--weights", str(checkpoint_dir), "--data-dir", str(data), "--with", str(a1),
                 "--with", str(tmp_path / "other.safetensors"), "--adapter", str(out / "adapter.safetensors")]) == 0
    assert "sst2 dev accuracy" in capsys.readouterr().out


def test_fusion_attention_is_a_distribution_per_token(ref):  # noqa: F811
    from minadapt import compose
    model = fused_model(ref)
    ids, mask, types, _ = inputs(ref)
    p = compose.fusion_attention(model, "f", ids, mask, types)
    assert sorted(p) == [(i, w) for i in range(2) for w in ("attention.output", "output")]
    for v in p.values():
        assert v.shape == (*ids.shape, 2) and np.allclose(v.sum(-1), 1.0)
