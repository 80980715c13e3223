"""Your ops in the real model: the functions you wrote in the exercises, as an ops bundle.

    from minadapt import learner, load_model
    mine = learner.ops(globals())                         # your linear_forward, linear_backward, ...
    model = load_model(WEIGHTS, ops=mine)                 # bert.py now calls your functions

bert.py calls every op through `run.ops` (ops.py), so swapping the bundle swaps the maths of the
whole encoder: every linear (Q|K|V, the attention output, the FFN, the adapters' projections and
the head), GELU, every LayerNorm, softmax and attention, the adapters, dropout, and the
cross-entropy loss are yours; what is left of the library is the model's wiring (bert.py), the
embedding lookup, tanh in the head, swish inside your adapter, and LoRA.

Each wrapper adapts an exercise's signature to what bert.py calls (your linear and LayerNorm take
(N, D) rows, bert.py has (B, T, D): they are reshaped; your attention takes split heads), checks the
shape of everything your function returns before the library uses it, and turns an error inside
your code into one message naming your function and line (exercise.call). Three things differ from
the library's ops, on purpose: a frozen linear still gets dW from your backward (then dropped: your
backward has no "frozen" switch), attention has no dropout on its probabilities (yours has none),
and the adapter's non-linearity is whatever your adapter_forward uses.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from . import heads, nn
from .exercise import Mistake, call
from .nn.attention import merge_heads, split_heads

# the exercise functions a bundle needs: name -> the exercise that asks for it
NEEDED = {
    "linear_forward": 1, "linear_backward": 1, "gelu_forward": 1, "gelu_backward": 1,
    "layernorm_forward": 1, "layernorm_backward": 1, "attention_forward": 2, "attention_backward": 2,
    "adapter_forward": 3, "adapter_backward": 3, "dropout_forward": 4, "dropout_backward": 4,
    "cross_entropy_forward": 4, "cross_entropy_backward": 4,
}


def _shape(op, what, got, want, dtype=None):
    """`got` as an array of `dtype` (the model's: a float64 constant in your code would otherwise
    turn a float32 model into float64 from there on); a Mistake unless its shape is `want`
    (checked before the library uses it)."""
    if got is None or np.shape(got) != tuple(want):
        raise Mistake(f"{op}: {what} has shape {None if got is None else np.shape(got)}, expected "
                      f"{tuple(want)} (inside the model, before the library used it)")
    return got if dtype is None else np.asarray(got).astype(dtype, copy=False)


class _Linear:
    """bert.py's linear: x (..., D) -> y (..., O); yours sees (N, D) rows."""

    def __init__(self, forward, backward):
        self.f, self.b = forward, backward

    def forward(self, x, w, b=None, frozen=False):
        x2 = x.reshape(-1, x.shape[-1])
        bias = b if b is not None else np.zeros(w.shape[0], x.dtype)
        y, cache = call("linear", self.f, x2, w, bias)
        y = _shape("linear", "linear_forward's y", y, (x2.shape[0], w.shape[0]), x.dtype)
        return y.reshape(*x.shape[:-1], w.shape[0]), (cache, x.shape, w.shape, frozen, b is not None)

    def backward(self, dy, cache, need_dx=True):
        cache, x_shape, w_shape, frozen, has_bias = cache
        dy2 = dy.reshape(-1, dy.shape[-1])
        dx, dw, db = call("linear", self.b, dy2, cache)
        dx = _shape("linear", "linear_backward's dx", dx, (dy2.shape[0], w_shape[1]), dy.dtype)
        if frozen:
            return dx.reshape(x_shape), None, None
        dw = _shape("linear", "linear_backward's dw", dw, w_shape, dy.dtype)
        db = _shape("linear", "linear_backward's db", db, (w_shape[0],), dy.dtype)
        return dx.reshape(x_shape), dw, db if has_bias else None


class _Elementwise:
    """GELU (or any op of one array): any shape in, the same shape out."""

    def __init__(self, op, forward, backward):
        self.op, self.f, self.b = op, forward, backward

    def forward(self, x):
        y, cache = call(self.op, self.f, x)
        return _shape(self.op, f"{self.f.__name__}'s output", y, x.shape, x.dtype), (cache, x.shape)

    def backward(self, dy, cache):
        cache, shape = cache
        (dx,) = call(self.op, self.b, dy, cache)
        return (_shape(self.op, f"{self.b.__name__}'s dx", dx, shape, dy.dtype),)


class _LayerNorm:
    def __init__(self, forward, backward):
        self.f, self.b = forward, backward

    def forward(self, x, gamma, beta, eps=1e-12, trainable=False):
        x2 = x.reshape(-1, x.shape[-1])
        y, cache = call("layernorm", self.f, x2, gamma, beta, eps)
        y = _shape("layernorm", "layernorm_forward's y", y, x2.shape, x.dtype)
        return y.reshape(x.shape), (cache, x.shape, trainable)

    def backward(self, dy, cache):
        cache, shape, trainable = cache
        dx, dgamma, dbeta = call("layernorm", self.b, dy.reshape(-1, shape[-1]), cache)
        dx = _shape("layernorm", "layernorm_backward's dx", dx, (int(np.prod(shape[:-1])), shape[-1]), dy.dtype)
        if not trainable:
            return dx.reshape(shape), None, None
        dgamma = _shape("layernorm", "layernorm_backward's dgamma", dgamma, (shape[-1],), dy.dtype)
        dbeta = _shape("layernorm", "layernorm_backward's dbeta", dbeta, (shape[-1],), dy.dtype)
        return dx.reshape(shape), dgamma, dbeta


class _Attention:
    """bert.py's attention takes (B, T, H) and the number of heads; yours takes split heads."""

    def __init__(self, forward, backward):
        self.f, self.b = forward, backward

    def forward(self, q, k, v, bias, n_heads, p_drop=0.0, rng=None, train=False):
        qs, ks, vs = (split_heads(t, n_heads).copy() for t in (q, k, v))
        c, cache = call("attention", self.f, qs, ks, vs, bias)
        c = _shape("attention", "attention_forward's c", c, qs.shape, q.dtype)
        return merge_heads(c), (cache, n_heads, qs.shape)

    def backward(self, dc, cache):
        cache, n_heads, shape = cache
        grads = call("attention", self.b, split_heads(dc, n_heads).copy(), cache)
        grads = [_shape("attention", f"attention_backward's {what}", g, shape, dc.dtype)
                 for what, g in zip(("dq", "dk", "dv"), grads)]
        return tuple(merge_heads(g) for g in grads)


class _Adapter:
    """Yours returns h + A(h); inside a layer bert.py asks for A(h) alone (skip=False): the
    layer's residual sum adds h itself. So y - h forward, dh - dy backward."""

    def __init__(self, forward, backward):
        self.f, self.b = forward, backward

    def forward(self, h, w_down, b_down, w_up, b_up, act=None, skip=True):
        y, cache = call("adapter", self.f, h, w_down, b_down, w_up, b_up)
        y = _shape("adapter", "adapter_forward's y", y, h.shape, h.dtype)
        return (y if skip else y - h), (cache, skip, h.shape, (w_down.shape, b_down.shape, w_up.shape, b_up.shape))

    def backward(self, dy, cache):
        cache, skip, shape, shapes = cache
        dh, *dparams = call("adapter", self.b, dy, cache)
        dh = _shape("adapter", "adapter_backward's dh", dh, shape, dy.dtype)
        dparams = [_shape("adapter", f"adapter_backward's {what}", g, s, dy.dtype)
                   for what, g, s in zip(("dw_down", "db_down", "dw_up", "db_up"), dparams, shapes)]
        return (dh if skip else dh - dy, *dparams)


class _Dropout:
    """Yours always drops (training); at evaluation or p = 0 dropout is the identity."""

    def __init__(self, forward, backward):
        self.f, self.b = forward, backward

    def forward(self, x, p, rng=None, train=True):
        if not train or p == 0.0:
            return x, None
        y, cache = call("dropout", self.f, x, p, rng)
        return _shape("dropout", "dropout_forward's y", y, x.shape, x.dtype), (cache, x.shape)

    def backward(self, dy, cache):
        if cache is None:
            return (dy,)
        cache, shape = cache
        (dx,) = call("dropout", self.b, dy, cache)
        return (_shape("dropout", "dropout_backward's dx", dx, shape, dy.dtype),)


class _CrossEntropy:
    def __init__(self, forward, backward):
        self.f, self.b = forward, backward

    def forward(self, logits, labels):
        L, cache = call("cross-entropy", self.f, logits, labels)
        L = _shape("cross-entropy", "cross_entropy_forward's loss", np.asarray(L), (), logits.dtype)
        return L, (cache, logits.shape, logits.dtype)

    def backward(self, dloss, cache):
        cache, shape, dtype = cache
        (dlogits,) = call("cross-entropy", self.b, dloss, cache)
        return (_shape("cross-entropy", "cross_entropy_backward's dlogits", dlogits, shape, dtype),)


class _Head:
    """heads.py's tanh head with your linear in both projections (and your dropout)."""

    def __init__(self, linear):
        self.linear = linear

    def forward(self, h_cls, params, name, p_drop=0.1, rng=None, train=False, dropout=nn.dropout):
        return heads.forward(h_cls, params, name, p_drop, rng, train, dropout, linear=self.linear)

    def backward(self, dlogits, cache, name, dropout=nn.dropout):
        return heads.backward(dlogits, cache, name, dropout, linear=self.linear)


def ops(functions: dict) -> SimpleNamespace:
    """The ops bundle made of your functions. `functions`: a dict holding them by the exercises'
    names (a notebook's `globals()`), see NEEDED."""
    missing = [f"{k} (exercise {n})" for k, n in NEEDED.items() if not callable(functions.get(k))]
    if missing:
        from .errors import ConfigError

        raise ConfigError("learner ops: these functions are not defined yet: " + ", ".join(missing))
    f = functions
    lin = _Linear(f["linear_forward"], f["linear_backward"])
    return SimpleNamespace(
        name="mine", linear=lin, gelu=_Elementwise("gelu", f["gelu_forward"], f["gelu_backward"]),
        layernorm=_LayerNorm(f["layernorm_forward"], f["layernorm_backward"]),
        attention=_Attention(f["attention_forward"], f["attention_backward"]),
        adapter=_Adapter(f["adapter_forward"], f["adapter_backward"]),
        dropout=_Dropout(f["dropout_forward"], f["dropout_backward"]),
        cross_entropy=_CrossEntropy(f["cross_entropy_forward"], f["cross_entropy_backward"]),
        head=_Head(lin), non_linearities=dict(nn.adapter.NON_LINEARITIES), lora=nn.lora, cls_layer=None)
