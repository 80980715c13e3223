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
    ],
    "softmax_forward": [
        ("e = np.exp(s - s.max(axis=-1, keepdims=True))", "e = np.exp(s)", "forward looks wrong -> nan or inf in the result (overflow"),
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
    ],
    "adapter_forward": [
        ("return dh + dy, dw_down", "return dh, dw_down", "dh looks wrong -> the skip connection's + dy is missing"),
        ("(dz,) = swish.backward(du, act)", "dz = du", "dh looks wrong -> the non-linearity's backward is skipped"),
        ("return h + y, (down, act, up)", "return y, (down, act, up)",
         "forward looks wrong -> the skip connection (+ h) is missing"),
        ("du, dw_up, db_up = linear.backward(dy, up)", "du, db_up, dw_up = linear.backward(dy, up)",
         "dw_up looks wrong -> swapped: this is the right db_up"),
    ],
    "layer_backward": [
        ("dh = dh + ds2", "dh = dh", "the attention adapter's dadapter_down.0.weight looks wrong -> "
                                    "the residual branch of o + h is missing"),
        ("return dx + ds1,", "return dx,", "dx looks wrong -> the residual branch of a + x is missing"),
        ("(df,) = gelu.backward(df, r.gelu)", "pass", "the attention adapter's dadapter_down.0.weight looks "
                                                      "wrong -> the GELU backward is skipped"),
    ],
    "head_forward": [
        ("dlogits /= B", "pass", "dh_cls looks wrong -> scale (off by x 4): a sum over the batch"),
        ("dlogits /= B", "dlogits = -dlogits / B", "dh_cls looks wrong -> sign"),
        ("dw4, db4 = dlogits.T @ t", "dw4, db4 = t.T @ dlogits", "dw4 looks wrong -> transpose"),
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
            exec(compile(source, f"<{name} cell {i}>", "exec"), namespace)
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


@pytest.mark.slow  # a Jupyter kernel per notebook
@pytest.mark.parametrize("name", sorted(_build.EXERCISES))
def test_solved_notebook_runs(name):
    nb = _build.build(name, _build.EXERCISES[name], solved=True)
    os.environ.setdefault("MPLBACKEND", "Agg")
    _build.run(nb, None, Path(name).stem, (LESSONS / name).parent)
    printed = "".join(out.get("text", "") for cell in nb.cells for out in cell.get("outputs", []))
    checks = sum(cell.source.startswith("exercise.check_") for cell in nb.cells)
    assert checks >= len([1 for n, _, _ in STUBS if n == name]) and printed.count(": pass (") == checks, printed
