"""Adapter formats both ways: AdapterHub's directory (Houlsby, Pfeiffer) and PEFT's LoRA directory.

Directories AdapterHub itself trained and saved (tests/fixtures/adapterhub_*, made by
tests/make_method_fixtures.py) load and give AdapterHub's logits. The tests marked as needing the
reference libraries (torch, adapters, peft) skip without them; run them with those installed, e.g.
`PYTHONPATH=. /path/to/refvenv/bin/python -m pytest tests/test_formats.py`."""
import json
from pathlib import Path

import numpy as np
import pytest

import minadapt
from minadapt.errors import ConfigError, WeightsError
from minadapt.io import detect_format
from minadapt.io.weights import read_safetensors

from tiny import tiny_batch, tiny_model

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def ref():
    return read_safetensors(FIXTURES / "methods.safetensors")[0]


@pytest.fixture(scope="module")
def model32(checkpoint_dir):
    return minadapt.load_model(checkpoint_dir, dtype="float32")


def _inputs(t):
    return t["inputs.input_ids"], t["inputs.attention_mask"], t["inputs.token_type_ids"]


def _randomise(model, name, seed=0, std=0.05):
    rng = np.random.default_rng(seed)
    for k in sorted(model.trainable_names(name)):
        model.params[k][...] = std * rng.standard_normal(model.params[k].shape)


@pytest.mark.parametrize("kind,name,arch,m", [("houlsby", "hb", "houlsby", 6), ("pfeiffer", "pf", "pfeiffer", 12)])
def test_loads_what_adapterhub_trained_and_saved(ref, model32, kind, name, arch, m):
    directory = FIXTURES / f"adapterhub_{kind}"
    assert detect_format(directory) == "adapterhub"
    assert model32.load_adapter(directory) == name
    try:
        assert model32.method(name) == arch and model32.config_of(name).bottleneck == m
        logits = model32.logits(*_inputs(ref), adapter=name)
        assert np.abs(logits - ref[f"ah_{kind}.logits"]).max() < 1e-5
    finally:
        model32.remove(name)


def test_adapterhub_round_trip_and_refusals(tmp_path):
    model = tiny_model()
    model.add_adapter("p", architecture="pfeiffer", bottleneck=3, non_linearity="relu")
    model.add_classification_head("p", num_labels=3, labels=["a", "b", "c"], dropout=0.2)
    model.add_adapter("h", bottleneck=3, non_linearity="gelu_tanh")
    model.add_classification_head("h")
    _randomise(model, "p")
    _randomise(model, "h", 1)
    batch = tiny_batch()[:3]
    for name in ("p", "h"):
        d = model.save_adapter(tmp_path / name, adapter=name, format="adapterhub")
        other = tiny_model()
        assert other.load_adapter(d) == name
        assert other.config_of(name) == model.config_of(name).__class__(
            **{**model.config_of(name).__dict__, "init_std": other.config_of(name).init_std})
        assert other.heads[name] == model.heads[name]
        assert np.array_equal(other.logits(*batch), model.logits(*batch, adapter=name))
    config = json.loads((tmp_path / "p" / "adapter_config.json").read_text())
    assert config["config"]["reduction_factor"] * 3 == pytest.approx(8)
    # trained LayerNorm copies and LoRA have no AdapterHub config
    model.add_adapter("ln", bottleneck=2, train_layer_norms=True)
    with pytest.raises(ConfigError, match="LayerNorm"):
        model.save_adapter(tmp_path / "ln", adapter="ln", format="adapterhub")
    # a config minadapt does not implement is named
    config["config"]["ln_after"] = True
    (tmp_path / "p" / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsError, match="ln_after"):
        tiny_model().load_adapter(tmp_path / "p")


def test_torch_pickles_are_refused_with_a_clear_message(tmp_path):
    d = tmp_path / "old"
    d.mkdir()
    (d / "adapter_config.json").write_text((FIXTURES / "adapterhub_pfeiffer" / "adapter_config.json").read_text())
    (d / "pytorch_adapter.bin").write_bytes(b"\x80\x02 not read")
    with pytest.raises(WeightsError, match="pytorch_adapter.bin.*safetensors.*use_safetensors=True"):
        tiny_model(hidden_size=384, num_attention_heads=12).load_adapter(d)
    with pytest.raises(WeightsError, match="adapter_config.json"):
        tiny_model().load_adapter(tmp_path)


def test_peft_round_trip(tmp_path):
    model = tiny_model()
    model.add_lora("lo", r=2, alpha=4, dropout=0.1)
    model.add_classification_head("lo", num_labels=2)
    _randomise(model, "lo")
    d = model.save_adapter(tmp_path / "peft", adapter="lo", format="peft")
    assert detect_format(d) == "peft"
    other = tiny_model()
    assert other.load_adapter(d) == "lo"
    assert other.config_of("lo") == model.config_of("lo")
    batch = tiny_batch()[:3]
    assert np.array_equal(other.logits(*batch), model.logits(*batch, adapter="lo"))
    with pytest.raises(ConfigError, match="not LoRA"):
        model.add_adapter("x") and model.save_adapter(tmp_path / "x", adapter="x", format="peft")


def test_minadapt_format_keeps_every_method(tmp_path):
    for add in (lambda m: m.add_lora("t", r=2), lambda m: m.add_adapter("t", architecture="pfeiffer", bottleneck=2),
                lambda m: m.add_full_finetuning("t"), lambda m: m.add_probe("t")):
        model = tiny_model()
        add(model)
        if "t" not in model.heads:
            model.add_classification_head("t")
        _randomise(model, "t")
        path = model.save_adapter(tmp_path / "t.safetensors", adapter="t")
        other = tiny_model()
        other.load_adapter(path, check_backbone=False)
        assert other.method("t") == model.method("t")
        batch = tiny_batch()[:3]
        assert np.array_equal(other.logits(*batch), model.logits(*batch))


# --- the reference libraries load what minadapt wrote ---------------------------------------------
@pytest.mark.parametrize("arch", ["houlsby", "pfeiffer"])
def test_adapterhub_loads_ours(ref, model32, checkpoint_dir, tmp_path, arch):
    torch = pytest.importorskip("torch")
    adapters = pytest.importorskip("adapters")
    model32.add_adapter("ours", architecture=arch, bottleneck=16 if arch == "houlsby" else None)
    model32.add_classification_head("ours", num_labels=3)
    try:
        _randomise(model32, "ours")
        d = model32.save_adapter(tmp_path / "ah", adapter="ours", format="adapterhub")
        want = model32.logits(*_inputs(ref), adapter="ours")
    finally:
        model32.remove("ours")
    theirs = adapters.BertAdapterModel.from_pretrained(str(checkpoint_dir), attn_implementation="eager")
    name = theirs.load_adapter(str(d), use_safetensors=True, set_active=True)
    assert name == "ours" and "ours" in theirs.heads
    theirs.eval()
    with torch.no_grad():
        got = theirs(*(torch.from_numpy(a) for a in _inputs(ref))).logits.numpy()
    assert np.abs(got - want).max() < 1e-5


def test_peft_loads_ours_and_we_load_peft(ref, model32, checkpoint_dir, tmp_path):
    torch = pytest.importorskip("torch")
    peft = pytest.importorskip("peft")
    from transformers import BertModel

    model32.add_lora("lo", r=4, alpha=8, dropout=0.0)
    try:
        _randomise(model32, "lo")
        d = model32.save_adapter(tmp_path / "peft", adapter="lo", format="peft")
        want = model32.encode(*_inputs(ref), adapter="lo")
    finally:
        model32.remove("lo")
    base = BertModel.from_pretrained(str(checkpoint_dir), add_pooling_layer=False, attn_implementation="eager")
    pm = peft.PeftModel.from_pretrained(base, str(d)).eval()
    ids, mask, types = (torch.from_numpy(a) for a in _inputs(ref))
    with torch.no_grad():
        got = pm(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state.numpy()
    real = _inputs(ref)[1].astype(bool)
    assert np.abs(got - want)[real].max() < 1e-5
    pm.save_pretrained(str(tmp_path / "theirs"))  # and PEFT's own save reads back
    assert model32.load_adapter(tmp_path / "theirs", name="back") == "back"
    try:
        assert np.abs(model32.encode(*_inputs(ref), adapter="back") - want)[real].max() < 1e-6
    finally:
        model32.remove("back")
