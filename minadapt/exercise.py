"""Checks for the exercise notebooks (lessons/exercises/): is a learner's forward/backward right,
and if not, which mistake does it look like?

Each `check_<op>(...)` runs the learner's functions on small random float64 inputs and compares
    the forward with the library's reference op (minadapt.nn),
    each gradient with the reference backward and with centred differences of the learner's forward.
It prints one "pass" line with the errors, or raises AssertionError (so a notebook run stops there)
naming the output that is wrong and what it looks like:

    sign                        yours == -right
    transpose                   yours.T == right
    missing sum over the batch  yours.sum(axis=0) == right (one gradient per row, not added up)
    scale (off by x k)          yours == k * right
    swapped with <other>        yours == the right value of another output
    ...                         and the op's own known mistakes (a candidate computed here on purpose)
    wrong                       none of these: the relative error is printed
"""
from __future__ import annotations

import math

import numpy as np

from . import gradcheck
from .nn import adapter, attention, gelu, layernorm, linear, loss, swish

TOL = 1e-7  # relative error below which two float64 results are "the same"
FD_TOL = 1e-5  # ... and against centred differences, which are only that accurate


def _same(a, b) -> bool:
    return a.shape == b.shape and bool(np.all(np.isfinite(a))) and gradcheck.rel_error(a, b) < TOL


def diagnose(got, want, batch=None, candidates=None) -> str | None:
    """None when `got` equals `want`; otherwise what the difference looks like.
    batch: the number of rows summed over (for "missing sum" and "mean instead of sum");
    candidates: {description: array}, the op's known mistakes, computed from the reference."""
    candidates = candidates or {}
    if got is None:
        return "returned None"
    got = np.asarray(got, dtype=np.float64)
    if not np.all(np.isfinite(got)):
        return "nan or inf in the result (overflow? exp of a large number)"
    if got.shape == want.shape and gradcheck.rel_error(got, want) < TOL:
        return None
    for what, c in candidates.items():
        if _same(got, c):
            return what
    if got.shape == want.shape and _same(got, -want):
        return "sign: yours is minus the right one"
    if got.ndim == 2 and got.shape == want.shape[::-1] and _same(got.T, want):
        return "transpose: yours is the transpose of the right one"
    n = want.ndim
    if got.ndim > n and got.shape[got.ndim - n:] == want.shape and \
            _same(got.reshape(-1, *want.shape).sum(axis=0), want):
        return "missing sum over the batch: one gradient per row, not added up"
    if got.shape != want.shape:
        return f"shape {got.shape}, expected {want.shape}"
    k = float((got * want).sum() / max((want * want).sum(), 1e-300))
    if k != 0 and _same(got, k * want):
        if batch and math.isclose(k, 1 / batch, rel_tol=1e-6):
            return f"scale (off by x 1/{batch}): a mean over the batch where a sum belongs"
        if batch and math.isclose(k, batch, rel_tol=1e-6):
            return f"scale (off by x {batch}): a sum over the batch where a mean belongs"
        return f"scale (off by x {k:.4g})"
    return f"wrong (max relative error {gradcheck.rel_error(got, want):.2e})"


def _fail(op, what, message, errors=""):
    raise AssertionError(f"{op}: {what} looks wrong -> {message}{errors}")


def _check_pair(op, forward, backward, inputs, ref_forward, ref_backward, wrt, batch=None,
                forward_candidates=None, backward_candidates=None, forward_output=lambda out: out):
    """The shared check. inputs: {name: array}, passed to both forwards in this order; wrt: the
    names of the inputs whose gradients backward returns, in its order; the *_candidates functions
    give {description: array} of known mistakes (backward's: {output name: {...}})."""
    args = {k: v.copy() for k, v in inputs.items()}
    want, ref_cache = ref_forward(**args)
    result = forward(**{k: v.copy() for k, v in inputs.items()})
    if not isinstance(result, tuple) or len(result) != 2:
        _fail(op, "forward", "expected it to return a pair (out, cache)")
    out, cache = result
    cand = forward_candidates(**args) if forward_candidates else {}
    d = diagnose(forward_output(out), want, batch, cand)
    if d:
        _fail(op, "forward", d)
    dy = np.random.default_rng(1).standard_normal(want.shape)
    grads = backward(dy.copy(), cache)
    if not isinstance(grads, tuple) or len(grads) != len(wrt):
        _fail(op, "backward", f"expected a tuple of {len(wrt)} arrays ({', '.join('d' + w for w in wrt)})")
    right = ref_backward(dy.copy(), ref_cache)
    cands = backward_candidates(dy, ref_cache, **args) if backward_candidates else {}
    report = []
    for name, g, r in zip(wrt, grads, right):
        others = {f"swapped: this is the right d{o}": ro for o, ro in zip(wrt, right) if o != name}
        d = diagnose(g, r, batch, {**cands.get(name, {}), **others})
        fd_err = None
        if g is not None and np.shape(g) == r.shape:
            x = inputs[name].copy()
            rest = {k: v.copy() for k, v in inputs.items() if k != name}
            fd = gradcheck.numerical_grad(lambda a: forward_output(forward(**{name: a}, **rest)[0]), x, dy)
            fd_err = gradcheck.rel_error(g, fd)
        errors = f"\n    d{name}: rel. error {_err(g, r)} " \
                 f"against minadapt's backward, {'n/a' if fd_err is None else f'{fd_err:.1e}'} " \
                 "against finite differences"
        if d:
            _fail(op, f"backward, d{name}", d, errors)
        if fd_err > FD_TOL:
            _fail(op, f"backward, d{name}", "disagrees with finite differences", errors)
        report.append(f"d{name} {fd_err:.0e}")
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
    inputs = dict(x=r.standard_normal((4, 6)), gamma=1 + 0.3 * r.standard_normal(6),
                  beta=r.standard_normal(6))

    def ref_forward(x, gamma, beta):
        return layernorm.forward(x, gamma, beta, eps, trainable=True)

    def forward_candidates(x, gamma, beta):
        unbiased = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, ddof=1, keepdims=True) + eps)
        return {"variance divided by H - 1, not H": gamma * unbiased + beta}

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
    got = layer_backward(dout.copy(), cache)
    if not isinstance(got, tuple) or len(got) != 3:
        _fail("layer backward", "the result", "expected (dx, adapter_attn_grads, adapter_ffn_grads)")
    wrong = _layer_backward_mistakes(dout, cache)
    # in the order backward reaches them: the FFN adapter, the attention adapter, then dx
    order = [("the FFN adapter's d" + k, g, grads[n]) for k, g, n in zip(bert.ADAPTER_KEYS, got[2], names["output"])]
    order += [("the attention adapter's d" + k, g, grads[n]) for k, g, n in zip(bert.ADAPTER_KEYS, got[1], names["attention.output"])]
    order += [("dx", got[0], dx)]
    for what, g, right in order:
        cands = {m: w[what] for m, w in wrong.items() if what in w}
        d = diagnose(g, right, candidates=cands)
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
    def learner_forward(h, w_down, b_down, w_up, b_up, act=None, skip=True):
        y, cache = forward(h, w_down, b_down, w_up, b_up)
        return (y if skip else y - h), (cache, skip)

    def learner_backward(dy, cache):
        cache, skip = cache
        dh, *dparams = backward(dy, cache)
        return (dh if skip else dh - dy, *dparams)

    learners = SimpleNamespace(forward=learner_forward, backward=learner_backward)
    model.ops = SimpleNamespace(**{**vars(model.ops), "adapter": learners})  # what bert.py calls
    _, logits, grads = model.loss_and_grads(*batch, labels, adapter="ex", train=False)
    # in the order backward reaches them: the head, then the layers top down, FFN before attention
    order = sorted(right, key=lambda k: (k.startswith("encoder."), -int(k.split(".")[2]) if k.startswith("encoder.")
                                         else 0, ".attention." in k, k))
    for what, g, want in [("logits", logits, right_logits), *((k, grads[k], right[k]) for k in order)]:
        d = diagnose(g, want)
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
                  w4=r.standard_normal((C, H)), b4=r.standard_normal(C))

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


def _adamw_reference(p, gs, lr, betas, eps, wd, bias_correction=True, decoupled=True, sign=1.0):
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
        p = p - sign * lr * mh / (np.sqrt(vh) + eps)
        out.append(p)
    return np.stack(out)


def check_adamw(step):
    """step(p, g, m, v, t, lr, betas, eps, weight_decay) -> (p, m, v), new arrays; t = 1, 2, ...
    Five steps are compared with minadapt.optim.AdamW, parameter by parameter."""
    from .optim import AdamW

    r = _rng()
    p0 = r.standard_normal((3, 4))
    gs = [r.standard_normal((3, 4)) for _ in range(5)]
    hp = dict(lr=0.1, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1)
    params = {"w": p0.copy()}
    opt = AdamW(params, **hp, no_decay=lambda name: False)
    right = []
    for g in gs:
        opt.step(params, {"w": g.copy()})
        right.append(params["w"].copy())
    right = np.stack(right)
    p, m, v, got = p0.copy(), np.zeros_like(p0), np.zeros_like(p0), []
    for t, g in enumerate(gs, start=1):
        p, m, v = step(p.copy(), g.copy(), m.copy(), v.copy(), t, hp["lr"], hp["betas"], hp["eps"], hp["weight_decay"])
        got.append(np.asarray(p))
    got = np.stack(got)
    args = (p0, gs, hp["lr"], hp["betas"], hp["eps"], hp["weight_decay"])
    moves = {"bias correction missing (m / (1 - b1^t), v / (1 - b2^t))": _adamw_reference(*args, bias_correction=False),
             "weight decay added to the gradient (L2), not decoupled": _adamw_reference(*args, decoupled=False),
             "sign: the step goes up the gradient": _adamw_reference(*args, sign=-1.0)}
    # compare the moves (p_t - p_0) rather than the parameters, so that a scale or sign shows
    d = diagnose(got - p0, right - p0, candidates={k: c - p0 for k, c in moves.items()})
    if d:
        _fail("adamw", "the parameters after 5 steps", d, f"\n    rel. error {_err(got - p0, right - p0)} "
              "against minadapt.optim.AdamW")
    print(f"adamw: pass (5 steps equal minadapt.optim.AdamW, rel. error {gradcheck.rel_error(got, right):.0e})")


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
