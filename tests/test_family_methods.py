"""Prompt tuning, prefix tuning and IA3 as methods of the table (minadapt/methods/prompt.py,
prefix.py, ia3.py), through Model: equal to PEFT (and AdapterHub's prefix) in float64 with logits
and loss to 1e-10 and every gradient to 1e-8; IA3 merges into the weights; each saves and loads in
minadapt's file and in PEFT's directory, and reads PEFT's own directories
(tests/fixtures/peft_*/, from tests/make_peft_family_fixtures.py)."""
from pathlib import Path

import numpy as np
import pytest

from minadapt import bert, heads, methods
from minadapt.methods.prefix import PrefixConfig
from tiny import tiny_batch, tiny_model

FIXTURES = Path(__file__).parent / "fixtures"
HEAD = "t"
CASES = {  # fixture case -> (method, options, {minadapt name: fixture name})
    "prompt": ("prompt", dict(virtual_tokens=3), {bert.prompt_name(HEAD): "prompt.embedding"}),
    "prefix": ("prefix", dict(virtual_tokens=3), {bert.prefix_names(HEAD, False)[0]: "prefix.table"}),
    "prefix_mlp": ("prefix", dict(virtual_tokens=3, projection=True, width=5),
                   dict(zip(bert.prefix_names(HEAD, True),
                            ["prefix.embedding", "prefix.w1", "prefix.b1", "prefix.w2", "prefix.b2"]))),
    "ia3": ("ia3", {}, {bert.ia3_name(i, s, HEAD): f"encoder.layer.{i}.ia3.{s}"
                        for i in range(2) for s in ("key", "value", "attention.output.dense", "output.dense")}),
    "adapterhub_prefix": ("prefix", dict(virtual_tokens=3, projection=True, width=5, shift_positions=False),
                          dict(zip(bert.prefix_names(HEAD, True),
                                   ["prefix.embedding", "prefix.w1", "prefix.b1", "prefix.w2", "prefix.b2"]))),
}


@pytest.fixture(scope="module")
def ref():
    from safetensors.numpy import load_file

    return load_file(str(FIXTURES / "peft_family.safetensors"))


def _inputs(ref):
    return ref["inputs.input_ids"], ref["inputs.attention_mask"], ref["inputs.token_type_ids"], ref["labels"]


def _model(ref, case, ops="reference"):
    method, options, names = CASES[case]
    model = tiny_model()
    model.set_ops(ops)
    model.add_classification_head(HEAD, 2)
    m = methods.get(method)
    model.add_method(HEAD, m, m.config(name=HEAD, **options))
    head = "adapterhub_prefix.param." if case == "adapterhub_prefix" else "head."
    tensors = {k[len(head):]: v for k, v in ref.items() if k.startswith(head + "heads.")}
    tensors.update({ours: ref[f"{case}.param.{theirs}"].reshape(model.params[ours].shape)
                    for ours, theirs in names.items()})
    model.put(tensors)
    return model


@pytest.mark.parametrize("ops", ["reference", "fast"])
@pytest.mark.parametrize("case", list(CASES))
def test_model_matches_peft(ref, case, ops):
    model = _model(ref, case, ops)
    loss, logits, grads = model.loss_and_grads(*_inputs(ref), adapter=HEAD, train=False)
    np.testing.assert_allclose(logits, ref[f"{case}.logits"], rtol=0, atol=1e-10)
    assert abs(float(loss) - float(ref[f"{case}.loss"])) < 1e-10
    names = {**CASES[case][2], **{k: k for k in heads.head_names(HEAD)}}
    assert set(grads) == set(names)
    for ours, theirs in names.items():
        want = ref[f"{case}.grad.{theirs}"]
        np.testing.assert_allclose(grads[ours], want.reshape(grads[ours].shape), rtol=0,
                                   atol=1e-8 * max(1.0, np.abs(want).max()), err_msg=ours)


def test_ia3_starts_as_the_backbone_and_merges_into_it(ref):
    ids, mask, types, _ = _inputs(ref)
    model = tiny_model()
    model.add_classification_head(HEAD, 2)
    bare = model.logits(ids, mask, types, adapter=HEAD)
    model.add_method(HEAD, methods.get("ia3"), methods.get("ia3").config(name=HEAD))
    # the same numbers (the [CLS]-only layer takes another route once k and v are scaled: rounding)
    np.testing.assert_allclose(model.logits(ids, mask, types, adapter=HEAD), bare, rtol=0, atol=1e-14)
    model = _model(ref, "ia3")
    merged = model.merged(HEAD)
    assert merged.method(HEAD) == "probe" and not any(".ia3_l." in k for k in merged.params)
    np.testing.assert_allclose(merged.logits(ids, mask, types, adapter=HEAD),
                               model.logits(ids, mask, types, adapter=HEAD), rtol=0, atol=1e-12)


@pytest.mark.parametrize("method", ["prompt", "prefix"])
def test_prompt_and_prefix_cannot_merge(method):
    model = tiny_model()
    model.add_classification_head(HEAD, 2)
    model.add(HEAD, method=method, virtual_tokens=2)
    with pytest.raises(Exception, match="nothing to merge"):
        model.merged(HEAD)


@pytest.mark.parametrize("case", ["prompt", "prefix_mlp", "ia3"])
def test_minadapt_file_round_trip(ref, case, tmp_path):
    ids, mask, types, _ = _inputs(ref)
    model = _model(ref, case)
    path = model.save_adapter(tmp_path / "a.safetensors", adapter=HEAD)
    other = tiny_model()
    name = other.load_adapter(path, check_backbone=False)
    assert other.method(name) == CASES[case][0] and other.config_of(name) == model.config_of(HEAD)
    np.testing.assert_allclose(other.logits(ids, mask, types, adapter=name),
                               model.logits(ids, mask, types, adapter=HEAD), rtol=0, atol=1e-14)


def test_too_long_for_the_positions_is_a_clear_error():
    model = tiny_model()  # 16 positions
    model.add_classification_head(HEAD, 2)
    model.add(HEAD, method="prompt", virtual_tokens=12)
    ids, mask, types, _ = tiny_batch()  # 6 tokens
    from minadapt.errors import ConfigError

    with pytest.raises(ConfigError, match="6 tokens after 12 virtual tokens: the checkpoint has 16 positions "
                                          r"\(a --max-length of at most 4\)"):
        model.logits(ids, mask, types, adapter=HEAD)


def test_prefix_config_refuses_bad_values():
    from minadapt.errors import ConfigError

    with pytest.raises(ConfigError, match="virtual_tokens=0"):
        PrefixConfig(name="x", virtual_tokens=0)
    with pytest.raises(ConfigError, match="IA3 sites"):
        methods.get("ia3").config(name="x", sites=("query",))


# --- the command line: train --method prompt|prefix|ia3 ---------------------------------------------
ROWS = ["a gorgeous , witty movie\t1", "dull and lifeless\t0", "i loved it\t1", "a mess\t0"]


@pytest.mark.parametrize("method,options,saved", [
    ("prompt", ["--virtual-tokens", "4", "--prompt-init", "vocab"], {"virtual_tokens": 4, "init": "vocab"}),
    ("prefix", ["--virtual-tokens", "3", "--prefix-projection", "--prefix-width", "8"],
     {"virtual_tokens": 3, "projection": True, "width": 8}),
    ("ia3", [], {"sites": ["key", "value", "attention.output.dense", "output.dense"]}),
])
def test_train_from_the_command_line_moves_only_its_own(method, options, saved, checkpoint_dir,
                                                          tmp_path, capsys):
    import json

    import minadapt
    from minadapt.backend import to_numpy
    from minadapt.cli import main
    from minadapt.io.weights import read_safetensors

    data = tmp_path / "sst2"
    data.mkdir()
    for split in ("train", "dev"):
        (data / f"{split}.tsv").write_text("sentence\tlabel\n" + "\n".join(ROWS) + "\n")
    out = tmp_path / "run"
    code = main(["train", "sst2", "--data-dir", str(data), "--weights", str(checkpoint_dir),
                 "--out", str(out), "--max-steps", "2", "--batch-size", "4", "--max-length", "16",
                 "--eval-every", "0", "--method", method, *options])
    assert code == 0, capsys.readouterr().err
    tensors, meta = read_safetensors(out / "adapter.safetensors")
    assert meta["method"] == method and {k: json.loads(meta[method])[k] for k in saved} == saved
    fresh = minadapt.load_model(checkpoint_dir)
    before = {k: to_numpy(v).copy() for k, v in fresh.params.items()}
    assert fresh.load_adapter(out / "adapter.safetensors") == "sst2" and fresh.method("sst2") == method
    assert all(np.array_equal(before[k], to_numpy(fresh.params[k])) for k in before)  # backbone as it was
    own = set(tensors) - {k for k in tensors if k.startswith("heads.")}
    assert own and not own & set(before)
    init = minadapt.load_model(checkpoint_dir)
    init.add("sst2", method=method, **{k: v for k, v in saved.items() if k != "sites"})
    moved = [k for k in own if not np.array_equal(tensors[k], to_numpy(init.params[k]))]
    assert moved  # training moved the method's own parameters


# --- PEFT's directories, both ways -----------------------------------------------------------------
@pytest.mark.parametrize("case", ["prompt", "prefix", "prefix_mlp", "ia3"])
def test_reads_peft_own_directories(ref, case):
    """PEFT saved these (tests/make_peft_family_fixtures.py); read here they give PEFT's logits.
    A prefix trained through the MLP arrives as its table: a plain prefix."""
    ids, mask, types, _ = _inputs(ref)
    model = tiny_model()
    name = model.load_adapter(FIXTURES / f"peft_{case}", name="t")
    assert model.method(name) == CASES[case][0]
    if case == "prefix_mlp":
        assert model.config_of(name).projection is False
    np.testing.assert_allclose(model.logits(ids, mask, types, adapter=name), ref[f"{case}.logits"],
                               rtol=0, atol=1e-10)


@pytest.mark.parametrize("case", ["prompt", "prefix", "prefix_mlp", "ia3"])
def test_writes_what_peft_writes(ref, case, tmp_path):
    """The directory written here has PEFT's own config values and tensor names, shapes and values
    (to rounding: the prefix MLP's table is evaluated here), and reads back to the same logits."""
    import json

    from safetensors.numpy import load_file

    ids, mask, types, _ = _inputs(ref)
    model = _model(ref, case)
    d = model.save_adapter(tmp_path / case, adapter=HEAD, format="peft")
    ours, theirs = (json.loads((p / "adapter_config.json").read_text()) for p in (d, FIXTURES / f"peft_{case}"))
    for k in ("peft_type", "task_type", "num_virtual_tokens", "token_dim", "num_layers",
              "num_attention_heads", "prefix_projection", "target_modules", "feedforward_modules",
              "prompt_tuning_init", "encoder_hidden_size"):
        want = theirs.get(k)
        assert (sorted(ours.get(k)) if isinstance(want, list) else ours.get(k)) == \
            (sorted(want) if isinstance(want, list) else want), k
    a, b = load_file(str(d / "adapter_model.safetensors")), load_file(str(FIXTURES / f"peft_{case}" / "adapter_model.safetensors"))
    assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=0, atol=1e-12, err_msg=k)
    other = tiny_model()
    name = other.load_adapter(d)
    np.testing.assert_allclose(other.logits(ids, mask, types, adapter=name),
                               model.logits(ids, mask, types, adapter=HEAD), rtol=0, atol=1e-12)


def test_peft_refuses_adapterhub_prefix_and_bad_ia3(ref, tmp_path):
    from minadapt.errors import ConfigError, WeightsError

    model = _model(ref, "adapterhub_prefix")
    with pytest.raises(ConfigError, match="AdapterHub's prefix"):
        model.save_adapter(tmp_path / "x", adapter=HEAD, format="peft")
    import shutil

    d = tmp_path / "ia3"
    shutil.copytree(FIXTURES / "peft_ia3", d)
    from safetensors.numpy import load_file, save_file

    t = load_file(str(d / "adapter_model.safetensors"))
    k = "base_model.model.bert.encoder.layer.0.attention.output.dense.ia3_l"
    t[k] = t[k].reshape(-1, 1)  # as PEFT saves it when output.dense is not a feed-forward module
    save_file(t, str(d / "adapter_model.safetensors"))
    with pytest.raises(WeightsError, match="scales attention.output.dense's input"):
        tiny_model().load_adapter(d)


# --- centred differences through Model, dropout on and off ----------------------------------------
@pytest.mark.parametrize("ops", ["reference", "fast"])
@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("method,options", [("prompt", dict(virtual_tokens=3)),
                                            ("prefix", dict(virtual_tokens=3)),
                                            ("prefix", dict(virtual_tokens=2, projection=True, width=4)),
                                            ("ia3", {})])
def test_gradients_through_model(method, options, train, ops):
    """Every trainable parameter's gradient against centred differences of Model.loss_and_grads
    (PEFT's fixtures are in evaluation mode; this holds with dropout too, its masks fixed by the
    generator's seed)."""
    from minadapt.gradcheck import numerical_grad, rel_error

    model = tiny_model()
    model.set_ops(ops)
    model.add_classification_head(HEAD, 3)
    model.add(HEAD, method=method, **options)
    rng = np.random.default_rng(7)
    for k in sorted(model.trainable_names(HEAD)):  # off the init, so no gradient is trivially zero
        model.params[k] += 0.3 * rng.standard_normal(model.params[k].shape)
    batch = (*tiny_batch()[:3], np.array([0, 2, 1]))

    def loss(_=None):
        return model.loss_and_grads(*batch, adapter=HEAD, train=train, rng=np.random.default_rng(3))

    _, _, grads = loss()
    assert set(grads) == model.trainable_names(HEAD)
    for k in sorted(grads):
        num = numerical_grad(lambda _: loss()[0], model.params[k], np.array(1.0), h=1e-5)
        assert rel_error(grads[k], num) < 1e-6, k
        assert np.abs(grads[k]).max() > 0, k
