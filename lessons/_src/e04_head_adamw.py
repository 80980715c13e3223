"""Exercise 4: cross-entropy, the classification head, dropout, one AdamW step and the learning-rate
schedule: the pieces of a training step (lesson 6)."""
from .cells import SETUP, code, md, stub

CELLS = [
md(r'''
# Exercise 4 — Cross-entropy, the head, dropout, AdamW and the schedule

As before: write the marked cells; the cell after each checks them against the reference
(`minadapt/nn/loss.py`, `minadapt/heads.py`, `minadapt/nn/dropout.py`, `minadapt/nn/adamw.py`,
`minadapt/optim.py`) and prints `pass` or the mistake it looks like. Lesson 6 puts them together in
the training loop, and the capstone (exercise 7) trains BERT with yours.
'''),
SETUP,
code(r'''
from minadapt import exercise
'''),
md(r'''
## 1. Softmax cross-entropy

For logits $\ell$ `(B, C)` and integer labels $y$ `(B,)`:
$L = -\frac1B\sum_b \log \operatorname{softmax}(\ell_b)_{y_b}$, where
$\log\operatorname{softmax}(\ell)_c = \ell_c - \log\sum_j e^{\ell_j}$. Work out
$\partial L/\partial \ell$ on paper first (it is short). `cross_entropy_backward(dloss, cache)` gets
the upstream gradient of the loss (1 when the loss ends the chain, but the check passes another
number) and returns `(dlogits,)`. One row of the check's logits sits near 750.
'''),
stub(r'''
def cross_entropy_forward(logits, labels):
    # ---- your code ----
    z = logits - logits.max(axis=1, keepdims=True)  # subtract the row's maximum: exp(z) <= 1
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))  # (B, C)
    B = len(labels)
    return -logp[np.arange(B), labels].mean(), (np.exp(logp), labels)
    # ---- end of your code ----


def cross_entropy_backward(dloss, cache):
    # ---- your code ----
    p, labels = cache
    B = len(labels)
    onehot = np.zeros_like(p)
    onehot[np.arange(B), labels] = 1.0
    return (dloss * (p - onehot) / B,)
    # ---- end of your code ----
'''),
code(r'''
exercise.check_cross_entropy(cross_entropy_forward, cross_entropy_backward)
'''),
md(r'''
## 2. The head on [CLS], with its loss

$$z = h W_1^\top + b_1, \quad t = \tanh z, \quad \ell = t W_4^\top + b_4, \quad
L = -\frac1B \sum_b \log \operatorname{softmax}(\ell_b)_{y_b}$$

`h_cls` is `(B, H)`, `labels` `(B,)` integers (no dropout: evaluation). The loss is where the
chain starts, so `head_backward(cache)` takes no upstream gradient ($\bar L = 1$) and returns
`(dh_cls, dw1, db1, dw4, db4)`. $\bar\ell = (\operatorname{softmax}(\ell) - \operatorname{onehot}(y))/B$.
'''),
stub(r'''
def head_forward(h_cls, w1, b1, w4, b4, labels):
    # ---- your code ----
    t = np.tanh(h_cls @ w1.T + b1)  # (B, H)
    logits = t @ w4.T + b4  # (B, C)
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    B = len(labels)
    loss = -np.log(p[np.arange(B), labels]).mean()
    return loss, (h_cls, w1, t, w4, p, labels)
    # ---- end of your code ----


def head_backward(cache):
    # ---- your code ----
    h_cls, w1, t, w4, p, labels = cache
    B = len(labels)
    dlogits = p.copy()
    dlogits[np.arange(B), labels] -= 1.0
    dlogits /= B  # the loss is a mean over the batch
    dw4, db4 = dlogits.T @ t, dlogits.sum(axis=0)
    dz = (dlogits @ w4) * (1.0 - t * t)  # tanh' = 1 - t^2
    dw1, db1 = dz.T @ h_cls, dz.sum(axis=0)
    return dz @ w1, dw1, db1, dw4, db4
    # ---- end of your code ----
'''),
code(r'''
exercise.check_head(head_forward, head_backward)
'''),
md(r'''
## 3. Dropout

Training-mode inverted dropout: keep each element with probability $1-p$ and scale the kept ones
by $1/(1-p)$, so that the expected output equals the input and evaluation needs no rescaling. Draw
the mask with `rng.random(x.shape)`. The backward goes through the same mask. (A random mask has no
reference to compare with: the check tests its properties on 20,000 elements.)
'''),
stub(r'''
def dropout_forward(x, p, rng):
    # ---- your code ----
    scale = (rng.random(x.shape) >= p) / (1.0 - p)  # 0 where dropped, 1/(1-p) where kept
    return x * scale, scale
    # ---- end of your code ----


def dropout_backward(dy, cache):
    # ---- your code ----
    return (dy * cache,)
    # ---- end of your code ----
'''),
code(r'''
exercise.check_dropout(dropout_forward, dropout_backward)
'''),
md(r'''
## 4. One AdamW step

For a parameter `p` with gradient `g` at step `t = 1, 2, ...` (lesson 6, and `minadapt/optim.py`'s
docstring): decay `p` by the factor $1 - \text{lr}\cdot\text{wd}$ (decoupled: not through the
gradient), update the moments $m \leftarrow \beta_1 m + (1-\beta_1) g$ and
$v \leftarrow \beta_2 v + (1-\beta_2) g^2$, correct their bias
$\hat m = m/(1-\beta_1^t)$, $\hat v = v/(1-\beta_2^t)$, and step
$p \leftarrow p - \text{lr}\,\hat m/(\sqrt{\hat v} + \epsilon)$. Return the new `(p, m, v)`.
The check runs five steps and compares them with `minadapt.optim.AdamW` (one row of its
gradients is of order 1e-6, where the place of $\epsilon$ matters).
'''),
stub(r'''
def adamw_step(p, g, m, v, t, lr, betas, eps, weight_decay):
    # ---- your code ----
    b1, b2 = betas
    p = p * (1.0 - lr * weight_decay)  # decoupled decay
    m = b1 * m + (1.0 - b1) * g
    v = b2 * v + (1.0 - b2) * g * g
    m_hat, v_hat = m / (1.0 - b1**t), v / (1.0 - b2**t)
    return p - lr * m_hat / (np.sqrt(v_hat) + eps), m, v
    # ---- end of your code ----
'''),
code(r'''
exercise.check_adamw(adamw_step)
'''),
md(r'''
## 5. The learning-rate schedule

BERT's recipe: the learning rate climbs linearly from 0 to `base_lr` over the first `warmup_steps`
updates (Adam's moment estimates are noisy at first, so the first steps are kept small), then falls
linearly to 0 at `total_steps`, and stays 0 after. `step` counts updates from 0.
'''),
stub(r'''
def lr_schedule(step, total_steps, warmup_steps, base_lr):
    # ---- your code ----
    if step < warmup_steps:
        return base_lr * step / warmup_steps
    return base_lr * max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
    # ---- end of your code ----
'''),
code(r'''
exercise.check_lr_schedule(lr_schedule)
'''),
md(r'''
## Check your understanding

1. Why does the cross-entropy's gradient reach every logit of a row, not only the label's?
2. With $p = 0.1$, what is a kept element of `dropout(x)`? What is `dropout(x)` on average?
3. Multiply every gradient by 100: how does AdamW's step change? Which term breaks this, and when?
4. With warm-up the learning rate at `step = 0` is 0: is the first update wasted?

<details><summary>Answers</summary>

1. $\partial L/\partial\ell_c = (p_c - [c = y])/B$: every logit enters the normaliser
   $\sum_j e^{\ell_j}$, so raising any of them takes probability from the label's class.
2. $x/0.9$; on average $0.9\cdot x/0.9 + 0.1\cdot 0 = x$, which is why evaluation needs no scaling.
3. Hardly at all: $\hat m$ and $\sqrt{\hat v}$ both scale by 100. $\epsilon$ breaks it once
   $\sqrt{\hat v}$ comes near it (gradients of order 1e-8 and below): then the steps shrink.
4. The parameters do not move, but $m$ and $v$ take in the first gradient, so the second update
   already has a moment estimate.
</details>
'''),
]
