"""The exercise notebooks (lessons/exercises/) can be solved, and their checks tell mistakes apart.

For every stub: filled with its solution (the source in lessons/_src/eNN_*.py), its check passes;
left unfilled, the check stops at the stub (NotImplementedError: it really calls the learner's
code); filled with each typical mistake of WRONG below, the check fails with that mistake's
diagnosis. The stubs run in this process, cell by cell up to the stub's check; each notebook also
runs solved from end to end in a kernel, as a learner's would.
"""
import contextlib
import importlib.util
import io
import linecache
import os
from pathlib import Path

import pytest

LESSONS = Path(__file__).resolve().parents[1] / "lessons"
spec = importlib.util.spec_from_file_location("lessons_build", LESSONS / "_build.py")
_build = importlib.util.module_from_spec(spec)
spec.loader.exec_module(_build)

# stub (the first function its cell defines) -> typical mistakes: (solution text, replaced by,
# a piece of the diagnosis the check must give)
WRONG = {
    "linear_forward": [
        ("dx = dy @ w", "dx = -dy @ w", "backward, dx looks wrong -> sign"),
        ("dw = dy.T @ x", "dw = x.T @ dy", "backward, dw looks wrong -> transpose"),
        ("db = dy.sum(axis=0)", "db = dy", "backward, db looks wrong -> missing sum over the batch"),
        ("db = dy.sum(axis=0)", "db = dy.mean(axis=0)", "db looks wrong -> scale (off by x 1/4)"),
        ("y = x @ w.T + b", "y = x @ w.T", "forward looks wrong -> the bias b is missing"),
        ("dx = dy @ w", "dx = dy @ w.T", "linear_backward raised ValueError: matmul: Input operand 1 has a "
                                         "mismatch in its core dimension 0"),
        ("dx = dy @ w", "dx = dy @ w.T", "-- in your linear_backward, line 11: dx = dy @ w.T"),
        ("db = dy.sum(axis=0)", "db = dy.sum()", "db has shape (), expected (5,), the shape of b"),
        ("dx = dy @ w", "dy[:, 0] = 0.0\n    dx = dy @ w", "backward changed its input dy (the upstream gradient) "
                                                         "in place"),
    ],
    "gelu_forward": [
        ("return (dy * (cdf + x * pdf),)", "return (dy * cdf,)", "dx looks wrong -> product rule"),
        ("return (dy * (cdf + x * pdf),)", "return (cdf + x * pdf,)",
         "dx looks wrong -> not multiplied by the upstream gradient dy"),
        ("cdf = 0.5 * (1.0 + erf(x / np.sqrt(2.0)))",
         "cdf = 0.5 * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))",
         "forward looks wrong -> tanh approximation"),
        ("pdf = np.exp(-0.5 * x * x) / np.sqrt(2.0 * np.pi)", "pdf = np.exp(-0.5 * x * x)",
         "dx looks wrong -> phi(x) lacks its 1/sqrt(2 pi)"),
        ("return x * cdf, (x, cdf)", "y = x\n    y *= cdf\n    return y, (x, cdf)",
         "forward changed its input x in place"),
        ("return (dy * (cdf + x * pdf),)", "dy *= cdf + x * pdf\n    return (dy,)",
         "backward changed its input dy (the upstream gradient) in place"),
    ],
    "layernorm_forward": [
        ("dx = rstd * (g - g.mean(axis=-1, keepdims=True) - xhat * (g * xhat).mean(axis=-1, keepdims=True))",
         "dx = g * rstd", "dx looks wrong -> mean and variance treated as constants"),
        ("return dx, (dy * xhat).sum(axis=0), dy.sum(axis=0)", "return dx, dy * xhat, dy.sum(axis=0)",
         "dgamma looks wrong -> missing sum over the batch"),
        ("return dx, (dy * xhat).sum(axis=0), dy.sum(axis=0)",
         "return dx, dy.sum(axis=0), (dy * xhat).sum(axis=0)", "dgamma looks wrong -> swapped: this is the right dbeta"),
        ("g * xhat).mean(axis=-1, keepdims=True))", "g * xhat).mean(axis=-1, keepdims=True) * 0)",
         "dx looks wrong -> missing the - xhat mean(g xhat) term"),
        ("var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)", "var = x.var(axis=-1, ddof=1, keepdims=True)",
         "forward looks wrong -> variance divided by H - 1"),
        ("rstd = 1.0 / np.sqrt(var + eps)", "rstd = 1.0 / (np.sqrt(var) + eps)",
         "forward looks wrong -> eps added outside the square root"),
        ("var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)", "var = mu * mu - (x * x).mean(axis=-1, keepdims=True)",
         "layernorm: square root of a negative number -- in your layernorm_forward, line 5"),
        ("return dx, (dy * xhat).sum(axis=0), dy.sum(axis=0)", "return dx, (dy * xhat).sum(axis=0), dy.sum()",
         "dbeta has shape (), expected (6,), the shape of beta"),
    ],
    "softmax_forward": [
        ("e = np.exp(s - s.max(axis=-1, keepdims=True))", "e = np.exp(s)",
         "softmax: overflow: exp of a large number (above ~709 in float64); subtract each row's maximum before "
         "exp -- in your softmax_forward, line 3: e = np.exp(s)"),
        ("e = np.exp(s - s.max(axis=-1, keepdims=True))", "e = np.exp(s - s.max())",
         "softmax: 0/0 (or inf/inf): a denominator that underflowed to 0"),
        ("return (a * (da - (da * a).sum(axis=-1, keepdims=True)),)",
         "da -= (da * a).sum(axis=-1, keepdims=True)\n    return (a * da,)",
         "backward changed its input dy (the upstream gradient) in place"),
        ("return (a * (da - (da * a).sum(axis=-1, keepdims=True)),)", "return (a * da,)",
         "ds looks wrong -> only the diagonal of the Jacobian"),
        ("return (a * (da - (da * a).sum(axis=-1, keepdims=True)),)",
         "return (a * ((da * a).sum(axis=-1, keepdims=True) - da),)", "ds looks wrong -> sign"),
    ],
    "attention_forward": [
        ("* scale + bias", "* scale", "forward looks wrong -> the mask is not applied"),
        ("scale = 1.0 / np.sqrt(q.shape[-1])\n    s =", "scale = 1.0\n    s =",
         "forward looks wrong -> scores not scaled by 1/sqrt(hs)"),
        ("dq = ds @ k * scale", "dq = ds @ k", "dq looks wrong -> scale (off by x 1.732)"),
        ("dv = np.swapaxes(a, -1, -2) @ dc", "dv = a @ dc", "dv looks wrong -> transpose: dv = a^T dc"),
        ("dk = np.swapaxes(ds, -1, -2) @ q * scale", "dk = ds @ q * scale",
         "dk looks wrong -> transpose: dk = ds^T q"),
        ("a, _ = softmax_forward(s)", "e = np.exp(s)\n    a = e / e.sum(axis=-1, keepdims=True)",
         "attention: overflow: exp of a large number"),
        ("dk = np.swapaxes(ds, -1, -2) @ q * scale", "dk = ds @ np.swapaxes(q, -1, -2) * scale",
         "attention_backward raised ValueError"),
    ],
    "adapter_forward": [
        ("return dh + dy, dw_down", "return dh, dw_down", "dh looks wrong -> the skip connection's + dy is missing"),
        ("(dz,) = swish.backward(du, act)", "dz = du", "dh looks wrong -> the non-linearity's backward is skipped"),
        ("return h + y, (down, act, up)", "return y, (down, act, up)",
         "forward looks wrong -> the skip connection (+ h) is missing"),
        ("du, dw_up, db_up = linear.backward(dy, up)", "du, db_up, dw_up = linear.backward(dy, up)",
         "dw_up looks wrong -> swapped: this is the right db_up"),
        ("return h + y, (down, act, up)", "h += y\n    return h, (down, act, up)", "forward changed its input h in place"),
        ("return dh + dy, dw_down, db_down, dw_up, db_up", "return dh + dy, dw_down, db_down, dw_up.T, db_up",
         "dw_up looks wrong -> transpose: yours is the transpose of the right one (shape (3, 6), expected (6, 3))"),
        ("return dh + dy, dw_down, db_down, dw_up, db_up", "return dh + dy, dw_down, db_down, dw_up, db_up[None]",
         "db_up has shape (1, 6), expected (6,), the shape of b_up"),
    ],
    "layer_backward": [
        ("dh = dh + ds2", "dh = dh", "the attention adapter's dadapter_down.0.weight looks wrong -> "
                                    "the residual branch of o + h is missing"),
        ("return dx + ds1,", "return dx,", "dx looks wrong -> the residual branch of a + x is missing"),
        ("(df,) = gelu.backward(df, r.gelu)", "pass", "the attention adapter's dadapter_down.0.weight looks "
                                                      "wrong -> the GELU backward is skipped"),
        ("np.concatenate([dq, dk, dv], axis=-1)", "np.concatenate([dq, dk], axis=-1)",
         "then in minadapt/nn/linear.py line"),
    ],
    "head_forward": [
        ("dlogits /= B", "pass", "dh_cls looks wrong -> scale (off by x 4): a sum over the batch"),
        ("dlogits /= B", "dlogits = -dlogits / B", "dh_cls looks wrong -> sign"),
        ("dw4, db4 = dlogits.T @ t", "dw4, db4 = t.T @ dlogits", "dw4 looks wrong -> transpose"),
        ("z = logits - logits.max(axis=1, keepdims=True)", "z = logits", "head: overflow: exp of a large number"),
        ("loss = -np.log(p[np.arange(B), labels]).mean()", "loss = -np.log(p[np.arange(B), labels]).sum()",
         "forward looks wrong -> a sum over the batch where the mean belongs (yours is 4 x the right one)"),
        ("loss = -np.log(p[np.arange(B), labels]).mean()", "loss = np.log(p[np.arange(B), labels]).mean()",
         "forward looks wrong -> sign: yours is minus the right one (a loss"),
    ],
    "prefix_forward": [
        ("dk2[:, :n].sum(axis=0), dv2[:, :n].sum(axis=0)", "dk2[:, :n], dv2[:, :n].sum(axis=0)",
         "backward, dpk looks wrong -> missing sum over the batch"),
        ("dk2[:, :n].sum(axis=0), dv2[:, :n].sum(axis=0)", "dk2[:, :n].sum(axis=0), dv2[:, :n].mean(axis=0)",
         "backward, dpv looks wrong -> scale (off by x 1/2): a mean over the batch"),
        ("np.zeros((B, 1, 1, n))", "np.full((B, 1, 1, n), np.finfo(np.float64).min)",
         "forward looks wrong -> the prefix is masked out"),
        ("return dq, dk2[:, n:], dv2[:, n:], dk2[:, :n].sum(axis=0), dv2[:, :n].sum(axis=0)",
         "return dq, dk2[:, n:], dv2[:, n:], dv2[:, :n].sum(axis=0), dk2[:, :n].sum(axis=0)",
         "backward, dpk looks wrong -> swapped: this is the right dpv"),
    ],
    "adamw_step": [
        ("m_hat, v_hat = m / (1.0 - b1**t), v / (1.0 - b2**t)", "m_hat, v_hat = m, v", "bias correction missing"),
        ("p = p * (1.0 - lr * weight_decay)", "g = g + weight_decay * p",
         "weight decay added to the gradient (L2), not decoupled"),
        ("return p - lr * m_hat", "return p + lr * m_hat", "sign"),
        ("np.sqrt(v_hat) + eps", "np.sqrt(v_hat + eps)", "eps inside the square root"),
        ("m_hat, v_hat = m / (1.0 - b1**t), v / (1.0 - b2**t)",
         "m_hat, v_hat = m / (1.0 - b1**(t - 1)), v / (1.0 - b2**(t - 1))",
         "adamw: division by zero (a denominator that is 0 at this step or for this row) -- in your adamw_step"),
    ],
    "cross_entropy_forward": [
        ("z = logits - logits.max(axis=1, keepdims=True)", "z = logits", "cross-entropy: overflow: exp of a large number"),
        ("return -logp[np.arange(B), labels].mean()", "return -logp[np.arange(B), labels].sum()",
         "forward looks wrong -> a sum over the batch where the mean belongs"),
        ("return (dloss * (p - onehot) / B,)", "return ((p - onehot) / B,)",
         "dlogits looks wrong -> the upstream dloss is ignored"),
        ("return (dloss * (p - onehot) / B,)", "return (dloss * (p - onehot),)",
         "dlogits looks wrong -> scale (off by x 4): a sum over the batch where a mean belongs"),
        ("return (dloss * (p - onehot) / B,)", "return (dloss * p / B,)", "the one-hot is not subtracted"),
        ("return -logp[np.arange(B), labels].mean()", "return -logp[:, labels].mean()",
         "forward looks wrong -> wrong value: yours is"),
    ],
    "dropout_forward": [
        ("rng.random(x.shape) >= p", "rng.random(x.shape) < p", "about 1 - p: p is the probability of dropping"),
        ("/ (1.0 - p)  # 0", "* (1.0 - p)  # 0", "kept elements scaled by (1 - p), not 1 / (1 - p)"),
        ("/ (1.0 - p)  # 0", "* 1.0  # 0", "kept elements are not scaled"),
        ("return (dy * cache,)", "return (dy * (np.random.default_rng(9).random(dy.shape) >= 0.25) / 0.75,)",
         "a different mask from the forward's"),
        ("return (dy * cache,)", "return (dy,)", "dx = dy: dropout's backward is not the identity"),
        ("return x * scale, scale", "x *= scale\n    return x, scale", "forward changed its input x in place"),
    ],
    "lr_schedule": [
        ("base_lr * step / warmup_steps", "base_lr * (step + 1) / warmup_steps", "the warm-up starts at base_lr / warmup"),
        ("(total_steps - step) / max(1, total_steps - warmup_steps)", "(total_steps - step) / total_steps",
         "the decay runs over total_steps, not total_steps - warmup_steps"),
        ("max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))",
         "(total_steps - step) / max(1, total_steps - warmup_steps)", "the decay goes below 0 past total_steps"),
        ("if step < warmup_steps:", "if step <= warmup_steps:",
         "lr_schedule raised ZeroDivisionError: float division by zero -- in your lr_schedule, line 4"),
    ],
    "embedding_forward": [
        ("np.add.at(dw_word, ids.reshape(-1), rows)", "dw_word[ids.reshape(-1)] += rows",
         "dw_word looks wrong -> `dw[ids] += rows` keeps one row per repeated id"),
        ("np.add.at(dw_type, types.reshape(-1), rows)", "dw_type[types.reshape(-1)] = rows",
         "dw_type looks wrong -> `dw[ids] += rows` keeps one row per repeated id"),
        ("dw_pos[: de.shape[1]] = de.sum(axis=0)", "dw_pos[: de.shape[1]] = de[0]",
         "dw_pos looks wrong -> only the first sentence's gradient"),
        ("return dw_word, dw_pos, dw_type", "return dw_word, de.sum(axis=0), dw_type",
         "dw_pos has shape (4, 3), expected (6, 3), the shape of w_pos"),
    ],
    "lora_forward": [
        ("scale * t @ lora_b.T", "t @ lora_b.T", "forward looks wrong -> the scale alpha / r is missing"),
        ("return dy @ w + dt @ lora_a", "return dt @ lora_a", "dx looks wrong -> dx misses the frozen path"),
        ("dlora_a = dt.T @ x", "dlora_a = x.T @ dt", "dlora_a looks wrong -> transpose"),
        ("y = x @ w.T + b + scale", "y = scale", "forward looks wrong -> the frozen x W^T + b is missing"),
    ],
}


def _stubs():
    """[(notebook name, cell index of the stub, stub name)] for every stub of every exercise."""
    out = []
    for name, module in _build.EXERCISES.items():
        unsolved = _build.build(name, module)
        solved = _build.build(name, module, solved=True)
        for i, (u, s) in enumerate(zip(unsolved.cells, solved.cells)):
            if u.source != s.source:
                first_def = next(line for line in s.source.splitlines() if line.startswith("def "))
                out.append((name, i, first_def[4:].split("(")[0]))
    return out


STUBS = _stubs()


def run_to_check(name, stub, fill, monkeypatch):
    """Run exercise `name` in this process, from its first cell to the check after cell `stub`,
    with that stub's cell replaced by `fill` and every earlier stub solved. Returns what it printed."""
    solved = _build.build(name, _build.EXERCISES[name], solved=True)
    monkeypatch.chdir((LESSONS / name).parent)  # where a notebook runs: its own folder
    namespace = {"__name__": "__main__"}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        for i, cell in enumerate(solved.cells[:stub + 2]):  # ... the stub, then its check
            if cell.cell_type != "code":
                continue
            source = fill if i == stub else cell.source
            source = "\n".join(line for line in source.splitlines() if not line.startswith("%"))
            filename = f"<{name} cell {i}>"
            # as IPython does for a cell: its lines readable, so a check can quote the learner's line
            linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
            exec(compile(source, filename, "exec"), namespace)
    return printed.getvalue()


def test_every_stub_has_its_mistakes():
    assert sorted(s for _, _, s in STUBS) == sorted(WRONG)
    assert all(len(WRONG[s]) >= 3 for s in WRONG)


@pytest.mark.parametrize("name,stub,what", STUBS, ids=[s for _, _, s in STUBS])
def test_solution_passes(name, stub, what, monkeypatch):
    solution = _build.build(name, _build.EXERCISES[name], solved=True).cells[stub].source
    printed = run_to_check(name, stub, solution, monkeypatch)
    assert ": pass (" in printed.splitlines()[-1], printed


@pytest.mark.parametrize("name,stub,what", STUBS, ids=[s for _, _, s in STUBS])
def test_unfilled_stub_is_reached(name, stub, what, monkeypatch):
    unfilled = _build.build(name, _build.EXERCISES[name]).cells[stub].source
    with pytest.raises(NotImplementedError, match=f"{what}: write it here"):
        run_to_check(name, stub, unfilled, monkeypatch)


MISTAKES = [(name, stub, what, *wrong) for name, stub, what in STUBS for wrong in WRONG.get(what, [])]


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning",
                            "ignore:invalid value encountered:RuntimeWarning")  # softmax without its max
@pytest.mark.parametrize("name,stub,what,old,new,diagnosis", MISTAKES,
                         ids=[f"{m[2]}-{m[5].split('-> ')[-1][:30]}" for m in MISTAKES])
def test_mistake_is_diagnosed(name, stub, what, old, new, diagnosis, monkeypatch):
    solution = _build.build(name, _build.EXERCISES[name], solved=True).cells[stub].source
    assert solution.count(old) == 1, f"{old!r} should occur once in the solution of {what}"
    with pytest.raises(AssertionError) as failure:
        run_to_check(name, stub, solution.replace(old, new), monkeypatch)
    assert diagnosis in str(failure.value), str(failure.value)


CAPSTONE = "exercises/07_capstone_your_ops_train_bert.ipynb"


@pytest.mark.slow  # a Jupyter kernel per notebook (the capstone also trains)
@pytest.mark.parametrize("name", sorted(_build.EXERCISES))
def test_solved_notebook_runs(name):
    """Each exercise runs solved in a kernel from end to end, every check printing pass; the
    capstone (slow: it trains) with the solved exercises beside it, past 80% dev accuracy."""
    nb = _build.build(name, _build.EXERCISES[name], solved=True)
    os.environ.setdefault("MPLBACKEND", "Agg")
    # the capstone's training cell: minutes on a quiet CPU, far more on a shared one
    _build.run(nb, None, Path(name).stem, _build.solved_folder(), timeout=3600 if name == CAPSTONE else 600)
    printed = "".join(out.get("text", "") for cell in nb.cells for out in cell.get("outputs", []))
    if name == CAPSTONE:  # the four exercises' checks ran again through %run, then it trained
        assert "dev accuracy after" in printed and printed.count(": pass (") == 13, printed
        return
    checks = sum(cell.source.startswith("exercise.check_") for cell in nb.cells)
    assert checks >= len([1 for n, _, _ in STUBS if n == name]) and printed.count(": pass (") == checks, printed
