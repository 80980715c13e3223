"""Prompt tuning, prefix tuning (with and without the reparameterisation) and IA3 through minadapt's
encoder against PEFT (and the prefix against AdapterHub's too) on the tiny random BERT (tests/fixtures/peft_family.safetensors, made by
tests/make_peft_family_fixtures.py): logits and loss to 1e-10, every trainable gradient to 1e-8, in
float64, with the reference ops and the fast ones (whose [CLS]-only last layer the prefix and IA3
pass through too).
"""
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import minadapt.ops
from minadapt import bert, heads
from minadapt.nn import ia3 as ia3_op
from minadapt.nn import loss as loss_op
from minadapt.nn import prefix as prefix_op
from tiny import tiny_model

FIXTURE = Path(__file__).parent / "fixtures" / "peft_family.safetensors"
HEAD = "t"


@pytest.fixture(scope="module")
def ref():
    from safetensors.numpy import load_file

    return load_file(str(FIXTURE))


def _config(case):
    """The run's config and {minadapt name: fixture name} of the method's own parameters."""
    if case == "prompt":
        cfg = SimpleNamespace(name=HEAD, virtual_tokens=3)
        return SimpleNamespace(prompt=cfg), {bert.prompt_name(HEAD): "prompt.embedding"}
    if case in ("prefix", "prefix_mlp", "adapterhub_prefix"):
        projection = case != "prefix"
        cfg = SimpleNamespace(name=HEAD, virtual_tokens=3, projection=projection,
                              shift_positions=case != "adapterhub_prefix")
        ours = bert.prefix_names(HEAD, projection)
        theirs = ["prefix.embedding", "prefix.w1", "prefix.b1", "prefix.w2", "prefix.b2"] if projection \
            else ["prefix.table"]
        return SimpleNamespace(prefix=cfg), dict(zip(ours, theirs))
    cfg = SimpleNamespace(name=HEAD, sites=tuple(ia3_op.SITES))
    names = {bert.ia3_name(i, site, HEAD): f"encoder.layer.{i}.ia3.{site}"
             for i in range(2) for site in ia3_op.SITES}
    return SimpleNamespace(ia3=cfg), names


def _model_and_run(ref, case, ops):
    model = tiny_model()
    model.ops = minadapt.ops.make(ops)
    model.add_classification_head(HEAD, 2)
    method, names = _config(case)
    head = "adapterhub_prefix.param." if case == "adapterhub_prefix" else "head."
    tensors = {k[len(head):]: v for k, v in ref.items() if k.startswith(head + "heads.")}
    tensors.update({ours: ref[f"{case}.param.{theirs}"].reshape(-1) if ".ia3_l." in ours
                    else ref[f"{case}.param.{theirs}"] for ours, theirs in names.items()})
    model.put(tensors)
    trainable = frozenset(set(names) | set(heads.head_names(HEAD)))
    run = bert.Run(ops=model.ops, trainable=trainable, **vars(method))
    return model, run, names


def _loss_and_grads(model, run, ids, mask, types, labels, cls_only=True):
    """Forward, loss, backward through the encoder down to the embeddings or layer 0."""
    h, enc = bert.encoder_forward(model.params, model.qkv, model.cfg, ids, mask, types, run,
                                  cls_only=cls_only)
    logits, head_cache = heads.forward(h[:, 0], model.params, HEAD, 0.0, None, False, run.ops.dropout)
    loss, loss_cache = loss_op.forward(logits, labels)
    (dlogits,) = loss_op.backward(1.0, loss_cache)
    dcls, grads = heads.backward(dlogits, head_cache, HEAD, run.ops.dropout)
    dh = np.zeros(h.shape)
    dh[:, 0] = dcls
    lowest = -1 if run.prompt is not None else 0
    _, enc_grads = bert.encoder_backward(dh, enc, run, lowest)
    grads.update(enc_grads)
    return loss, logits, grads


def _inputs(ref):
    return (ref["inputs.input_ids"], ref["inputs.attention_mask"], ref["inputs.token_type_ids"],
            ref["labels"])


@pytest.mark.parametrize("ops", ["reference", "fast"])
@pytest.mark.parametrize("case", ["prompt", "prefix", "prefix_mlp", "ia3", "adapterhub_prefix"])
def test_matches_peft(ref, case, ops):
    model, run, names = _model_and_run(ref, case, ops)
    loss, logits, grads = _loss_and_grads(model, run, *_inputs(ref))
    np.testing.assert_allclose(logits, ref[f"{case}.logits"], rtol=0, atol=1e-10)
    assert abs(float(loss) - float(ref[f"{case}.loss"])) < 1e-10
    assert set(grads) == set(run.trainable)
    for ours, theirs in {**names, **{k: k for k in heads.head_names(HEAD)}}.items():
        want = ref[f"{case}.grad.{theirs}"]
        np.testing.assert_allclose(grads[ours], want.reshape(grads[ours].shape), rtol=0,
                                   atol=1e-8 * max(1.0, np.abs(want).max()), err_msg=ours)


def test_prefix_mlp_merges_into_the_table_peft_saves(ref):
    e, w1, b1, w2, b2 = (ref[f"prefix_mlp.param.prefix.{k}"] for k in ("embedding", "w1", "b1", "w2", "b2"))
    np.testing.assert_allclose(prefix_op.merge(e, w1, b1, w2, b2), ref["prefix_mlp.table"],
                               rtol=0, atol=1e-12)
    # and the merged table, run as a plain prefix, gives the reparameterised model's logits
    model, run, _ = _model_and_run(ref, "prefix", "reference")
    model.put({bert.prefix_names(HEAD, False)[0]: ref["prefix_mlp.table"]})
    _, logits, _ = _loss_and_grads(model, run, *_inputs(ref))
    np.testing.assert_allclose(logits, ref["prefix_mlp.logits"], rtol=0, atol=1e-10)


def test_ia3_at_one_is_the_backbone_and_is_where_peft_puts_it(ref):
    model, run, names = _model_and_run(ref, "ia3", "reference")
    ids, mask, types, labels = _inputs(ref)
    bare = bert.Run(ops=model.ops)
    h_bare = bert.encoder_forward(model.params, model.qkv, model.cfg, ids, mask, types, bare)[0]
    model.put({k: np.ones_like(model.params[k]) for k in names})
    h_one = bert.encoder_forward(model.params, model.qkv, model.cfg, ids, mask, types, run)[0]
    np.testing.assert_array_equal(h_one, h_bare)
    import json
    from safetensors import safe_open

    with safe_open(str(FIXTURE), "np") as f:
        meta = json.loads(f.metadata()["ia3_config"])
    # PEFT's BERT default: key, value, output.dense, with output.dense (which also names the
    # attention's output projection) a feed-forward module, scaled on its input
    assert meta == {"target_modules": ["key", "output.dense", "value"], "feedforward_modules": ["output.dense"]}
    assert ref["ia3.param.encoder.layer.0.ia3.attention.output.dense"].shape == (1, 8)  # (1, in): input
    assert ref["ia3.param.encoder.layer.0.ia3.key"].shape == (8, 1)  # (out, 1): output


def test_prompt_lengthens_the_sequence_and_prefix_the_keys(ref):
    ids, mask, types, _ = _inputs(ref)
    model, run, _ = _model_and_run(ref, "prompt", "reference")
    h, _ = bert.encoder_forward(model.params, model.qkv, model.cfg, ids, mask, types, run)
    assert h.shape[1] == ids.shape[1] + 3
    model, run, _ = _model_and_run(ref, "prefix", "reference")
    h, cache = bert.encoder_forward(model.params, model.qkv, model.cfg, ids, mask, types, run)
    assert h.shape[1] == ids.shape[1] and cache.layers[0].attn.attn.a.shape[-1] == ids.shape[1] + 3
