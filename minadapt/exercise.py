"""Checks for the exercise notebooks (lessons/exercises/): is a learner's forward/backward right,
and if not, which mistake does it look like?

Each `check_<op>(...)` runs the learner's functions on small random float64 inputs, chosen so that
the classic mistakes show (a row of huge scores for softmax's max shift, a row of tiny variance
for LayerNorm's eps, gradients of 1e-6 for AdamW's eps, a padded key for the mask), and compares
    the forward with the library's reference op (minadapt.nn),
    each gradient with the reference backward and with centred differences of the learner's forward.
It prints one "pass" line with the errors, or raises `Mistake` (an AssertionError, so a notebook
run stops there) with one message naming the output that is wrong and what it looks like:

    changed its input in place  an input (or the upstream gradient dy) differs after the call
    0/0, division by zero, ...  the first nan/inf, with its cause and the line of yours that made it
    raised <Error> at line N    any exception from your code, or from the library running it
    shape                       "dw has shape (3, 5), expected (5, 3), the shape of w" (checked first)
    sign                        yours == -right
    transpose                   yours.T == right
    missing sum over the batch  yours.sum(axis=0) == right (one gradient per row, not added up)
    scale (off by x k)          yours == k * right (a gradient; a loss is a number: see `_scalar`)
    swapped with <other>        yours == the right value of another output
    ...                         and the op's own known mistakes (a candidate computed here on purpose)
    wrong                       none of these: the relative error is printed
"""
from __future__ import annotations

import linecache
import math
import os
import sys
import traceback

import numpy as np

from . import gradcheck
from .nn import adapter, attention, gelu, layernorm, linear, loss, swish

TOL = 1e-7  # relative error below which two float64 results are "the same"
FD_TOL = 1e-5  # ... and against centred differences, which are only that accurate


class Mistake(AssertionError):
    """What a check raises: one message, no traceback of the check's own insides worth reading."""


def _one_line_in_notebooks():
    """In IPython (a notebook), show a Mistake as its one message rather than a traceback through
    this module: the message already names the learner's function and line."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is not None:
        shell.set_custom_exc((Mistake,), lambda self, etype, value, tb, tb_offset=None:
                             self._showtraceback(etype, value, [f"Mistake: {value}"]))


_one_line_in_notebooks()


def _same(a, b) -> bool:
    return a.shape == b.shape and bool(np.all(np.isfinite(a))) and gradcheck.rel_error(a, b) < TOL


def _scalar(got, want, batch, candidates) -> str:
    """A wrong scalar (a loss): a number has no 'scale', only its known mistakes or its value."""
    g, w = float(got.reshape(())), float(want.reshape(()))
    for what, c in candidates.items():
        if _same(got.reshape(()), np.asarray(c, np.float64).reshape(())):
            return what
    if math.isclose(g, -w, rel_tol=1e-9):
        return "sign: yours is minus the right one (a loss -log p is positive)"
    if batch and math.isclose(g, batch * w, rel_tol=1e-9):
        return f"a sum over the batch where the mean belongs (yours is {batch} x the right one)"
    if batch and math.isclose(g * batch, w, rel_tol=1e-9):
        return f"divided by the batch size twice (yours is the right one / {batch})"
    return f"wrong value: yours is {g:.6g}, expected {w:.6g}"


def diagnose(got, want, batch=None, candidates=None, name="the result") -> str | None:
    """None when `got` equals `want`; otherwise what the difference looks like.
    batch: the number of rows summed over (for "missing sum" and "mean instead of sum");
    candidates: {description: array}, the op's known mistakes, computed from the reference;
    name: what `got` is, for the shape message."""
    candidates = candidates or {}
    if got is None:
        return "returned None"
    try:
        got = np.asarray(got, dtype=np.float64)
    except (TypeError, ValueError):
        return f"{name} is a {type(got).__name__}, not an array"
    want = np.asarray(want, dtype=np.float64)
    if not np.all(np.isfinite(got)):
        bad = np.argwhere(~np.isfinite(got))[0] if got.ndim else ()
        return f"nan or inf in {name} (first at index {tuple(int(i) for i in bad)})"
    if got.shape == want.shape and gradcheck.rel_error(got, want) < TOL:
        return None
    if want.size == 1 and want.ndim <= 1 and got.size == 1:
        return _scalar(got, want, batch, candidates)
    for what, c in candidates.items():
        if _same(got, c):
            return what
    if got.shape == want.shape and _same(got, -want):
        return "sign: yours is minus the right one"
    if got.ndim == 2 and got.shape == want.shape[::-1] and got.shape != want.shape and _same(got.T, want):
        return f"transpose: yours is the transpose of the right one (shape {got.shape}, expected {want.shape})"
    n = want.ndim
    if got.ndim > n and got.size > want.size and got.shape[got.ndim - n:] == want.shape and \
            _same(got.reshape(-1, *want.shape).sum(axis=0), want):
        return "missing sum over the batch: one gradient per row, not added up"
    if got.shape != want.shape:
        return f"{name} has shape {got.shape}, expected {want.shape}"
    k = float((got * want).sum() / max((want * want).sum(), 1e-300))
    if k != 0 and _same(got, k * want):
        if batch and math.isclose(k, 1 / batch, rel_tol=1e-6):
            return f"scale (off by x 1/{batch}): a mean over the batch where a sum belongs"
        if batch and math.isclose(k, batch, rel_tol=1e-6):
            return f"scale (off by x {batch}): a sum over the batch where a mean belongs"
        return f"scale (off by x {k:.4g})"
    return f"wrong (max relative error {gradcheck.rel_error(got, want):.2e})"


def _fail(op, what, message, errors=""):
    raise Mistake(f"{op}: {what} looks wrong -> {message}{errors}")


# --- calling the learner's code ------------------------------------------------------------------
_LIBRARY = (os.path.dirname(os.path.abspath(__file__)), os.path.dirname(os.path.abspath(np.__file__)),
            os.path.dirname(os.path.abspath(os.__file__)))

# numpy's floating-point error text -> what it means in a forward or backward
_FLOATING = [
    ("overflow encountered in exp", "overflow: exp of a large number (above ~709 in float64); "
                                    "subtract each row's maximum before exp"),
    ("overflow", "overflow: a number beyond the float range"),
    ("divide by zero encountered in log", "log of zero (take the log of something positive, or "
                                          "use log-sum-exp)"),
    ("divide by zero", "division by zero (a denominator that is 0 at this step or for this row)"),
    ("invalid value encountered in sqrt", "square root of a negative number"),
    ("invalid value encountered in power", "a negative number to a fractional power "
                                           "(a square root of a negative number?)"),
    ("invalid value encountered in log", "log of a negative number"),
    ("invalid value encountered in divide", "0/0 (or inf/inf): a denominator that underflowed to 0, "
                                            "e.g. exp shifted by the wrong maximum"),
    ("invalid value encountered in subtract", "inf - inf (an overflow earlier in the same line?)"),
    ("invalid value encountered in add", "inf - inf (an overflow earlier in the same line?)"),
    ("invalid value encountered in multiply", "0 * inf (an overflow earlier?)"),
    ("invalid value", "an invalid operation (nan)"),
]


def _where(tb) -> str:
    """'your <function>, line N: <code>' for the deepest frame of the learner's own code in the
    traceback `tb` (and the library line it was in, if the error came from there)."""
    frames = traceback.extract_tb(tb)
    theirs = [f for f in frames if not f.filename.startswith(_LIBRARY) and "site-packages" not in f.filename]
    here = ""
    if theirs:
        f = theirs[-1]
        code = (f.line or linecache.getline(f.filename, f.lineno)).strip()
        here = f"in your {f.name}, line {f.lineno}" + (f": {code}" if code else "")
    last = frames[-1] if frames else None
    if last is not None and (not theirs or last is not theirs[-1]) and last.filename.startswith(_LIBRARY[0]):
        lib = f"minadapt/{os.path.relpath(last.filename, _LIBRARY[0])} line {last.lineno} ({last.name})"
        here = f"{here}, then in {lib}, which was running on what yours returned" if here else f"in {lib}"
    return here


def call(op, fn, *args, **kwargs):
    """fn(*args, **kwargs), the learner's function (or the library running it), with numpy's
    floating-point errors raised where they happen. A NotImplementedError (an unfilled stub) passes
    through; any other exception becomes one `Mistake` naming its cause and the learner's line."""
    try:
        with np.errstate(over="raise", divide="raise", invalid="raise", under="ignore"):
            return fn(*args, **kwargs)
    except (NotImplementedError, Mistake):
        raise
    except FloatingPointError as e:
        what = next(m for key, m in _FLOATING if key in str(e))
        raise Mistake(f"{op}: {what} -- {_where(e.__traceback__)}") from None
    except Exception as e:  # noqa: BLE001 -- the learner's code can raise anything; say where
        name = getattr(fn, "__name__", "function")
        raise Mistake(f"{op}: {name} raised {type(e).__name__}: {e} -- {_where(e.__traceback__)}") from None


def _unchanged(op, when, arrays, originals):
    """Mistake if the call changed any of `arrays` (copies handed to the learner) in place."""
    for name, a in arrays.items():
        if isinstance(a, np.ndarray) and not np.array_equal(a, originals[name], equal_nan=True):
            raise Mistake(f"{op}: {when} changed its input {name} in place (an `{name} -= ...`, "
                          f"`{name} *= ...` or `{name}[...] = ...` writes into the caller's array): "
                          "work on a new array, the caller still needs this one")


def _as_tuple(result, n, op, what, names):
    if isinstance(result, list):
        result = tuple(result)
    if not isinstance(result, tuple) or len(result) != n:
        got = f"a tuple of {len(result)}" if isinstance(result, tuple) else type(result).__name__
        _fail(op, what, f"expected a tuple of {n} ({', '.join(names)}), got {got}")
    return result


def _check_pair(op, forward, backward, inputs, ref_forward, ref_backward, wrt, batch=None,
                forward_candidates=None, backward_candidates=None, forward_output=lambda out: out):
    """The shared check. inputs: {name: array}, passed to both forwards in this order; wrt: the
    names of the inputs whose gradients backward returns, in its order; the *_candidates functions
    give {description: array} of known mistakes (backward's: {output name: {...}})."""
    args = {k: v.copy() for k, v in inputs.items()}
    want, ref_cache = ref_forward(**args)
    theirs = {k: v.copy() for k, v in inputs.items()}
    result = call(op, forward, **theirs)
    _unchanged(op, "forward", theirs, inputs)
    out, cache = _as_tuple(result, 2, op, "forward", ("out", "cache"))
    cand = forward_candidates(**args) if forward_candidates else {}
    d = diagnose(forward_output(out), want, batch, cand, name="the output")
    if d:
        _fail(op, "forward", d)
    dy = np.random.default_rng(1).standard_normal(np.shape(want))
    dy_theirs = dy.copy()
    grads = call(op, backward, dy_theirs, cache)
    _unchanged(op, "backward", {"dy (the upstream gradient)": dy_theirs}, {"dy (the upstream gradient)": dy})
    grads = _as_tuple(grads, len(wrt), op, "backward", ["d" + w for w in wrt])
    right = ref_backward(dy.copy(), ref_cache)
    for name, g in zip(wrt, grads):  # shapes first: a wrong shape is named before any maths on it
        swaps = {"swapped": ro for o, ro in zip(wrt, right) if o != name}
        if g is not None and np.shape(g) != np.shape(inputs[name]) and \
                not diagnose(g, right[wrt.index(name)], batch, swaps).startswith(("transpose", "missing sum", "swapped")):
            _fail(op, f"backward, d{name}", f"d{name} has shape {np.shape(g)}, expected "
                  f"{np.shape(inputs[name])}, the shape of {name}")
    cands = backward_candidates(dy, ref_cache, **args) if backward_candidates else {}
    report = []
    for name, g, r in zip(wrt, grads, right):
        others = {f"swapped: this is the right d{o}": ro for o, ro in zip(wrt, right) if o != name}
        d = diagnose(g, r, batch, {**cands.get(name, {}), **others}, name=f"d{name}")
        fd_err = None
        if g is not None and np.shape(g) == r.shape:
            x = inputs[name].copy()
            rest = {k: v.copy() for k, v in inputs.items() if k != name}
            fd = call(op, gradcheck.numerical_grad,
                      lambda a: forward_output(forward(**{name: a}, **{k: v.copy() for k, v in rest.items()})[0]),
                      x, dy)
            fd_err = gradcheck.rel_error(g, fd)
        errors = f"\n    d{name}: rel. error {_err(g, r)} " \
                 f"against minadapt's backward, {'n/a' if fd_err is None else f'{fd_err:.1e}'} " \
                 "against finite differences"
        if d:
            _fail(op, f"backward, d{name}", d, errors)
        if fd_err > FD_TOL:
            _fail(op, f"backward, d{name}", "disagrees with finite differences", errors)
        report.append(f"d{name} {fd_err:.0e}")
    again = call(op, backward, dy.copy(), cache)  # a backward that edits its cache answers differently
    if any(not np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(again, grads) if a is not None):
        _fail(op, "backward", "gives a different answer the second time: it changes its cache in place")
    print(f"{op}: pass (forward equals minadapt's; vs finite differences: {', '.join(report)})")


def _err(g, r):
    """The relative error as text, or why there is none."""
    if g is None or np.shape(g) != r.shape:
        return f"n/a (shape {np.shape(g)}, expected {r.shape})"
    return f"{gradcheck.rel_error(g, r):.1e}"


def _rng():
    return np.random.default_rng(0)


# --- exercise 1: linear, GELU, LayerNorm -------------------------------------------------------
def check_linear(forward, backward):
    """forward(x (N, D), w (O, D), b (O,)) -> (y, cache); backward(dy, cache) -> (dx, dw, db)."""
    r = _rng()
    inputs = dict(x=r.standard_normal((4, 3)), w=r.standard_normal((5, 3)), b=r.standard_normal(5))
    _check_pair("linear", forward, backward, inputs, linear.forward, linear.backward, ("x", "w", "b"),
                batch=4, forward_candidates=lambda x, w, b: {"the bias b is missing": x @ w.T})


def _gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def check_gelu(forward, backward):
    """forward(x) -> (y, cache); backward(dy, cache) -> (dx,). The exact erf GELU."""
    inputs = dict(x=2 * _rng().standard_normal((4, 5)))

    def backward_candidates(dy, cache, x):
        (local,) = gelu.backward(np.ones_like(x), cache)  # Phi(x) + x phi(x)
        x_pdf = local - cache.cdf
        return {"x": {"product rule: the x phi(x) term is missing": dy * cache.cdf,
                      "not multiplied by the upstream gradient dy": local,
                      "phi(x) lacks its 1/sqrt(2 pi)": dy * (cache.cdf + x_pdf * math.sqrt(2 * math.pi))}}

    _check_pair("gelu", forward, backward, inputs, gelu.forward, gelu.backward, ("x",),
                forward_candidates=lambda x: {"tanh approximation, not the exact erf GELU": _gelu_tanh(x)},
                backward_candidates=backward_candidates)


def check_layernorm(forward, backward, eps=1e-5):
    """forward(x (N, H), gamma, beta) -> (y, cache); backward(dy, cache) -> (dx, dgamma, dbeta).
    (eps = 1e-5: the learner's forward takes it as a default argument.)"""
    r = _rng()
    x = r.standard_normal((4, 6))
    x[2] = 3.0 + 1e-3 * x[2]  # a row of variance ~1e-6, below eps: where eps goes matters there
    inputs = dict(x=x, gamma=1 + 0.3 * r.standard_normal(6), beta=r.standard_normal(6))

    def ref_forward(x, gamma, beta):
        return layernorm.forward(x, gamma, beta, eps, trainable=True)

    def forward_candidates(x, gamma, beta):
        unbiased = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, ddof=1, keepdims=True) + eps)
        centred = x - x.mean(-1, keepdims=True)
        outside = centred / (np.sqrt(x.var(-1, keepdims=True)) + eps)
        return {"variance divided by H - 1, not H": gamma * unbiased + beta,
                "eps added outside the square root: 1 / (sqrt(var) + eps), not 1 / sqrt(var + eps)":
                    gamma * outside + beta,
                "eps left out (1 / sqrt(var)): a row of tiny variance is off":
                    gamma * centred / np.sqrt(x.var(-1, keepdims=True)) + beta}

    def backward_candidates(dy, cache, x, gamma, beta):
        g, xhat, rstd = dy * gamma, cache.xhat, cache.rstd
        return {"x": {
            "mean and variance treated as constants (dx = dy gamma rstd)": g * rstd,
            "missing the - mean(g) term (the mean's dependence on x)":
                rstd * (g - xhat * (g * xhat).mean(-1, keepdims=True)),
            "missing the - xhat mean(g xhat) term (the variance's dependence on x)":
                rstd * (g - g.mean(-1, keepdims=True)),
            "gamma is missing (g = dy instead of dy * gamma)":
                rstd * (dy - dy.mean(-1, keepdims=True) - xhat * (dy * xhat).mean(-1, keepdims=True))}}

    _check_pair("layernorm", forward, backward, inputs, ref_forward, layernorm.backward,
                ("x", "gamma", "beta"), batch=4, forward_candidates=forward_candidates,
                backward_candidates=backward_candidates)


# --- exercise 2: softmax, attention ------------------------------------------------------------
def check_softmax(forward, backward):
    """forward(s) -> (a, cache) over the last axis; backward(da, cache) -> (ds,).
    One row holds large scores (800): exp overflows there unless the row's maximum is subtracted."""
    s = _rng().standard_normal((2, 3, 5))
    s[1, 2] += 800.0

    def ref_forward(s):
        a = attention.softmax(s)
        return a, a

    def ref_backward(da, a):
        return (a * (da - (da * a).sum(axis=-1, keepdims=True)),)

    def forward_candidates(s):
        return {"normalised over the wrong axis": np.swapaxes(attention.softmax(np.swapaxes(s, -1, -2)), -1, -2)}

    def backward_candidates(da, a, s):
        return {"s": {"only the diagonal of the Jacobian: the - sum_j da_j a_j term is missing": a * da}}

    _check_pair("softmax", forward, backward, dict(s=s), ref_forward, ref_backward, ("s",),
                forward_candidates=forward_candidates, backward_candidates=backward_candidates)


def check_attention(forward, backward):
    """forward(q, k, v, bias) -> (c, cache), q k v (B, nh, T, hs), bias (B, 1, 1, T) from
    attention.mask_bias; backward(dc, cache) -> (dq, dk, dv). No dropout (evaluation)."""
    r = _rng()
    B, nh, T, hs = 2, 2, 4, 3
    inputs = {n: r.standard_normal((B, nh, T, hs)) for n in "qkv"}
    inputs["q"][0, 1, 2] *= 1000.0  # scores of a few thousand in one row: exp overflows unshifted
    inputs["bias"] = attention.mask_bias(np.array([[1, 1, 1, 1], [1, 1, 1, 0]]), np.float64)

    def ref_forward(q, k, v, bias):
        c, cache = attention.forward(*(attention.merge_heads(t) for t in (q, k, v)), bias, nh)
        return attention.split_heads(c, nh), cache

    def ref_backward(dc, cache):
        return tuple(attention.split_heads(g, nh) for g in attention.backward(attention.merge_heads(dc), cache))

    def forward_candidates(q, k, v, bias):
        return {"the mask is not applied: [PAD] keys get attention": ref_forward(q, k, v, 0 * bias)[0],
                "scores not scaled by 1/sqrt(hs)": ref_forward(q * math.sqrt(hs), k, v, bias)[0],
                "scores scaled by 1/hs, not 1/sqrt(hs)": ref_forward(q / math.sqrt(hs), k, v, bias)[0]}

    def backward_candidates(dc, cache, q, k, v, bias):
        a = cache.a
        da = dc @ np.swapaxes(v, -1, -2)
        ds = a * (da - (da * a).sum(-1, keepdims=True))
        return {"v": {"transpose: dv = a^T dc, not a dc": a @ dc},
                "k": {"transpose: dk = ds^T q / sqrt(hs), not ds q / sqrt(hs)": ds @ q / math.sqrt(hs)},
                "q": {"only the diagonal of the softmax Jacobian": (a * da) @ k / math.sqrt(hs)}}

    _check_pair("attention", forward, backward, inputs, ref_forward, ref_backward, ("q", "k", "v"),
                forward_candidates=forward_candidates, backward_candidates=backward_candidates)


# --- exercise 3: the adapter, one encoder layer's backward -------------------------------------
def check_adapter(forward, backward):
    """forward(h (N, H), w_down (m, H), b_down, w_up (H, m), b_up) -> (y, cache), swish inside;
    backward(dy, cache) -> (dh, dw_down, db_down, dw_up, db_up)."""
    r = _rng()
    N, H, m = 5, 6, 3
    inputs = dict(h=r.standard_normal((N, H)), w_down=r.standard_normal((m, H)), b_down=r.standard_normal(m),
                  w_up=r.standard_normal((H, m)), b_up=r.standard_normal(H))  # W_up random, not the zero init

    def forward_candidates(h, w_down, b_down, w_up, b_up):
        z = h @ w_down.T + b_down
        return {"the skip connection (+ h) is missing": swish.forward(z)[0] @ w_up.T + b_up,
                "the non-linearity is missing": h + z @ w_up.T + b_up}

    def backward_candidates(dy, cache, h, w_down, b_down, w_up, b_up):
        dh = adapter.backward(dy, cache)[0]
        return {"h": {"the skip connection's + dy is missing": dh - dy,
                      "the non-linearity's backward is skipped (dz = du)": (dy @ w_up) @ w_down + dy}}

    _check_pair("adapter", forward, backward, inputs, adapter.forward, adapter.backward,
                ("h", "w_down", "b_down", "w_up", "b_up"), batch=N,
                forward_candidates=forward_candidates, backward_candidates=backward_candidates)


def tiny_layer(seed=0):
    """A one-layer random BERT (H = 8, two heads) in float64 with a Houlsby adapter "ex" whose W_up
    is random (not the identity init), and the reference ops. Returns (params, i, x, bias, qkv, cfg,
    run): the arguments of bert.layer_forward."""
    from . import bert
    from .config import BertConfig
    from .model import Model
    from .io.weights import expected_shapes

    cfg = BertConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=12, max_position_embeddings=8, layer_norm_eps=1e-5)
    r = np.random.default_rng(seed)
    params = {k: (1 + 0.1 * r.standard_normal(s)) if "LayerNorm.weight" in k else 0.5 * r.standard_normal(s)
              for k, s in expected_shapes(cfg).items()}
    model = Model(cfg, params, ops="reference").add_adapter("ex", bottleneck=3)
    for k in model.trainable_names("ex"):
        model.params[k][...] = 0.5 * r.standard_normal(model.params[k].shape)
    run = bert.Run(ops=model.ops, adapter=model.config_of("ex"), trainable=frozenset(model.trainable_names("ex")))
    x = r.standard_normal((2, 5, 8))  # (B, T, H)
    bias = attention.mask_bias(np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]), np.float64)
    return model.params, 0, x, bias, model.qkv[0], cfg, run


def check_layer_backward(layer_backward):
    """layer_backward(dout, cache) -> (dx, adapter_attn_grads, adapter_ffn_grads): the backward of
    bert.layer_forward (evaluation, reference ops, a Houlsby adapter in both places), each
    adapter's gradients as (dw_down, db_down, dw_up, db_up)."""
    from . import bert

    params, i, x, bias, qkv, cfg, run = tiny_layer()
    out, cache = bert.layer_forward(params, i, x, bias, qkv, cfg, run)
    dout = np.random.default_rng(1).standard_normal(out.shape)
    dx, grads = bert.layer_backward(dout, cache, i, run)
    names = {where: [bert.adapter_prefix(i, where, "ex") + k for k in bert.ADAPTER_KEYS]
             for where in ("attention.output", "output")}
    dout_theirs = dout.copy()
    got = call("layer backward", layer_backward, dout_theirs, cache)
    _unchanged("layer backward", "layer_backward", {"dout": dout_theirs}, {"dout": dout})
    got = _as_tuple(got, 3, "layer backward", "the result", ("dx", "adapter_attn_grads", "adapter_ffn_grads"))
    wrong = _layer_backward_mistakes(dout, cache)
    # in the order backward reaches them: the FFN adapter, the attention adapter, then dx
    order = [("the FFN adapter's d" + k, g, grads[n]) for k, g, n in zip(bert.ADAPTER_KEYS, got[2], names["output"])]
    order += [("the attention adapter's d" + k, g, grads[n]) for k, g, n in zip(bert.ADAPTER_KEYS, got[1], names["attention.output"])]
    order += [("dx", got[0], dx)]
    for what, g, right in order:
        cands = {m: w[what] for m, w in wrong.items() if what in w}
        d = diagnose(g, right, candidates=cands, name=what)
        if d:
            _fail("layer backward", what, d, f"\n    rel. error {_err(g, right)} against bert.layer_backward")

    def f(x_):
        return bert.layer_forward(params, i, x_, bias, qkv, cfg, run)[0]

    fd_err = gradcheck.check(f, x.copy(), dout, got[0])
    if fd_err > FD_TOL:
        _fail("layer backward", "dx", f"disagrees with finite differences ({fd_err:.1e})")
    print(f"layer backward: pass (equals bert.layer_backward; dx vs finite differences {fd_err:.0e})")


def _layer_backward_mistakes(dout, cache):
    """Known mistakes in a layer's backward, made on purpose: {mistake: {output: array}}, each the
    layer's backward (as in bert.py, for this evaluation-mode cache) with one thing left out."""
    def backward(h_residual=True, x_residual=True, gelu_backward=True):
        r = cache.rest
        ds2 = layernorm.backward(dout, r.site2.ln)[0]
        du, *ffn = adapter.backward(ds2, r.site2.adapter)
        df = linear.backward(ds2 + du, r.ffn_out)[0]
        if gelu_backward:
            (df,) = gelu.backward(df, r.gelu)
        dh = linear.backward(df, r.ffn_in)[0]
        if h_residual:
            dh = dh + ds2
        ds1 = layernorm.backward(dh, r.site1.ln)[0]
        du, *attn = adapter.backward(ds1, r.site1.adapter)
        dc = linear.backward(ds1 + du, r.attn_out)[0]
        dq, dk, dv = attention.backward(dc, cache.attn)
        dx = linear.backward(np.concatenate([dq, dk, dv], axis=-1), cache.qkv)[0]
        if x_residual:
            dx = dx + ds1
        named = {"dx": dx}
        for site, grads in (("attention", attn), ("FFN", ffn)):
            named.update({f"the {site} adapter's d{k}": gr for k, gr in zip(adapter.KEYS, grads)})
        return named

    return {"the residual branch of o + h is missing (dh = dh + ds2)": backward(h_residual=False),
            "the residual branch of a + x is missing (dx = dx + ds1)": backward(x_residual=False),
            "the GELU backward is skipped": backward(gelu_backward=False)}


def check_adapter_in_model(forward, backward, weights, bottleneck=8):
    """The learner's adapter pair in place of the library's, in both sites of every layer of the
    pretrained model at `weights` (float64, reference ops, W_up random so that the adapters matter):
    the logits and every gradient of a two-sentence batch must equal the library's."""
    from types import SimpleNamespace

    from .model import load_model

    model = load_model(weights, dtype="float64", ops="reference")
    model.add_adapter("ex", bottleneck=bottleneck).add_classification_head("ex")
    r = np.random.default_rng(0)
    for name in sorted(model.trainable_names("ex")):
        if "adapter_up" in name:
            model.params[name][...] = 0.1 * r.standard_normal(model.params[name].shape)
    batch = model.tokenizer.encode(["A gripping, beautifully shot film.", "The plot never comes together."])
    labels = np.array([1, 0])
    _, right_logits, right = model.loss_and_grads(*batch, labels, adapter="ex", train=False)
    # Inside a layer the adapter's skip connection is the residual sum the layer forms anyway, so
    # bert.py asks for the bottleneck alone (skip=False): the learner's y = h + A(h), less h.
    # learner.py's wrapper: y - h forward, dh - dy backward, every returned shape checked first
    from .learner import _Adapter

    model.ops = SimpleNamespace(**{**vars(model.ops), "adapter": _Adapter(forward, backward)})  # what bert.py calls
    _, logits, grads = call("adapter in the model", model.loss_and_grads, *batch, labels, adapter="ex", train=False)
    # in the order backward reaches them: the head, then the layers top down, FFN before attention
    order = sorted(right, key=lambda k: (k.startswith("encoder."), -int(k.split(".")[2]) if k.startswith("encoder.")
                                         else 0, ".attention." in k, k))
    for what, g, want in [("logits", logits, right_logits), *((k, grads[k], right[k]) for k in order)]:
        d = diagnose(g, want, name=what)
        if d:
            _fail("adapter in the model", what, d)
    worst = max(gradcheck.rel_error(grads[k], right[k]) for k in right)
    print(f"adapter in the model: pass (logits rel. error {gradcheck.rel_error(logits, right_logits):.0e}, "
          f"worst of {len(right)} gradients {worst:.0e}, against the library's adapter)")


# --- exercise 4: the classification head with its loss, AdamW ----------------------------------
def check_head(forward, backward):
    """forward(h_cls (B, H), w1 (H, H), b1, w4 (C, H), b4, labels (B,)) -> (loss, cache): tanh
    pooler, linear, mean softmax cross-entropy; backward(cache) -> (dh_cls, dw1, db1, dw4, db4)."""
    r = _rng()
    B, H, C = 4, 5, 3
    labels = np.array([0, 2, 1, 2])
    inputs = dict(h_cls=r.standard_normal((B, H)), w1=r.standard_normal((H, H)), b1=r.standard_normal(H),
                  w4=r.standard_normal((C, H)), b4=r.standard_normal(C) + 750.0)  # exp(750) overflows:
    # the same offset on every class changes no probability, so only the max shift copes with it

    def ref_forward(h_cls, w1, b1, w4, b4):
        z, c1 = linear.forward(h_cls, w1, b1)
        t = np.tanh(z)
        logits, c4 = linear.forward(t, w4, b4)
        L, cl = loss.forward(logits, labels)
        return np.asarray(L), (c1, t, c4, cl)

    def ref_backward(dL, cache):
        c1, t, c4, cl = cache
        (dlogits,) = loss.backward(dL, cl)
        dt, dw4, db4 = linear.backward(dlogits, c4)
        dh, dw1, db1 = linear.backward(dt * (1 - t * t), c1)
        return dh, dw1, db1, dw4, db4

    def learner_forward(**args):
        return forward(**args, labels=labels.copy())

    def learner_backward(dL, cache):  # the loss is the end of the chain: dL = 1, scaled here
        return tuple(None if g is None else float(dL) * np.asarray(g) for g in backward(cache))

    _check_pair("head", learner_forward, learner_backward, inputs, ref_forward, ref_backward,
                ("h_cls", "w1", "b1", "w4", "b4"), batch=B, forward_output=np.asarray)


def _adamw_reference(p, gs, lr, betas, eps, wd, bias_correction=True, decoupled=True, sign=1.0,
                     eps_inside=False):
    """AdamW's trajectory over the gradients gs, with one known mistake switched on when asked
    (bias_correction=False, decoupled=False: L2 in the gradient, sign=-1: ascent)."""
    p, m, v = p.copy(), np.zeros_like(p), np.zeros_like(p)
    b1, b2 = betas
    out = []
    for t, g in enumerate(gs, start=1):
        if decoupled:
            p = p - lr * wd * p
        else:
            g = g + wd * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        mh, vh = (m / (1 - b1**t), v / (1 - b2**t)) if bias_correction else (m, v)
        p = p - sign * lr * mh / (np.sqrt(vh + eps) if eps_inside else np.sqrt(vh) + eps)
        out.append(p)
    return np.stack(out)


def check_adamw(step):
    """step(p, g, m, v, t, lr, betas, eps, weight_decay) -> (p, m, v), new arrays; t = 1, 2, ...
    Five steps are compared with minadapt.nn.adamw (the plain update; optim.AdamW is its packed
    version, tested equal), element by element."""
    from .nn import adamw

    r = _rng()
    p0 = r.standard_normal((3, 4))
    # one row of gradients ~1e-6: there sqrt(v_hat) ~ 1e-6 is near eps, so where eps goes shows
    gs = [r.standard_normal((3, 4)) * np.array([[1.0], [1.0], [1e-6]]) for _ in range(5)]
    hp = dict(lr=0.1, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1)
    w, state, right = p0.copy(), adamw.init(p0), []
    for g in gs:
        w, state = adamw.update(w, g, state, hp["lr"], hp["betas"], hp["eps"], hp["weight_decay"])
        right.append(w)
    right = np.stack(right)
    p, m, v, got = p0.copy(), np.zeros_like(p0), np.zeros_like(p0), []
    for t, g in enumerate(gs, start=1):
        result = call("adamw", step, p.copy(), g.copy(), m.copy(), v.copy(), t, hp["lr"], hp["betas"], hp["eps"],
                      hp["weight_decay"])
        p, m, v = _as_tuple(result, 3, "adamw", "step", ("p", "m", "v"))
        if np.shape(p) != p0.shape:
            _fail("adamw", f"step {t}", f"p has shape {np.shape(p)}, expected {p0.shape}")
        got.append(np.asarray(p))
    got = np.stack(got)
    args = (p0, gs, hp["lr"], hp["betas"], hp["eps"], hp["weight_decay"])
    moves = {"bias correction missing (m / (1 - b1^t), v / (1 - b2^t))": _adamw_reference(*args, bias_correction=False),
             "weight decay added to the gradient (L2), not decoupled": _adamw_reference(*args, decoupled=False),
             "sign: the step goes up the gradient": _adamw_reference(*args, sign=-1.0),
             "eps inside the square root: sqrt(v_hat + eps), not sqrt(v_hat) + eps":
                 _adamw_reference(*args, eps_inside=True)}
    # compare the moves (p_t - p_0) rather than the parameters, so that a scale or sign shows
    d = diagnose(got - p0, right - p0, candidates={k: c - p0 for k, c in moves.items()})
    if d:
        _fail("adamw", "the parameters after 5 steps", d, f"\n    rel. error {_err(got - p0, right - p0)} "
              "against minadapt.nn.adamw")
    print(f"adamw: pass (5 steps equal minadapt.nn.adamw, rel. error {gradcheck.rel_error(got, right):.0e})")


# --- exercise 4 (more): cross-entropy, dropout, the learning-rate schedule ----------------------
def check_cross_entropy(forward, backward):
    """forward(logits (B, C), labels (B,)) -> (loss, cache), the mean of -log softmax(logits)[label];
    backward(dloss, cache) -> (dlogits,), dloss the upstream scalar (not always 1).
    One row of logits sits near 750: exp overflows there unless each row's maximum is subtracted."""
    r = _rng()
    B, C = 4, 5
    labels = np.array([0, 3, 1, 4])
    z = r.standard_normal((B, C))
    z[2] += 750.0

    def ref_forward(logits):
        L, cache = loss.forward(logits, labels)
        return np.asarray(L), cache

    def ref_backward(dL, cache):
        return loss.backward(float(dL), cache)

    def forward_candidates(logits):
        logp = logits - logits.max(1, keepdims=True)
        logp = logp - np.log(np.exp(logp).sum(1, keepdims=True))
        return {"the log-probability of class 0 for every row, not of each row's label": -logp[:, 0].mean(),
                "the probability itself, not its log": -np.exp(logp[np.arange(B), labels]).mean()}

    def backward_candidates(dL, cache, logits):
        p = cache.p
        onehot = np.eye(C)[labels]
        return {"logits": {"the upstream dloss is ignored (right only when it is 1)": (p - onehot) / B,
                           "the one-hot is not subtracted: dlogits = p / B": float(dL) * p / B,
                           "onehot - p: the sign of the whole gradient": float(dL) * (onehot - p) / B}}

    _check_pair("cross-entropy", lambda logits: forward(logits, labels.copy()),
                backward, dict(logits=z), ref_forward, ref_backward, ("logits",), batch=B,
                forward_candidates=forward_candidates, backward_candidates=backward_candidates,
                forward_output=np.asarray)


def check_dropout(forward, backward, p=0.25):
    """forward(x, p, rng) -> (y, cache), training-mode inverted dropout: each element kept with
    probability 1 - p and scaled by 1 / (1 - p); backward(dy, cache) -> (dx,), through the same mask.
    Random, so checked by its properties on 20,000 elements rather than against the library."""
    x = _rng().standard_normal((100, 200)) + 3.0  # no element is 0: y == 0 means dropped
    x_theirs = x.copy()
    y, cache = _as_tuple(call("dropout", forward, x_theirs, p, np.random.default_rng(5)), 2, "dropout",
                         "forward", ("y", "cache"))
    _unchanged("dropout", "forward", {"x": x_theirs}, {"x": x})
    y = np.asarray(y, np.float64)
    if y.shape != x.shape:
        _fail("dropout", "forward", f"the output has shape {y.shape}, expected {x.shape}")
    kept = y != 0
    frac = 1.0 - kept.mean()
    sigma = math.sqrt(p * (1 - p) / x.size)
    if abs(frac - (1 - p)) < 5 * sigma and abs(frac - p) > 5 * sigma:
        _fail("dropout", "forward", f"drops {frac:.1%} of the elements, about 1 - p: p is the probability "
              "of dropping, 1 - p of keeping")
    if abs(frac - p) > 5 * sigma:
        _fail("dropout", "forward", f"drops {frac:.1%} of the elements, expected about p = {p:.0%}")
    ratio = y[kept] / x[kept]
    for k, what in ((1.0, "kept elements are not scaled: multiply by 1 / (1 - p) so the expected output "
                          "equals the input"),
                    (1 - p, "kept elements scaled by (1 - p), not 1 / (1 - p)"),
                    (1 / (1 - p), None)):
        if np.allclose(ratio, k, rtol=1e-12):
            if what:
                _fail("dropout", "forward", what)
            break
    else:
        _fail("dropout", "forward", f"kept elements are scaled by {ratio.min():.4g}..{ratio.max():.4g}, "
              f"expected 1 / (1 - p) = {1 / (1 - p):.4g}")
    dy = np.random.default_rng(1).standard_normal(x.shape)
    dy_theirs = dy.copy()
    (dx,) = _as_tuple(call("dropout", backward, dy_theirs, cache), 1, "dropout", "backward", ("dx",))
    _unchanged("dropout", "backward", {"dy (the upstream gradient)": dy_theirs}, {"dy (the upstream gradient)": dy})
    right = dy * y / x  # dropout is linear in x: dx = dy * mask / (1 - p)
    d = diagnose(dx, right, candidates={
        "not scaled by 1 / (1 - p) (the forward was)": dy * kept,
        "the mask is not applied: dx = dy / (1 - p)": dy / (1 - p),
        "dx = dy: dropout's backward is not the identity, it is the same mask": dy}, name="dx")
    if d and not d.startswith("wrong"):
        _fail("dropout", "backward, dx", d)
    if np.shape(dx) == x.shape and not np.array_equal(np.asarray(dx) != 0, kept):
        _fail("dropout", "backward, dx", "a different mask from the forward's: keep the forward's in the cache")
    if d:
        _fail("dropout", "backward, dx", d)
    print(f"dropout: pass (dropped {frac:.1%} for p = {p:.0%}, kept scaled by 1/(1-p), backward through the same mask)")


def check_lr_schedule(schedule):
    """schedule(step, total_steps, warmup_steps, base_lr) -> lr at `step` (0, 1, ..., the update
    about to be taken): linear warm-up from 0 to base_lr over warmup_steps, then linear decay to 0
    at total_steps. Checked over every step of two runs against minadapt.optim.lr_schedule."""
    from .optim import lr_schedule

    for total, warmup in ((20, 5), (13, 0)):
        steps = range(total + 2)
        try:
            got = np.array([float(call("lr schedule", schedule, t, total, warmup, 0.1)) for t in steps])
        except (TypeError, ValueError) as e:
            _fail("lr schedule", "the result", f"expected a number for each step ({e})")
        want = np.array([lr_schedule(t, total, warmup, 0.1) for t in steps])
        w = max(warmup, 1)
        cands = {
            "the warm-up starts at base_lr / warmup, not 0 (step + 1 where step belongs)":
                [0.1 * min(1.0, (t + 1) / w) if t < warmup else want[t] for t in steps],
            "the decay runs over total_steps, not total_steps - warmup_steps":
                [want[t] if t < warmup else 0.1 * max(0.0, (total - t) / total) for t in steps],
            "the decay goes below 0 past total_steps (clip it at 0)":
                [want[t] if t < warmup else 0.1 * (total - t) / max(1, total - warmup) for t in steps],
            "no warm-up: base_lr from the first step":
                [0.1 * max(0.0, (total - t) / max(1, total - warmup)) for t in steps]}
        d = diagnose(got, want, candidates={k: np.array(v) for k, v in cands.items()}, name="the schedule")
        if d:
            first = int(np.argmax(np.abs(got - want) > 1e-12 * 0.1)) if got.shape == want.shape else 0
            _fail("lr schedule", f"total {total}, warm-up {warmup}", d,
                  f"\n    step {first}: yours {got[first] if got.shape == want.shape else 'n/a'}, expected {want[first]}")
    print("lr schedule: pass (two runs, every step equals minadapt.optim.lr_schedule)")


# --- exercise 6: the embeddings' scatter-add, LoRA ---------------------------------------------
def check_embedding(forward, backward):
    """forward(input_ids, token_type_ids, w_word (V, H), w_pos (P, H), w_type (2, H)) -> (e, cache),
    e (B, T, H); backward(de, cache) -> (dw_word, dw_pos, dw_type). The ids repeat (as real text
    does): a repeated id's rows must add up."""
    from .nn import embedding

    r = _rng()
    V, P, H = 7, 6, 3
    ids = np.array([[1, 4, 4, 2], [1, 5, 4, 0]])  # 4 three times, 1 twice
    types = np.array([[0, 0, 1, 1], [0, 0, 0, 0]])
    inputs = dict(input_ids=ids, token_type_ids=types, w_word=r.standard_normal((V, H)),
                  w_pos=r.standard_normal((P, H)), w_type=r.standard_normal((2, H)))

    def backward_candidates(de, cache, input_ids, token_type_ids, w_word, w_pos, w_type):
        buffered = {}
        for name, table, idx in (("w_word", w_word, input_ids), ("w_type", w_type, token_type_ids)):
            dw = np.zeros_like(table)
            dw[idx.reshape(-1)] += de.reshape(-1, H)  # fancy-index += : a repeated index is written once
            buffered[name] = {"`dw[ids] += rows` keeps one row per repeated id (numpy buffers fancy-index "
                              "+=): use np.add.at(dw, ids, rows)": dw}
        dpos = np.zeros_like(w_pos)
        dpos[: ids.shape[1]] = de[0]
        buffered["w_pos"] = {"only the first sentence's gradient: sum de over the batch": dpos}
        return buffered

    _check_pair("embedding", forward, backward, inputs, embedding.forward, embedding.backward,
                ("w_word", "w_pos", "w_type"), backward_candidates=backward_candidates)


def check_lora(forward, backward):
    """forward(x (N, D), w (O, D), b (O,), lora_a (r, D), lora_b (O, r), scale) -> (y, cache),
    y = x W^T + b + scale (x A^T) B^T; backward(dy, cache) -> (dx, dlora_a, dlora_b): W and b are
    frozen. B is random here (not the zero of its init), so every gradient is non-trivial."""
    from .nn import lora

    r = _rng()
    N, D, O, rank, scale = 5, 6, 4, 2, 2.0
    inputs = dict(x=r.standard_normal((N, D)), w=r.standard_normal((O, D)), b=r.standard_normal(O),
                  lora_a=r.standard_normal((rank, D)), lora_b=r.standard_normal((O, rank)))

    def ref_forward(x, w, b, lora_a, lora_b):
        return lora.forward(x, w, b, lora_a, lora_b, scale)

    def ref_backward(dy, cache):
        return lora.backward(dy, cache)

    def forward_candidates(x, w, b, lora_a, lora_b):
        return {"the frozen x W^T + b is missing: only the low-rank term": scale * (x @ lora_a.T) @ lora_b.T,
                "the scale alpha / r is missing": x @ w.T + b + (x @ lora_a.T) @ lora_b.T}

    def backward_candidates(dy, cache, x, w, b, lora_a, lora_b):
        return {"x": {"dx misses the frozen path dy W (only the low-rank one)": scale * (dy @ lora_b) @ lora_a,
                      "dx misses the low-rank path (only dy W)": dy @ w}}

    _check_pair("lora", lambda x, w, b, lora_a, lora_b: forward(x, w, b, lora_a, lora_b, scale), backward,
                inputs, ref_forward, ref_backward, ("x", "lora_a", "lora_b"), batch=N,
                forward_candidates=forward_candidates, backward_candidates=backward_candidates)


# --- exercise 5: prefix tuning's attention and the prefix's gradient (lesson 11) ------------------
def check_prefix(forward, backward, n_heads=2):
    """forward(q, k, v, pk, pv, bias) -> (c, cache): attention of q (B, T, H) over [pk; k] and
    [pv; v] (pk, pv (n, H), the same for every sentence), with the mask bias (B, 1, 1, T) extended
    for the prefix; backward(dc, cache) -> (dq, dk, dv, dpk, dpv). No dropout (evaluation)."""
    from .nn import prefix

    r = _rng()
    B, T, n, H = 2, 4, 3, 4
    inputs = {t: r.standard_normal((B, T, H)) for t in "qkv"}
    inputs.update(pk=r.standard_normal((n, H)), pv=r.standard_normal((n, H)),
                  bias=attention.mask_bias(np.array([[1, 1, 1, 1], [1, 1, 0, 0]]), np.float64))

    def ref_forward(q, k, v, pk, pv, bias):
        return prefix.forward(q, k, v, pk, pv, bias, n_heads)

    def forward_candidates(q, k, v, pk, pv, bias):
        return {"the prefix is masked out: every query must see it (zeros in front of the mask)":
                attention.forward(q, k, v, bias, n_heads)[0]}

    _check_pair("prefix", forward, backward, inputs, ref_forward, prefix.backward,
                ("q", "k", "v", "pk", "pv"), batch=B, forward_candidates=forward_candidates)
