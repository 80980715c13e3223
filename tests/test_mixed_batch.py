"""Different tasks in one batch, and compositions beyond the AdapterHub fixtures (Pfeiffer adapters,
probes, adapters with their own LayerNorms): every row equals that row run alone (float64, 1e-12),
each task's gradients equal its rows' run alone, and compose's backward against centred differences
through the whole encoder (a flipped sign fails)."""
import inspect

import numpy as np
import pytest

from minadapt import compose
from minadapt.gradcheck import numerical_grad, rel_error

from tiny import tiny_batch, tiny_model


def make_model():
    """Tasks: hb (Houlsby), pf (Pfeiffer), ln (Houlsby training its own LayerNorms), probe (no
    adapter), and fu (Fuse(hb, hb2) with its own head). Adapters' up-projections random, so that
    every adapter changes the output."""
    model = tiny_model()
    model.add_adapter("hb", bottleneck=3, seed=1)
    model.add_adapter("hb2", bottleneck=3, seed=2, non_linearity="gelu")
    model.add_adapter("pf", bottleneck=2, architecture="pfeiffer", seed=3, non_linearity="relu")
    model.add_adapter("pf2", bottleneck=2, architecture="pfeiffer", seed=4)
    model.add_adapter("ln", bottleneck=2, train_layer_norms=True, seed=5)
    model.add_probe("probe", num_labels=3, seed=6)
    for name in ("hb", "hb2", "pf", "pf2", "ln", "fu", "fupf", "stack", "avg"):
        model.add_classification_head(name, num_labels=2, seed=7)
    rng = np.random.default_rng(9)
    for k in list(model.params):
        if ".adapters." in k and "adapter_up" in k or ".adapters.ln.LayerNorm" in k:
            model.params[k] = model.params[k] + 0.5 * rng.standard_normal(model.params[k].shape)
    return model


def block(model, name):
    a = model.adapters
    return {"hb": a["hb"], "pf": a["pf"], "ln": a["ln"], "probe": None,
            "fu": compose.Fuse(a["hb"], a["hb2"]),
            "fupf": compose.Fuse(a["pf"], a["pf2"]),
            "stack": compose.Stack(a["pf"], a["hb"]),
            "avg": compose.Average(a["pf"], a["pf2"], weights=[1, 3])}[name]


def head(name):
    return name


def add_fusion(model, fuse, seed=11):
    """Random fusion layers (value matrix included) at the sites its adapters sit at."""
    from minadapt import bert
    from minadapt.nn import fusion
    rng = np.random.default_rng(seed)
    for i in range(model.cfg.num_hidden_layers):
        for where in bert.ADAPTER_SITES[fuse.children[0].architecture]:
            p = compose.fusion_prefix(i, where, fuse)
            for k, v in fusion.init_params(model.cfg.hidden_size, rng, np.float64).items():
                model.params[p + k] = v + 0.3 * rng.standard_normal(v.shape)


def trainable(model, names):
    out = set()
    for n in names:
        b = block(model, n)
        out |= {k for k in model.params if k.startswith(f"heads.{head(n)}.")}
        if isinstance(b, compose.Fuse):
            out |= {k for k in model.params if f".adapter_fusion_layer.{b.name}." in k}
        elif b is not None:
            for a in (b.leaves() if isinstance(b, compose.Block) else (b,)):
                out |= model.trainable_names(a.name) - {k for k in model.params if k.startswith("heads.")}
    return out


@pytest.fixture(scope="module")
def model():
    m = make_model()
    add_fusion(m, block(m, "fu"))
    add_fusion(m, block(m, "fupf"), seed=12)
    return m


TASKS = ["hb", "pf", "fu", "probe", "ln", "hb", "stack", "fupf", "avg", "pf"]


def batch(B=len(TASKS)):
    ids, mask, types, _ = tiny_batch(B=B, T=6)
    mask[3:6, -3:] = 0
    labels = np.array([i % 2 for i in range(B)])
    return ids, mask, types, labels


def groups_of(model, tasks):
    order = list(dict.fromkeys(tasks))
    return [(block(model, t), head(t), [r for r, x in enumerate(tasks) if x == t]) for t in order]


def test_every_row_equals_its_row_alone(model):
    ids, mask, types, labels = batch()
    groups = groups_of(model, TASKS)
    mixed = compose.run_groups(model, ids, mask, types, groups)
    for (b, h, rows), lg in zip(groups, mixed):
        for j, r in enumerate(rows):
            (alone,) = compose.run_groups(model, ids[r:r + 1], mask[r:r + 1], types[r:r + 1],
                                          [(b, h, [0])])
            assert np.max(np.abs(lg[j] - alone[0])) < 1e-12, (TASKS[r], r)


def test_each_task_s_gradients_are_its_rows_alone(model):
    """Each task's gradients are those of its rows run alone; an adapter that several tasks run
    (hb alone and under Stack) gets the sum of theirs."""
    ids, mask, types, labels = batch()
    groups = groups_of(model, TASKS)
    names = trainable(model, set(TASKS))
    per_task = [trainable(model, [t]) for t in dict.fromkeys(TASKS)]
    loss, _, grads = compose.run_groups(model, ids, mask, types, groups, labels, trainable=per_task)
    total, summed = 0.0, {}
    for t, (b, h, rows) in zip(dict.fromkeys(TASKS), groups):
        l, _, g = compose.run_groups(model, ids[rows], mask[rows], types[rows], [(b, h, slice(None))],
                                     labels[rows], trainable=trainable(model, [t]))
        total += float(l)
        for k, v in g.items():
            summed[k] = summed[k] + v if k in summed else v
    assert set(summed) == set(grads) == names
    for k in names:
        assert np.max(np.abs(summed[k] - grads[k])) < 1e-12, k
    assert abs(total - float(loss)) < 1e-12


def test_mixed_batch_equals_the_single_adapter_path(model):
    """A lone adapter through compose's Rows equals the model's own single-adapter path."""
    ids, mask, types, labels = batch(4)
    for name in ("hb", "pf", "ln"):
        (lg,) = compose.run_groups(model, ids, mask, types, [(model.adapters[name], name, [0, 1, 2, 3])])
        (lg2,) = compose.run_groups(model, ids, mask, types, [(compose.Rows([(model.adapters[name], [0, 2]),
                                                               (model.adapters[name], [1, 3])]), name, slice(None))])
        assert np.max(np.abs(lg - model.logits(ids, mask, types, adapter=name))) < 1e-12
        assert np.max(np.abs(lg2 - lg)) < 1e-12


@pytest.mark.parametrize("tasks", [["fupf", "hb", "probe"], ["avg", "ln", "probe"], ["fu", "pf"], ["stack"]])
def test_gradcheck_through_the_encoder(model, tasks):
    """Every trainable parameter of a mixed batch against centred differences of its loss (tasks
    chosen so that no adapter both trains and sits frozen under a Fuse in the same batch)."""
    ids, mask, types, labels = batch(4)
    rows = [tasks[r % len(tasks)] for r in range(4)]
    groups = groups_of(model, rows)
    names = sorted(trainable(model, tasks))
    _, _, grads = compose.run_groups(model, ids, mask, types, groups, labels, trainable=set(names))
    assert set(grads) == set(names)
    rng = np.random.default_rng(0)
    for k in names:
        if k.startswith("heads."):
            continue  # heads.py's own tests check them
        p = model.params[k]
        flat = p.reshape(-1)
        pick = rng.choice(flat.size, size=min(flat.size, 6), replace=False)

        def f(_):
            return np.asarray(compose.run_groups(model, ids, mask, types, groups, labels)[0])
        num = np.zeros(len(pick))
        for j, e in enumerate(pick):
            old = flat[e]
            flat[e] = old + 1e-6
            plus = float(f(None))
            flat[e] = old - 1e-6
            minus = float(f(None))
            flat[e] = old
            num[j] = (plus - minus) / 2e-6
        # rounding in the differences is near eps |loss| / h ~ 1e-10: an absolute floor above it
        got = grads[k].reshape(-1)[pick]
        assert np.max(np.abs(got - num)) < 1e-6 * np.max(np.abs(num)) + 1e-9, k


def test_flipped_sign_in_compose_backward_fails(model):
    """apply_backward with the adapter's skip branch negated: the fusion's gradients go wrong."""
    line = "return dy + dh, dres"
    src = inspect.getsource(compose.apply_backward)
    assert line in src
    ns = dict(vars(compose))
    exec(src.replace(line, "return dy - dh, dres"), ns)
    ids, mask, types, labels = batch(4)
    groups = groups_of(model, ["stack", "hb"] * 2)
    names = trainable(model, ["stack", "hb"])
    _, _, right = compose.run_groups(model, ids, mask, types, groups, labels, trainable=names)
    saved = compose.apply_backward
    try:
        compose.apply_backward = ns["apply_backward"]
        ns["apply_backward"].__globals__["apply_backward"] = ns["apply_backward"]
        _, _, wrong = compose.run_groups(model, ids, mask, types, groups, labels, trainable=names)
    finally:
        compose.apply_backward = saved
    k = "encoder.layer.0.output.adapters.pf.adapter_down.0.weight"
    assert rel_error(wrong[k], right[k]) > 1e-2


# --- through the Model: adapter=[a task per row] ---------------------------------------------------
MODEL_TASKS = ["hb", "probe", "pf", "hb", "ln", "pf", "probe", "ln"]


def test_model_logits_per_row_equal_rows_alone(model):
    ids, mask, types, _ = batch(len(MODEL_TASKS))
    out = model.logits(ids, mask, types, adapter=MODEL_TASKS)
    assert list(out) == list(dict.fromkeys(MODEL_TASKS))
    for t, lg in out.items():
        rows = [r for r, x in enumerate(MODEL_TASKS) if x == t]
        assert lg.shape == (len(rows), model.heads[t].num_labels)
        for j, r in enumerate(rows):
            alone = model.logits(ids[r:r + 1], mask[r:r + 1], types[r:r + 1], adapter=t)
            assert np.max(np.abs(lg[j] - alone[0])) < 1e-12, (t, r)


def test_model_loss_and_grads_per_task(model):
    ids, mask, types, labels = batch(len(MODEL_TASKS))
    loss, logits, grads = model.loss_and_grads(ids, mask, types, labels, adapter=MODEL_TASKS, train=False)
    assert set(grads) == set().union(*(model.trainable_names(t) for t in MODEL_TASKS))
    total = 0.0
    for t in dict.fromkeys(MODEL_TASKS):
        rows = [r for r, x in enumerate(MODEL_TASKS) if x == t]
        l, lg, g = model.loss_and_grads(ids[rows], mask[rows], types[rows], labels[rows], adapter=t,
                                        train=False)
        total += float(l)
        assert np.max(np.abs(lg - logits[t])) < 1e-12
        for k, v in g.items():
            assert np.max(np.abs(v - grads[k])) < 1e-12, (t, k)
    assert abs(total - float(loss)) < 1e-12


def test_float32_rows_equal_to_rounding():
    """float32: a row in a batch equals the row alone to rounding, not bit for bit (BLAS may
    block a (B T, H) product differently for another B)."""
    m = make_model()
    m32 = type(m)(m.cfg, {k: v.astype(np.float32) for k, v in m.params.items()}, backbone=m.backbone)
    m32.methods, m32.heads, m32._trainable = m.methods, m.heads, m._trainable
    ids, mask, types, _ = batch(len(MODEL_TASKS))
    out = m32.logits(ids, mask, types, adapter=MODEL_TASKS)
    for t, lg in out.items():
        assert lg.dtype == np.float32
        rows = [r for r, x in enumerate(MODEL_TASKS) if x == t]
        for j, r in enumerate(rows):
            alone = m32.logits(ids[r:r + 1], mask[r:r + 1], types[r:r + 1], adapter=t)
            assert np.allclose(lg[j], alone[0], rtol=1e-5, atol=1e-5), (t, r)


def test_bad_mixed_batches_say_what_is_wrong(model):
    from minadapt.errors import ConfigError
    ids, mask, types, labels = batch(3)
    with pytest.raises(ConfigError, match=r"^row 1: no task named 'nope' \(this model holds: .*hb"):
        model.logits(ids, mask, types, adapter=["hb", "nope", "hb"])
    with pytest.raises(ConfigError, match="names 2 tasks for a batch of 3 rows"):
        model.logits(ids, mask, types, adapter=["hb", "pf"])
    m = make_model()
    m.add_lora("lo", r=2)
    m.add_classification_head("lo")
    with pytest.raises(ConfigError, match="row 2: task 'lo' adapts the backbone by lora"):
        m.loss_and_grads(ids, mask, types, labels, adapter=["hb", "pf", "lo"])
