"""The BERT family (BERT of another size, RoBERTa, XLM-R, DistilBERT, ELECTRA) against transformers,
AdapterHub and PEFT, on the small random checkpoints of tests/fixtures/family/.

tests/make_family_fixtures.py makes them (rerun it with the `ref` extra installed); these tests need
nothing but minadapt. Padded positions are not compared: nothing reads them, and RoBERTa gives
them another position than minadapt does (see architectures.py).
"""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import minadapt
from minadapt.architectures import ARCHITECTURES
from minadapt.cli import main
from minadapt.config import BertConfig
from minadapt.errors import ConfigError, WeightsError
from minadapt.gradcheck import check, rel_error
from minadapt.nn import embedding
from minadapt.io.weights import read_safetensors, save_tensors
from minadapt.tokenizer import Tokenizer

FAMILY = Path(__file__).parent / "fixtures" / "family"
ARCHS = ("bert", "roberta", "xlm-roberta", "distilbert", "electra")
SENTENCES = ["Hello world.", "The movie was surprisingly good!", "I would not recommend it to anyone."]
PAIRS = ["A film.", "It was fine, really.", "No."]


@pytest.fixture(scope="module", params=ARCHS)
def arch(request):
    return request.param


@pytest.fixture(scope="module")
def ref(arch):
    return read_safetensors(FAMILY / f"{arch}.reference.safetensors")[0]


def _batch(ref, key):
    return ref[f"{key}.input_ids"], ref[f"{key}.attention_mask"], ref[f"{key}.token_type_ids"]


def _close(a, b, tol):
    err = float(np.abs(np.asarray(a) - np.asarray(b)).max())
    assert err < tol, err


# --- the encoder and the tokenizer ----------------------------------------------------------------
@pytest.mark.parametrize("ops", ["fast", "reference"])
@pytest.mark.parametrize("key", ["single", "pair"])
def test_encoder_equals_transformers(arch, ref, key, ops):
    model = minadapt.load_model(FAMILY / arch, dtype="float64", ops=ops)
    assert model.cfg.model_type == arch
    ids, mask, types = _batch(ref, key)
    h = model.encode(ids, mask, types)
    real = mask.astype(bool)
    _close(h[real], ref[f"{key}.last_hidden_state"][real], 1e-10)


@pytest.mark.parametrize("key", ["single", "pair"])
def test_tokenizer_equals_transformers(arch, ref, key):
    """ids, mask and type ids as transformers' tokenizer class gives them: RoBERTa's and XLM-R's
    `<s> a </s></s> b </s>`, and type ids 0 where the model has no token types."""
    tok = Tokenizer(FAMILY / arch)
    b = tok.encode(SENTENCES, PAIRS if key == "pair" else None)
    ids, mask, types = _batch(ref, key)
    if arch == "distilbert":  # its tokenizer class gives pairs type ids 1, which the model never reads
        assert tok.token_types is False and types.any() == (key == "pair")
        types = np.zeros_like(types)
    T = b.input_ids.shape[1]
    assert (b.input_ids == ids[:, :T]).all() and (b.attention_mask == mask[:, :T]).all()
    assert (b.token_type_ids == types[:, :T]).all()
    assert not mask[:, T:].any()
    assert tok.pad_id == json.loads((FAMILY / arch / "config.json").read_text())["pad_token_id"]


def test_roberta_pair_layout_and_no_token_types():
    tok = Tokenizer(FAMILY / "roberta")
    assert tok.tokens("a", "b") == ["<s>", "a", "</s>", "</s>", "b", "</s>"]
    assert not tok.ids_and_types(["a"], ["b"])[1][0].any()
    assert Tokenizer(FAMILY / "bert").ids_and_types(["a"], ["b"])[1][0].tolist() == [0, 0, 0, 1, 1]


def test_roberta_positions_start_after_the_padding_index():
    """The silent wrong answer this guards against: RoBERTa read with BERT's positions."""
    model = minadapt.load_model(FAMILY / "roberta", dtype="float64")
    assert model.cfg.position_offset == 2
    ref = read_safetensors(FAMILY / "roberta.reference.safetensors")[0]
    ids, mask, types = _batch(ref, "single")
    model.cfg = BertConfig(**{**model.cfg.to_dict(), "model_type": "bert"})  # offset 0
    h = model.encode(ids, mask, types)
    assert np.abs(h - ref["single.last_hidden_state"])[mask.astype(bool)].max() > 0.1


def test_only_distilbert_drops_nothing_after_the_attention_output():
    for arch in ARCHS:
        cfg = BertConfig.from_json(FAMILY / arch / "config.json")
        assert cfg.attention_output_dropout_prob == (0.0 if arch == "distilbert" else cfg.hidden_dropout_prob)
        assert cfg.hidden_dropout_prob == 0.1


def test_max_length_leaves_room_for_robertas_four_special_tokens():
    with pytest.raises(ConfigError, match="max_length must be an integer >= 4"):
        Tokenizer(FAMILY / "roberta", max_length=3)
    tok = Tokenizer(FAMILY / "roberta", max_length=4)
    assert len(tok.ids(["a b c"], ["d e f"])[0]) == 4
    Tokenizer(FAMILY / "bert", max_length=3)


def test_max_length_counts_the_position_offset():
    tok = Tokenizer(FAMILY / "roberta", max_length=130)  # 132 rows, 2 before the first token
    assert len(tok.ids(["word " * 200])[0]) == 130
    with pytest.raises(ConfigError, match=r"max_position_embeddings 132 \(130 tokens"):
        tok.set_max_length(131)


def test_bench_refuses_a_length_past_the_offset_positions(capsys):
    code = main(["bench", "--weights", str(FAMILY / "roberta"), "--lengths", "131", "--steps", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "max_position_embeddings (132, 130 tokens after its position offset)" in err, err


# --- adapters against AdapterHub and PEFT ---------------------------------------------------------
def _theirs_to_ours(arch, ref, prefix):
    """{minadapt name: value} for the reference's `prefix.param.*` (or grad) tensors."""
    a = ARCHITECTURES[arch]
    out = {}
    for k, v in ref.items():
        if k.startswith(prefix):
            name = k[len(prefix):]
            if name.startswith("base_model.model."):  # PEFT's in-memory name, adapter "default"
                name = name[len("base_model.model."):].replace(".default.", ".lora.")
            out[a.ours(name)] = v
    return out


def _method_model(arch, ref, method, ops="fast"):
    model = minadapt.load_model(FAMILY / arch, dtype="float64", ops=ops)
    name = {"houlsby": "hb", "pfeiffer": "pf", "lora": "lora"}[method]
    if method == "lora":
        model.add_lora(name, r=4, alpha=8.0, dropout=0.0, targets=("query", "value"))
    else:
        model.add_adapter(name, bottleneck=8, non_linearity="swish" if method == "houlsby" else "relu",
                          architecture=method)
    model.add_classification_head(name, num_labels=2)
    params = _theirs_to_ours(arch, ref, f"{method}.param.")
    assert set(params) == model.trainable_names(name)
    model.put(params)
    return model, name


@pytest.mark.parametrize("ops", ["fast", "reference"])
@pytest.mark.parametrize("method", ["houlsby", "pfeiffer", "lora"])
def test_adapters_equal_adapterhub_and_peft(arch, ref, method, ops):
    model, name = _method_model(arch, ref, method, ops)
    ids, mask, types = _batch(ref, "single")
    labels = np.array([1, 1, 0])
    loss, logits, grads = model.loss_and_grads(ids, mask, types, labels, adapter=name, train=False)
    _close(logits, ref[f"{method}.logits"], 1e-10)
    _close(loss, ref[f"{method}.loss"], 1e-10)
    theirs = _theirs_to_ours(arch, ref, f"{method}.grad.")
    assert set(grads) == set(theirs)
    for k, g in grads.items():
        _close(g, theirs[k], 1e-8)


@pytest.mark.parametrize("method", ["houlsby", "pfeiffer"])
def test_adapterhub_directory_loads_and_saves_in_its_names(arch, ref, method, tmp_path):
    """AdapterHub's own files for this architecture load (DistilBERT's `attention_adapters`, RoBERTa's
    `roberta.` names), run as AdapterHub ran them, and save back under the same names."""
    model = minadapt.load_model(FAMILY / arch, dtype="float64")
    d = FAMILY / f"{arch}.adapterhub_{method}"
    name = model.load_adapter(d)
    ids, mask, types = _batch(ref, "single")
    _close(model.logits(ids, mask, types, adapter=name), ref[f"{method}.logits"], 1e-10)
    out = model.save_adapter(tmp_path / "out", adapter=name, format="adapterhub")
    assert set(read_safetensors(out / "adapter.safetensors")[0]) == set(read_safetensors(d / "adapter.safetensors")[0])
    env = json.loads((out / "adapter_config.json").read_text())
    theirs = json.loads((d / "adapter_config.json").read_text())
    assert (env["model_class"], env["model_type"]) == (theirs["model_class"], theirs["model_type"])


def test_peft_directory_loads_and_saves_in_its_names(arch, ref, tmp_path):
    model = minadapt.load_model(FAMILY / arch, dtype="float64")
    d = FAMILY / f"{arch}.peft_lora"
    name = model.load_adapter(d, name="lora")
    model.add_classification_head("lora")
    model.put({k: v for k, v in _theirs_to_ours(arch, ref, "lora.param.").items() if k.startswith("heads.")})
    ids, mask, types = _batch(ref, "single")
    _close(model.logits(ids, mask, types, adapter=name), ref["lora.logits"], 1e-10)
    out = model.save_adapter(tmp_path / "out", adapter=name, format="peft")
    assert (set(read_safetensors(out / "adapter_model.safetensors")[0])
            == set(read_safetensors(d / "adapter_model.safetensors")[0]))
    ours, theirs = (json.loads((x / "adapter_config.json").read_text()) for x in (out, d))
    assert sorted(ours["target_modules"]) == sorted(theirs["target_modules"])  # q_lin, v_lin in DistilBERT


def test_adapterhub_directory_of_another_architecture_is_refused():
    model = minadapt.load_model(FAMILY / "bert", dtype="float64")
    with pytest.raises(WeightsError, match="made for a roberta model"):
        model.load_adapter(FAMILY / "roberta.adapterhub_houlsby")


# --- gradient checks of what the family adds: offset, no token types, ELECTRA's projection --------
@pytest.mark.parametrize("arch", ["roberta", "distilbert", "electra"])
def test_full_fine_tuning_gradients_through_the_embeddings(arch):
    """Embedding gradients (position rows from the offset on, no type table, ELECTRA's projection)
    against centred differences, on a few elements of each tensor: a flipped sign or a row off by
    the offset fails here."""
    model = minadapt.load_model(FAMILY / arch, dtype="float64", ops="reference")
    model.add_full_finetuning("full")
    ref = read_safetensors(FAMILY / f"{arch}.reference.safetensors")[0]
    ids, mask, types = (a[:2, :8] for a in _batch(ref, "pair"))
    labels = np.array([0, 1])
    _, _, grads = model.loss_and_grads(ids, mask, types, labels, train=False)
    names = sorted(k for k in grads if k.startswith("embeddings"))
    assert ("embeddings.token_type_embeddings.weight" in names) == (arch != "distilbert")
    assert ("embeddings.project.weight" in names) == (arch == "electra")
    width = model.params["embeddings.word_embeddings.weight"].shape[1]
    rows = {"embeddings.word_embeddings.weight": ids[0, :3],
            "embeddings.position_embeddings.weight": np.arange(3) + model.cfg.position_offset,
            "embeddings.token_type_embeddings.weight": [0, 0, 0]}
    h = 1e-5
    for name in names:
        flat = model.params[name].reshape(-1)  # a view: editing it edits the model
        assert np.shares_memory(flat, model.params[name])
        idx = [r * width + c for c, r in enumerate(rows[name])] if name in rows else [0, 1, 2]
        numeric = []
        for i in idx:
            old = flat[i]
            flat[i] = old + h
            plus = float(model.loss_and_grads(ids, mask, types, labels, train=False)[0])
            flat[i] = old - h
            minus = float(model.loss_and_grads(ids, mask, types, labels, train=False)[0])
            flat[i] = old
            numeric.append((plus - minus) / (2 * h))
        analytic = grads[name].reshape(-1)[idx]
        assert np.abs(analytic).max() > 1e-6, name
        assert rel_error(analytic, numeric) < 1e-6, name


@pytest.mark.parametrize("offset, types", [(2, True), (0, False), (3, False)])
def test_embedding_op_gradients_with_an_offset_and_without_token_types(offset, types):
    rng = np.random.default_rng(0)
    ids, tt = rng.integers(0, 7, size=(2, 5)), rng.integers(0, 2, size=(2, 5))
    ww, wp = rng.standard_normal((7, 4)), rng.standard_normal((10, 4))
    wt = rng.standard_normal((2, 4)) if types else None
    e, cache = embedding.forward(ids, tt, ww, wp, wt, offset)
    de = rng.standard_normal(e.shape)
    dww, dwp, dwt = embedding.backward(de, cache)
    assert check(lambda t: embedding.forward(ids, tt, t, wp, wt, offset)[0], ww, de, dww) < 1e-8
    assert check(lambda t: embedding.forward(ids, tt, ww, t, wt, offset)[0], wp, de, dwp) < 1e-8
    assert not dwp[:offset].any() and not dwp[offset + 5:].any()
    if types:
        assert check(lambda t: embedding.forward(ids, tt, ww, wp, t, offset)[0], wt, de, dwt) < 1e-8
    else:
        assert dwt is None


def test_position_gradient_lands_on_the_offset_rows():
    """A flipped offset in the backward (rows 0.. instead of 2..) fails here."""
    model = minadapt.load_model(FAMILY / "roberta", dtype="float64", ops="reference")
    model.add_full_finetuning("full")
    ref = read_safetensors(FAMILY / "roberta.reference.safetensors")[0]
    ids, mask, types = _batch(ref, "single")
    _, _, grads = model.loss_and_grads(ids, mask, types, np.array([1, 1, 0]), train=False)
    g = grads["embeddings.position_embeddings.weight"]
    T = ids.shape[1]
    assert not g[:2].any() and not g[2 + T:].any() and np.abs(g[2:2 + T]).min(axis=1).all()


# --- refused, in one line -------------------------------------------------------------------------
def _copy(arch, tmp_path):
    d = tmp_path / arch
    shutil.copytree(FAMILY / arch, d)
    return d


def _config(d, edit):
    c = json.loads((d / "config.json").read_text())
    edit(c)
    (d / "config.json").write_text(json.dumps(c))


def _cli_error(d, capsys):
    """`minadapt predict` loads the checkpoint before it looks for the adapter file."""
    code = main(["predict", "--adapter", str(d / "nothing.safetensors"), "--weights", str(d), "hi"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def test_unknown_model_type_is_refused(tmp_path, capsys):
    d = _copy("bert", tmp_path)
    _config(d, lambda c: c.update(model_type="deberta-v2"))
    err = _cli_error(d, capsys)
    assert "model_type 'deberta-v2' is not supported" in err and "roberta" in err and "distilbert" in err


def test_model_type_that_is_not_a_name_is_refused():
    with pytest.raises(ConfigError, match=r"model_type \['bert'\] is not supported"):
        BertConfig.from_dict({"model_type": ["bert"]}, source="config.json")


def test_relative_positions_are_refused(tmp_path, capsys):
    d = _copy("bert", tmp_path)
    _config(d, lambda c: c.update(position_embedding_type="relative_key"))
    assert "position_embedding_type 'relative_key'" in _cli_error(d, capsys)


def test_config_missing_a_field_names_it_in_the_files_own_words(tmp_path, capsys):
    d = _copy("distilbert", tmp_path)
    _config(d, lambda c: c.pop("n_heads"))
    err = _cli_error(d, capsys)
    assert "missing required field(s) n_heads" in err and "distilbert" in err


@pytest.mark.parametrize("arch", ["distilbert", "xlm-roberta"])
def test_weights_of_another_architecture_are_refused(arch, tmp_path, capsys):
    """Weights whose names do not fit the config's model_type: the key is named as the file has it."""
    d = _copy(arch, tmp_path)
    _config(d, lambda c: c.update(model_type="bert", hidden_size=32, num_attention_heads=4,
                                  num_hidden_layers=2, intermediate_size=48))
    err = _cli_error(d, capsys)
    assert "model.safetensors" in err and "missing key" in err and "is config.json's model_type" in err
    assert any(k in err for k in (("'transformer.layer.",) if arch == "distilbert" else ("'roberta.", "'lm_head.")))


def test_weights_of_the_wrong_shape_are_refused(tmp_path, capsys):
    d = _copy("electra", tmp_path)
    tensors, meta = read_safetensors(d / "model.safetensors")
    tensors["electra.embeddings_project.weight"] = tensors["electra.embeddings_project.weight"][:, :8].copy()
    save_tensors(d / "model.safetensors", tensors, meta)
    err = _cli_error(d, capsys)
    assert "'electra.embeddings_project.weight' has shape (32, 8), expected (32, 16)" in err


def test_legacy_layer_norm_names_load(tmp_path):
    """bert-base-uncased's checkpoint calls LayerNorm's parameters gamma and beta, with `bert.` names."""
    d = _copy("bert", tmp_path)
    tensors, meta = read_safetensors(d / "model.safetensors")
    renamed = {"bert." + k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
               for k, v in tensors.items()}
    assert sum(k.endswith("gamma") for k in renamed) == 5
    save_tensors(d / "model.safetensors", renamed, meta)
    ref = read_safetensors(FAMILY / "bert.reference.safetensors")[0]
    ids, mask, types = _batch(ref, "pair")
    h = minadapt.load_model(d, dtype="float64").encode(ids, mask, types)
    _close(h[mask.astype(bool)], ref["pair.last_hidden_state"][mask.astype(bool)], 1e-10)


def test_missing_key_is_named_as_the_file_names_it(tmp_path):
    d = _copy("distilbert", tmp_path)
    tensors, meta = read_safetensors(d / "model.safetensors")
    del tensors["transformer.layer.1.sa_layer_norm.bias"]
    save_tensors(d / "model.safetensors", tensors, meta)
    with pytest.raises(WeightsError, match=r"missing key 'transformer\.layer\.1\.sa_layer_norm\.bias'"):
        minadapt.load_model(d)


# --- training through the CLI ---------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_cli_trains_a_few_steps(arch, tmp_path, capsys):
    rows = ["text,label"] + [f"{t},{i % 2}" for i, t in enumerate(["a good film", "dull and long",
                                                                    "i loved it", "a mess"] * 4)]
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "dev.csv").write_text("\n".join(rows[:5]) + "\n")
    out = tmp_path / "run"
    code = main(["train", "--train-file", str(tmp_path / "train.csv"), "--dev-file", str(tmp_path / "dev.csv"),
                 "--weights", str(FAMILY / arch), "--max-steps", "3", "--batch-size", "4", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    model = minadapt.load_model(FAMILY / arch)
    name = model.load_adapter(out / "adapter.safetensors")
    assert model.logits(*model.tokenizer.encode(["a good film"])[:3], adapter=name).shape == (1, 2)
