"""Exercise 1: write the forward and backward of linear, GELU and LayerNorm (lesson 2 derives them)."""
from .cells import SETUP, code, md, stub

CELLS = [
md(r'''
# Exercise 1 — Linear, GELU, LayerNorm

Write each forward and backward yourself, in the cells marked `# ---- your code ----` (replace the
`raise NotImplementedError` line). The cell after each one checks your pair: it runs it on small
random float64 arrays, compares the forward with the library's reference op (`minadapt.nn`) and
every gradient with the reference backward and with finite differences, and prints `pass`, or stops
with what the mistake looks like (a sign, a transpose, a missing sum over the batch, a scale, or a
known mistake of that op) and the error.

The conventions are the library's: `forward(...) -> (out, cache)`, `backward(dout, cache) ->
(dinput, dparams...)`; the cache is whatever your backward needs. Keep the signatures as given:
the check calls your functions with those argument names. Lesson 2 derives all three.
Try it on paper first; `minadapt/nn/linear.py`, `gelu.py` and `layernorm.py` are the answers.
'''),
SETUP,
code(r'''
from minadapt import exercise
from minadapt.fast.numerics import erf  # NumPy has no erf: this one takes and returns arrays (exact in float64, float32-accurate in float32)
'''),
md(r'''
## 1. Linear: $y = xW^\top + b$

`x` is `(N, D)`, `w` is `(O, D)` (the checkpoint's layout), `b` is `(O,)`. Return `dx`, `dw`, `db`,
each shaped like its variable. The bias is added to every row: what does that make its gradient?
'''),
stub(r'''
def linear_forward(x, w, b):
    # ---- your code ----
    y = x @ w.T + b  # (N, O)
    return y, (x, w)
    # ---- end of your code ----


def linear_backward(dy, cache):
    # ---- your code ----
    x, w = cache
    dx = dy @ w  # (N, D)
    dw = dy.T @ x  # (O, D)
    db = dy.sum(axis=0)  # (O,): b reached every row
    return dx, dw, db
    # ---- end of your code ----
'''),
code(r'''
exercise.check_linear(linear_forward, linear_backward)
'''),
md(r'''
## 2. GELU, the exact form: $y = x\,\Phi(x)$

$\Phi(x) = \tfrac12\,(1 + \operatorname{erf}(x/\sqrt2))$ is the standard normal CDF and
$\varphi(x) = e^{-x^2/2}/\sqrt{2\pi}$ its density. Elementwise: `backward` returns `(dx,)`.
'''),
stub(r'''
def gelu_forward(x):
    # ---- your code ----
    cdf = 0.5 * (1.0 + erf(x / np.sqrt(2.0)))  # Phi(x)
    return x * cdf, (x, cdf)
    # ---- end of your code ----


def gelu_backward(dy, cache):
    # ---- your code ----
    x, cdf = cache
    pdf = np.exp(-0.5 * x * x) / np.sqrt(2.0 * np.pi)  # phi(x)
    return (dy * (cdf + x * pdf),)  # product rule: d(x Phi)/dx = Phi + x phi
    # ---- end of your code ----
'''),
code(r'''
exercise.check_gelu(gelu_forward, gelu_backward)
'''),
md(r'''
## 3. LayerNorm over the last axis

$\mu$ and $\sigma^2$ are the mean and (biased) variance of each row, $\hat x = (x-\mu)/\sqrt{\sigma^2+\epsilon}$,
$y = \gamma \hat x + \beta$. Every $x_j$ of a row moves $\mu$ and $\sigma^2$, hence every $y_i$ of
that row: that is where the two extra terms of $\bar x$ come from. Return `dx`, `dgamma`, `dbeta`.
'''),
stub(r'''
def layernorm_forward(x, gamma, beta, eps=1e-5):
    # ---- your code ----
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    rstd = 1.0 / np.sqrt(var + eps)
    xhat = (x - mu) * rstd
    return gamma * xhat + beta, (xhat, rstd, gamma)
    # ---- end of your code ----


def layernorm_backward(dy, cache):
    # ---- your code ----
    xhat, rstd, gamma = cache
    g = dy * gamma  # the gradient reaching xhat
    dx = rstd * (g - g.mean(axis=-1, keepdims=True) - xhat * (g * xhat).mean(axis=-1, keepdims=True))
    return dx, (dy * xhat).sum(axis=0), dy.sum(axis=0)
    # ---- end of your code ----
'''),
code(r'''
exercise.check_layernorm(layernorm_forward, layernorm_backward)
'''),
md(r'''
## Check your understanding

1. Your linear check passes with `x` of shape `(N, D)`. What changes, if anything, for `(B, T, D)`?
2. The check feeds LayerNorm one row of variance about $10^{-6}$. Which mistake does that row expose, and why only there?
3. Why must a backward never write into `dy`?

<details><summary>Answers</summary>

1. Nothing in the maths: flatten to `(B*T, D)` rows, as the library's `linear` does, and $\bar W$ and $\bar b$ sum over all $B\cdot T$ rows.
2. Putting $\epsilon$ outside the square root (or leaving it out): with $\sigma^2 \gg \epsilon$ the three forms agree to many digits; near $\sigma^2 \approx \epsilon$ they differ.
3. The caller may still need it: at a residual sum the same upstream gradient feeds two branches, and an in-place edit in one corrupts the other.
</details>
'''),
]
