"""Exercise 5: prefix tuning's attention and the prefix's gradient (lesson 11)."""
from .cells import SETUP, code, md, stub

CELLS = [
md(r'''
# Exercise 5 — The prefix's gradient

Prefix tuning (lesson 11) puts $n$ trained keys $P_k$ and values $P_v$ in front of every
attention's own: $K' = [P_k; k]$, $V' = [P_v; v]$, the same $P_k, P_v$ for every sentence, and the
mask gains $n$ entries that hide nothing. Write the forward with `attention.forward` (lesson 3's
attention, which takes `q (B, Tq, H)`, `k, v (B, Tk, H)`, a bias `(B, 1, 1, Tk)` and the number of
heads) and the backward with `attention.backward`: the prefix needs no backward of its own, only
the right slice of $\bar K'$ and $\bar V'$ and one more step. The check after the cell compares
yours with `minadapt/nn/prefix.py` and with finite differences, and names the mistake it looks like.
'''),
SETUP,
code(r'''
from minadapt import exercise
from minadapt.nn import attention

NH = 2  # heads
'''),
stub(r'''
def prefix_forward(q, k, v, pk, pv, bias):
    # ---- your code ----
    B, n, H = k.shape[0], pk.shape[0], k.shape[2]
    k2 = np.concatenate([np.broadcast_to(pk, (B, n, H)), k], axis=1)  # (B, n+T, H)
    v2 = np.concatenate([np.broadcast_to(pv, (B, n, H)), v], axis=1)
    bias2 = np.concatenate([np.zeros((B, 1, 1, n)), bias], axis=-1)  # the prefix is never masked
    c, attn = attention.forward(q, k2, v2, bias2, NH)
    return c, (n, attn)
    # ---- end of your code ----


def prefix_backward(dc, cache):
    # ---- your code ----
    n, attn = cache
    dq, dk2, dv2 = attention.backward(dc, attn)
    # K' = [Pk; k]: the first n rows are the prefix's, and every sentence used the same Pk
    return dq, dk2[:, n:], dv2[:, n:], dk2[:, :n].sum(axis=0), dv2[:, :n].sum(axis=0)
    # ---- end of your code ----
'''),
code(r'''
exercise.check_prefix(prefix_forward, prefix_backward)
'''),
md(r'''
Why the sum over the batch: $P_k$ appears in every sentence's keys, so each sentence adds its own
contribution to the loss's gradient, as a bias does (exercise 1). Why the mask needs no backward:
it is a constant added to the scores. Now write $\bar P_k$ out per head without `attention.backward`
(lesson 11 section 3 has the formula) and compare.
'''),
]
