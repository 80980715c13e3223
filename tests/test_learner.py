"""The capstone's path: a learner's own functions (the exercises' solutions here) as the model's ops
bundle (minadapt.learner) give the library's logits and gradients, train, and are told apart
when wrong. A tiny random BERT in float64: seconds, no checkpoint."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from minadapt import learner
from minadapt.exercise import Mistake
from minadapt.model import Model
from tiny import tiny_batch, tiny_model

LESSONS = Path(__file__).resolve().parents[1] / "lessons"
spec = importlib.util.spec_from_file_location("lessons_build", LESSONS / "_build.py")
_build = importlib.util.module_from_spec(spec)
spec.loader.exec_module(_build)


def solutions(replace=None) -> dict:
    """Every stub of every exercise, solved, run into one namespace (as a learner's notebooks
    would define them); replace: (old, new) applied to the stub sources first (a mistake)."""
    from minadapt.backend import erf
    from minadapt.nn import linear, swish

    ns = {"np": np, "erf": erf, "linear": linear, "swish": swish}
    for name, module in _build.EXERCISES.items():
        for cell in _build.build(name, module, solved=True).cells:
            if cell.cell_type == "code" and "# ---- your code ----" in cell.source:
                source = cell.source if replace is None else cell.source.replace(*replace)
                exec(compile(source, name, "exec"), ns)
    return ns


def models(ns):
    """The same tiny model twice, with the library's reference ops and with the learner's."""
    ref = tiny_model()
    ref.set_ops("reference")
    mine = Model(ref.cfg, {k: v.copy() for k, v in ref.params.items()}, ops=learner.ops(ns))
    for m in (ref, mine):
        m.add_adapter("t", bottleneck=3).add_classification_head("t", 2)
        rng = np.random.default_rng(3)  # W_up random (not the identity init): every gradient matters
        for k in sorted(m.trainable_names("t")):
            m.params[k][...] = 0.3 * rng.standard_normal(m.params[k].shape)
    return ref, mine


def test_learner_ops_give_the_library_numbers():
    ref, mine = models(solutions())
    ids, mask, types, labels = tiny_batch()
    l_ref, z_ref, g_ref = ref.loss_and_grads(ids, mask, types, labels, adapter="t", train=False)
    l_me, z_me, g_me = mine.loss_and_grads(ids, mask, types, labels, adapter="t", train=False)
    np.testing.assert_allclose(l_me, l_ref, rtol=1e-12)
    np.testing.assert_allclose(z_me, z_ref, rtol=1e-10, atol=1e-12)
    assert set(g_me) == set(g_ref)
    for k in g_ref:
        np.testing.assert_allclose(g_me[k], g_ref[k], rtol=1e-8, atol=1e-12, err_msg=k)
    np.testing.assert_allclose(mine.logits(ids, mask, types, adapter="t"), z_ref, rtol=1e-10, atol=1e-12)


def test_learner_ops_train_with_dropout():
    """Training mode (the learner's dropout) and the learner's AdamW and schedule: the loss on a
    fixed batch falls, and the frozen backbone is untouched."""
    ns = solutions()
    _, mine = models(ns)
    ids, mask, types, labels = tiny_batch()
    frozen = {k: v.copy() for k, v in mine.params.items() if k not in mine.trainable_names("t")}
    names = sorted(mine.trainable_names("t"))
    state = {k: (np.zeros_like(mine.params[k]), np.zeros_like(mine.params[k])) for k in names}
    first = float(mine.loss_and_grads(ids, mask, types, labels, adapter="t", train=False)[0])
    for step in range(40):
        _, _, grads = mine.loss_and_grads(ids, mask, types, labels, adapter="t", train=True)
        lr = ns["lr_schedule"](step, 40, 4, 5e-2)
        for k in names:
            p, m, v = ns["adamw_step"](mine.params[k], grads[k], *state[k], step + 1, lr, (0.9, 0.999), 1e-8, 0.0)
            mine.params[k][...] = p
            state[k] = (m, v)
    last = float(mine.loss_and_grads(ids, mask, types, labels, adapter="t", train=False)[0])
    assert last < 0.5 * first, (first, last)
    assert all(np.array_equal(mine.params[k], v) for k, v in frozen.items())


@pytest.mark.parametrize("old,new,message", [
    ("dx = dy @ w  # (N, D)", "dx = -dy @ w  # (N, D)", None),  # a sign: the gradients differ
    ("return dh + dy, dw_down, db_down, dw_up, db_up", "return dh + dy, dw_down, db_down, dw_up.T, db_up",
     r"adapter: adapter_backward.s dw_up has shape \(3, 8\), expected \(8, 3\)"),
    ("e = np.exp(s - s.max(axis=-1, keepdims=True))", "e = np.exp(s) / 0.0",
     "attention: division by zero"),
    ("y = x @ w.T + b  # (N, O)", "y = x @ w  # (N, O)", "linear: linear_forward raised ValueError"),
])
def test_a_wrong_learner_op_is_caught(old, new, message):
    ns = solutions(replace=(old, new))
    ref, mine = models(ns)
    ids, mask, types, labels = tiny_batch()
    _, _, g_ref = ref.loss_and_grads(ids, mask, types, labels, adapter="t", train=False)
    if message is None:
        _, _, g_me = mine.loss_and_grads(ids, mask, types, labels, adapter="t", train=False)
        assert any(not np.allclose(g_me[k], g_ref[k]) for k in g_ref)
        return
    with pytest.raises(Mistake, match=message):
        mine.loss_and_grads(ids, mask, types, labels, adapter="t", train=False)


def test_missing_functions_are_named():
    ns = solutions()
    del ns["lr_schedule"], ns["dropout_backward"]
    with pytest.raises(Exception, match=r"dropout_backward \(exercise 4\)"):
        learner.ops(ns)
