"""Exercise 6: the embeddings' scatter-add backward, and LoRA (lessons 4 and 10)."""
from .cells import SETUP, code, md, stub

CELLS = [
md(r'''
# Exercise 6 — The embeddings' backward, and LoRA

Two more pairs, as before: write the marked cells; the cell after each checks them against the
reference (`minadapt/nn/embedding.py`, `minadapt/nn/lora.py`) and finite differences.
'''),
SETUP,
code(r'''
from minadapt import exercise
'''),
md(r'''
## 1. The embeddings: a lookup, and its scatter-add

BERT's input vector for token $t$ of sentence $b$ is the sum of three rows of three tables:
$e_{bt} = W_\text{word}[\text{id}_{bt}] + W_\text{pos}[t] + W_\text{type}[\text{type}_{bt}]$,
`w_word` `(V, H)`, `w_pos` `(P, H)` (P positions, T of them used), `w_type` `(2, H)`. A lookup is a
product with a one-hot matrix, so its gradient sends each row of $\bar e$ back to the row it came
from, **adding** where an id repeats (the check's sentences repeat ids, as real text does). Return
`(dw_word, dw_pos, dw_type)`, each shaped like its table.
'''),
stub(r'''
def embedding_forward(input_ids, token_type_ids, w_word, w_pos, w_type):
    # ---- your code ----
    T = input_ids.shape[1]
    e = w_word[input_ids] + w_pos[:T] + w_type[token_type_ids]  # (B, T, H)
    return e, (input_ids, token_type_ids, w_word.shape, w_pos.shape, w_type.shape)
    # ---- end of your code ----


def embedding_backward(de, cache):
    # ---- your code ----
    ids, types, s_word, s_pos, s_type = cache
    H = de.shape[-1]
    rows = de.reshape(-1, H)  # (B*T, H)
    dw_word = np.zeros(s_word)
    np.add.at(dw_word, ids.reshape(-1), rows)  # a repeated id adds all its rows
    dw_pos = np.zeros(s_pos)
    dw_pos[: de.shape[1]] = de.sum(axis=0)  # position t is used once per sentence
    dw_type = np.zeros(s_type)
    np.add.at(dw_type, types.reshape(-1), rows)
    return dw_word, dw_pos, dw_type
    # ---- end of your code ----
'''),
code(r'''
exercise.check_embedding(embedding_forward, embedding_backward)
'''),
md(r'''
## 2. LoRA: a low-rank change to a frozen linear (Hu et al., 2021)

$$y = x W^\top + b + s\,(x A^\top) B^\top, \qquad s = \alpha / r$$

`x` `(N, D)`, `w` `(O, D)` and `b` frozen, `lora_a` `(r, D)`, `lora_b` `(O, r)`, `scale` $= s$.
Only $A$ and $B$ train, so backward returns `(dx, dlora_a, dlora_b)`; `dx` flows through both
paths. Multiply $x A^\top$ first: it is `(N, r)`, thin, and never form $BA$ `(O, D)`.
'''),
stub(r'''
def lora_forward(x, w, b, lora_a, lora_b, scale):
    # ---- your code ----
    t = x @ lora_a.T  # (N, r)
    y = x @ w.T + b + scale * t @ lora_b.T  # (N, O)
    return y, (x, w, t, lora_a, lora_b, scale)
    # ---- end of your code ----


def lora_backward(dy, cache):
    # ---- your code ----
    x, w, t, lora_a, lora_b, scale = cache
    g = scale * dy  # the gradient reaching t B^T
    dlora_b = g.T @ t  # (O, r)
    dt = g @ lora_b  # (N, r)
    dlora_a = dt.T @ x  # (r, D)
    return dy @ w + dt @ lora_a, dlora_a, dlora_b  # dx: the frozen path plus the low-rank one
    # ---- end of your code ----
'''),
code(r'''
exercise.check_lora(lora_forward, lora_backward)
'''),
md(r'''
## Check your understanding

1. Sentence "the film the film" has id 1996 twice. What is `dw_word[1996]`, in terms of $\bar e$?
2. `dw[ids] += rows` runs without an error. Why is it wrong, and what does `np.add.at` do differently?
3. LoRA starts with $B = 0$. What is $\bar A$ at the first step? What is $\bar B$? Does training get going?
4. Why can a trained LoRA be merged into $W$ (no cost at inference) while a bottleneck adapter cannot?

<details><summary>Answers</summary>

1. The sum of the two rows of $\bar e$ at those positions: each use of a row contributes its gradient.
2. NumPy evaluates `dw[ids] + rows` once and writes the result per index, so for a repeated index
   the last write wins and the others are lost; `np.add.at` accumulates every one (it is unbuffered).
3. $\bar A = s\,(\bar y B)^\top x = 0$, but $\bar B = s\,\bar y^\top (x A^\top) \ne 0$: B moves first,
   and once $B \ne 0$ A gets gradients too.
4. $x W^\top + s\,x A^\top B^\top = x (W + s\,BA)^\top$: a linear change adds into $W$. An adapter
   has a non-linearity between its two projections (lesson 10 shows the residual of its best linear fit).
</details>
'''),
]
