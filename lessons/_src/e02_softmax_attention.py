"""Exercise 2: write softmax and scaled dot-product attention with a padding mask (lesson 3)."""
from .cells import SETUP, code, md, stub

CELLS = [
md(r'''
# Exercise 2 — Softmax and attention

As in exercise 1: write the marked cells, and the cell after each checks them against the
reference (`minadapt/nn/attention.py`) and finite differences, printing `pass` or the mistake it
looks like. Lesson 3 derives both backwards.
'''),
SETUP,
code(r'''
from minadapt import exercise
from minadapt.nn import attention  # for mask_bias: 0 for tokens, a huge negative number for [PAD]
'''),
md(r'''
## 1. Softmax over the last axis: $a_i = e^{s_i} / \sum_j e^{s_j}$

The check feeds one row of scores near 800, where `np.exp` overflows: subtracting the row's
maximum first changes nothing mathematically. The backward is the softmax Jacobian
$\partial a_i/\partial s_j = a_i(\delta_{ij} - a_j)$ applied to $\bar a$; write it without forming the matrix.
'''),
stub(r'''
def softmax_forward(s):
    # ---- your code ----
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    a = e / e.sum(axis=-1, keepdims=True)
    return a, a
    # ---- end of your code ----


def softmax_backward(da, cache):
    # ---- your code ----
    a = cache
    return (a * (da - (da * a).sum(axis=-1, keepdims=True)),)
    # ---- end of your code ----
'''),
code(r'''
exercise.check_softmax(softmax_forward, softmax_backward)
'''),
md(r'''
## 2. Scaled dot-product attention with a mask

The heads are already split: `q`, `k`, `v` are `(B, nh, T, hs)`, and `bias` is `(B, 1, 1, T)`
(`attention.mask_bias` of the padding mask), added to the scores so [PAD] keys get no attention:

$$s = q k^\top/\sqrt{hs} + \text{bias}, \qquad a = \operatorname{softmax}(s), \qquad c = a\,v .$$

Return `(dq, dk, dv)`. Your softmax pair from above may be used. `np.swapaxes(t, -1, -2)`
transposes the last two axes of a batch of matrices.
'''),
stub(r'''
def attention_forward(q, k, v, bias):
    # ---- your code ----
    scale = 1.0 / np.sqrt(q.shape[-1])
    s = q @ np.swapaxes(k, -1, -2) * scale + bias  # (B, nh, T, T)
    a, _ = softmax_forward(s)
    return a @ v, (q, k, v, a)  # (B, nh, T, hs)
    # ---- end of your code ----


def attention_backward(dc, cache):
    # ---- your code ----
    q, k, v, a = cache
    scale = 1.0 / np.sqrt(q.shape[-1])
    # c = a v
    da = dc @ np.swapaxes(v, -1, -2)
    dv = np.swapaxes(a, -1, -2) @ dc
    # a = softmax(s)
    (ds,) = softmax_backward(da, a)
    # s = q k^T scale + bias
    dq = ds @ k * scale
    dk = np.swapaxes(ds, -1, -2) @ q * scale
    return dq, dk, dv
    # ---- end of your code ----
'''),
code(r'''
exercise.check_attention(attention_forward, attention_backward)
'''),
md(r'''
## Check your understanding

1. Subtracting the row's maximum changes nothing mathematically. Why does subtracting the maximum of the whole array fail on the check's input?
2. Where in your attention backward does the padding mask appear?

<details><summary>Answers</summary>

1. The check has one row near 800: shifted by that, every other row's exponentials underflow to 0, and $0/0$ gives nan.
2. Nowhere explicitly: it is a constant added to the scores, and its effect arrives through $a_j = 0$ for padded keys.
</details>
'''),
]
