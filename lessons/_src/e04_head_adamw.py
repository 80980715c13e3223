"""Exercise 4: write the classification head with its loss, and one AdamW step (lesson 6)."""
from .cells import SETUP, code, md, stub

CELLS = [
md(r'''
# Exercise 4 — The classification head and AdamW

As before: write the marked cells; the cell after each checks them against the reference
(`minadapt/heads.py` with `minadapt/nn/loss.py`, `minadapt/optim.py`) and prints `pass` or the
mistake it looks like. Lesson 6 uses both in the training loop.
'''),
SETUP,
code(r'''
from minadapt import exercise
'''),
md(r'''
## 1. The head on [CLS], with its loss

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
## 2. One AdamW step

For a parameter `p` with gradient `g` at step `t = 1, 2, ...` (lesson 6, and `minadapt/optim.py`'s
docstring): decay `p` by the factor $1 - \text{lr}\cdot\text{wd}$ (decoupled: not through the
gradient), update the moments $m \leftarrow \beta_1 m + (1-\beta_1) g$ and
$v \leftarrow \beta_2 v + (1-\beta_2) g^2$, correct their bias
$\hat m = m/(1-\beta_1^t)$, $\hat v = v/(1-\beta_2^t)$, and step
$p \leftarrow p - \text{lr}\,\hat m/(\sqrt{\hat v} + \epsilon)$. Return the new `(p, m, v)`.
The check runs five steps and compares them with `minadapt.optim.AdamW`.
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
]
