"""Exercise 3: write the bottleneck adapter, then one encoder layer's backward (lessons 4 and 5)."""
from .cells import SETUP, WEIGHTS, code, md, stub

CELLS = [
md(r'''
# Exercise 3 — The adapter, and one encoder layer's backward

As before: write the marked cells; the cell after each checks them against the reference
(`minadapt/nn/adapter.py`, `minadapt/bert.py`) and finite differences, and prints `pass` or the
mistake it looks like. Lesson 5 covers the adapter, lesson 4 the layer.
'''),
SETUP,
code(r'''
import inspect

from minadapt import bert, exercise
from minadapt.nn import adapter, attention, gelu, layernorm, linear, swish
'''),
md(r'''
## 1. The bottleneck adapter (Houlsby et al., 2019)

$$z = h W_\text{down}^\top + b_\text{down}, \qquad u = \operatorname{swish}(z), \qquad
y = h + u W_\text{up}^\top + b_\text{up}$$

`h` is `(..., H)`: `(N, H)` rows in the check below, `(B, T, H)` in the model of §3 (the library's
`linear` takes either), `w_down` `(m, H)`, `w_up` `(H, m)`. Compose it from the library's `linear` and
`swish` pairs (you wrote linear in exercise 1): the point here is the order of the pieces and the
skip connection. Return `(dh, dw_down, db_down, dw_up, db_up)`. (The check uses a random
$W_\text{up}$, not the zero of the identity init, so that every gradient is non-trivial.)
'''),
stub(r'''
def adapter_forward(h, w_down, b_down, w_up, b_up):
    # ---- your code ----
    z, down = linear.forward(h, w_down, b_down)  # (N, m)
    u, act = swish.forward(z)
    y, up = linear.forward(u, w_up, b_up)  # (N, H)
    return h + y, (down, act, up)  # + h: the skip connection
    # ---- end of your code ----


def adapter_backward(dy, cache):
    # ---- your code ----
    down, act, up = cache
    du, dw_up, db_up = linear.backward(dy, up)
    (dz,) = swish.backward(du, act)
    dh, dw_down, db_down = linear.backward(dz, down)
    return dh + dy, dw_down, db_down, dw_up, db_up  # + dy: the skip connection's gradient
    # ---- end of your code ----
'''),
code(r'''
exercise.check_adapter(adapter_forward, adapter_backward)
'''),
md(r'''
## 2. One encoder layer's backward

`bert.layer_forward` runs one layer and returns its `LayerCache`: the caches of every op it
called, in the library's own format (`cache.qkv`, `cache.attn`, and `cache.rest.site2.ln`,
`cache.rest.site2.adapter`, ... from `after_attention_forward`, each sub-layer's end a `SiteCache`). Here it runs in evaluation mode (dropout off: skip it), with
the reference ops and a Houlsby adapter in both places. Its equations, and the code:

```
q|k|v = x Wqkv^T + bqkv     c = attention(q, k, v, mask)
a = c Wo^T + bo             h = LayerNorm1(a + x + A_attn(a))
f = gelu(h Wi^T + bi)       o = f Wo2^T + bo2                 out = LayerNorm2(o + h + A_ffn(o))
```

A(u) = f(u W_down^T + b_down) W_up^T + b_up is the adapter's bottleneck alone: inside the layer
its skip connection is the residual sum the layer forms anyway, so the library calls
`adapter.forward(..., skip=False)` there, and `adapter.backward` returns the gradient through the
bottleneck only.
'''),
code(r'''
print(inspect.getsource(bert.after_attention_forward))
print("LayerCache:", bert.LayerCache._fields)
print("AfterAttentionCache (cache.rest):", bert.AfterAttentionCache._fields)
print("SiteCache (cache.rest.site1, .site2):", bert.SiteCache._fields)
'''),
md(r'''
Write its backward with the library's op pairs (`layernorm`, `adapter`, `linear`, `gelu`,
`attention`: each `backward(dout, cache)`; a frozen linear returns `(dx, None, None)`). Read the
forward bottom-up. The sums are where the gradient branches: `o` reaches `o + h + A_ffn(o)` twice,
and `h` once there and once through the feed-forward block; keep each branch and add it where the
paths meet. Return `dx` and each adapter's gradients `(dw_down, db_down, dw_up, db_up)`.
'''),
stub(r'''
def layer_backward(dout, cache):
    # ---- your code ----
    r = cache.rest
    # out = LayerNorm2(s2),  s2 = o + h + A_ffn(o)
    ds2, _, _ = layernorm.backward(dout, r.site2.ln)
    # A_ffn(o): the adapter's bottleneck alone (its skip connection is the sum's own o)
    du, *ffn_grads = adapter.backward(ds2, r.site2.adapter)
    do = ds2 + du  # o reaches s2 twice: directly, and through the adapter
    # o = f Wo2^T + bo2;  f = gelu(h Wi^T + bi)
    df, _, _ = linear.backward(do, r.ffn_out)
    (df,) = gelu.backward(df, r.gelu)
    dh, _, _ = linear.backward(df, r.ffn_in)
    dh = dh + ds2  # the residual branch of o + h
    # h = LayerNorm1(s1),  s1 = a + x + A_attn(a)
    ds1, _, _ = layernorm.backward(dh, r.site1.ln)
    du, *attn_grads = adapter.backward(ds1, r.site1.adapter)
    da = ds1 + du
    # a = c Wo^T + bo;  c = attention(q, k, v, mask);  q|k|v = x Wqkv^T + bqkv
    dc, _, _ = linear.backward(da, r.attn_out)
    dq, dk, dv = attention.backward(dc, cache.attn)
    dx, _, _ = linear.backward(np.concatenate([dq, dk, dv], axis=-1), cache.qkv)
    return dx + ds1, tuple(attn_grads), tuple(ffn_grads)  # + ds1: the residual branch of a + x
    # ---- end of your code ----
'''),
code(r'''
exercise.check_layer_backward(layer_backward)
'''),
md(r'''
## 3. Your adapter in the pretrained model

Last, your adapter pair replaces the library's in all twelve adapter sites of all-MiniLM-L6-v2 (two
per layer, float64, the reference ops): the logits of two sentences and every adapter and head
gradient must come out the same. (The checkpoint is fetched into `weights/` if it is not there.)
'''),
WEIGHTS,
code(r'''
exercise.check_adapter_in_model(adapter_forward, adapter_backward, WEIGHTS)
'''),
md(r'''
## Check your understanding

1. Inside the layer the library calls the adapter with `skip=False`. What would go wrong with the skip connection left in?
2. In the layer backward, why is `ds2` added to `dh`?

<details><summary>Answers</summary>

1. The residual sum already adds the sub-layer's output; the adapter's own `+ h` would add it a second time, and at the identity initialisation the layer would no longer compute what the pretrained one did.
2. `h` is used twice in the forward: as the feed-forward block's input and in the residual sum `o + h + A(o)`; its gradient is the sum over both uses.
</details>
'''),
]
