"""Lesson 2: the backward of linear, GELU and LayerNorm derived and checked; the small elementwise ops."""
from .cells import SETUP, code, md

CELLS = [
md(r'''
# Lesson 2 — Linear, GELU, LayerNorm: deriving each backward

A BERT layer is mostly three kinds of function: matrix products (`minadapt/nn/linear.py`), an
elementwise non-linearity (`gelu.py`), and a per-token normalisation (`layernorm.py`). For each we

1. write the forward,
2. derive the backward on paper (in index notation, then back to matrices),
3. call the library's pair and check it with `minadapt.gradcheck` in float64.

A short tour of the other small ops under `minadapt/nn/` (ReLU, swish, tanh, dropout,
cross-entropy) closes the lesson. Notation as in lesson 1: $\bar y = \partial L/\partial y$ is the
gradient arriving from above (`dy` in the code).
'''),
SETUP,
code(r'''
from minadapt import gradcheck
from minadapt.nn import dropout, gelu, layernorm, linear, loss, mse, relu, swish, tanh

rng = np.random.default_rng(0)


def check_pair(forward, backward, x, dy):
    """rel_error of an op's dx against centred differences; forward: x -> (out, cache)."""
    _, cache = forward(x)
    dx = backward(dy, cache)[0]
    return gradcheck.check(lambda z: forward(z)[0], x, dy, dx)
'''),
md(r'''
## 1. Linear: $y = xW^\top + b$

With rows $n$, input features $i$ and output features $j$:

$$y_{nj} = \sum_i x_{ni} W_{ji} + b_j .$$

Each $y_{nj}$ depends on $x_{ni}$ through the single term $x_{ni}W_{ji}$, so
$\partial y_{nj}/\partial x_{ni} = W_{ji}$, and the chain rule sums over everything $x_{ni}$ feeds:

$$\bar x_{ni} = \sum_j \bar y_{nj}\,W_{ji} \;\Rightarrow\; \bar x = \bar y\,W \qquad
\bar W_{ji} = \sum_n \bar y_{nj}\,x_{ni} \;\Rightarrow\; \bar W = \bar y^\top x \qquad
\bar b_j = \sum_n \bar y_{nj}.$$

A quick way to remember them: each gradient has the shape of its variable, and there is only
one way to multiply $\bar y$ `(N, O)` with $W$ `(O, D)` or $x$ `(N, D)` to get `(N, D)` or `(O, D)`.
The bias is broadcast over rows in the forward, so its gradient *sums* over rows.

The library's `linear.forward` accepts any leading shape `(..., D)` and folds it into rows
(lesson 1), so the same pair serves `(B, T, H)` activations and `(B, H)` [CLS] vectors:
'''),
code(r'''
x = rng.standard_normal((2, 3, 4))  # (B, T, D)
w = rng.standard_normal((5, 4))  # (O, D), torch layout
b = rng.standard_normal(5)
y, cache = linear.forward(x, w, b)
dy = rng.standard_normal(y.shape)
dx, dw, db = linear.backward(dy, cache)
print("y", y.shape, "| dx", dx.shape, "dw", dw.shape, "db", db.shape)
print("rel_error dx:", f"{gradcheck.check(lambda z: linear.forward(z, w, b)[0], x, dy, dx):.1e}")
print("rel_error dw:", f"{gradcheck.check(lambda z: linear.forward(x, z, b)[0], w, dy, dw):.1e}")
print("rel_error db:", f"{gradcheck.check(lambda z: linear.forward(x, w, z)[0], b, dy, db):.1e}")
'''),
md(r'''
**Cost, and what freezing saves.** The forward is one product of $2NDO$ floating-point operations.
The backward is two more of the same size: $\bar x$ and $\bar W$. For a frozen weight
(`frozen=True` in the forward) the backward skips $\bar W$, a third of the layer's total work,
and the forward does not keep $x$. For the lowest layer of all, nobody needs $\bar x$ either:
`backward(..., need_dx=False)` skips it. Lesson 7 measures what this buys.
'''),
code(r'''
_, frozen_cache = linear.forward(x, w, b, frozen=True)
print("frozen:          ", [None if t is None else t.shape for t in linear.backward(dy, frozen_cache)])
print("need_dx=False:   ", [None if t is None else t.shape for t in linear.backward(dy, cache, need_dx=False)])
'''),
md(r'''
## 2. GELU, the exact (erf) form

BERT's feed-forward block uses the Gaussian Error Linear Unit: the input times the probability
that a standard normal variable is smaller than it,

$$\mathrm{GELU}(x) = x\,\Phi(x), \qquad \Phi(x) = \tfrac12\left(1 + \operatorname{erf}(x/\sqrt 2)\right),
\qquad \varphi(x) = \Phi'(x) = \tfrac{1}{\sqrt{2\pi}}\,e^{-x^2/2}.$$

The product rule gives the backward in one line:

$$\frac{d}{dx}\,x\,\Phi(x) = \Phi(x) + x\,\varphi(x) \qquad\Rightarrow\qquad \bar x = \bar y\,\big(\Phi(x) + x\,\varphi(x)\big).$$

The forward already computes $\Phi(x)$, the expensive part, so the cache keeps it (`GeluCache(x, cdf)`);
$\varphi(x)$ is one `exp` and is recomputed. Write the backward as one expression,
$\bar y\,(\Phi + x\varphi)$, which makes a *fresh* array: never edit the upstream gradient `dy` in
place (that would silently corrupt a gradient that another branch still needs).

**Your turn, before reading the answer.** Exercise 1 (`exercises/01_linear_gelu_layernorm.ipynb`)
asks for linear, this GELU and LayerNorm (section 3 below derives it): write them now, and let its
checks tell you which mistake yours looks like, if any. Then compare with the library's
[nn/gelu.py](../minadapt/nn/gelu.py), the answer, which the rest of this lesson calls.
'''),
code(r'''
xg = rng.standard_normal((4, 6)) * 2
dyg = rng.standard_normal(xg.shape)
dyg_before = dyg.copy()
print(f"GELU rel_error: {check_pair(gelu.forward, gelu.backward, xg, dyg):.1e}")
print("upstream gradient left untouched:", np.array_equal(dyg, dyg_before))
'''),
md(r'''
**erf, and why not the tanh approximation.** Many codebases use
$\tfrac12 x\left(1+\tanh\!\big(\sqrt{2/\pi}\,(x+0.044715\,x^3)\big)\right)$, which avoids erf.
It is *not* the function the checkpoint was trained with (`hidden_act: "gelu"` means the erf form).
The figure compares the two, and their derivatives. The library has the approximation too, as
`nn/gelu_tanh.py`: one of the non-linearities an *adapter* may use (`non_linearity="gelu_tanh"`),
never the encoder's own GELU.
'''),
code(r'''
def gelu_tanh(x):
    """The tanh approximation (NOT what BERT uses): value and derivative."""
    c = np.sqrt(2 / np.pi)
    u = c * (x + 0.044715 * x**3)
    t = np.tanh(u)
    value = 0.5 * x * (1 + t)
    slope = 0.5 * (1 + t) + 0.5 * x * (1 - t**2) * c * (1 + 3 * 0.044715 * x**2)
    return value, slope


xs = np.linspace(-4, 4, 801)
exact, gcache = gelu.forward(xs)
(exact_slope,) = gelu.backward(np.ones_like(xs), gcache)  # dy = 1 gives the derivative itself
approx, approx_slope = gelu_tanh(xs)

fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
ax = axes[0]
ax.plot(xs, np.maximum(xs, 0), color="lightgrey", lw=3, label="ReLU")
ax.plot(xs, exact, label=r"GELU $x\Phi(x)$ (erf)")
ax.plot(xs, approx, "--", label="tanh approximation")
ax.set_title("GELU")
ax.legend()
ax = axes[1]
ax.plot(xs, (xs > 0).astype(float), color="lightgrey", lw=3, label="ReLU'")
ax.plot(xs, exact_slope, label=r"$\Phi(x) + x\varphi(x)$ (gelu.backward)")
ax.plot(xs, approx_slope, "--", label="derivative of the tanh form")
ax.axhline(0, color="k", lw=0.5)
ax.axhline(1, color="k", lw=0.5)
ax.set_title("derivative")
ax.legend(fontsize=8)
ax = axes[2]
ax.plot(xs, exact - approx, label="GELU: erf − tanh")
ax.plot(xs, exact_slope - approx_slope, label="derivative: erf − tanh")
ax.axhline(0, color="k", lw=0.5)
ax.set_title("difference (exact − approximation)")
ax.legend(fontsize=8)
for ax in axes:
    ax.set_xlabel("x")
    ax.grid(alpha=0.3)
plt.tight_layout()
plt.show()

i = np.abs(exact - approx).argmax()
print(f"max |GELU_erf - GELU_tanh| = {np.abs(exact - approx).max():.1e} at x = {xs[i]:+.2f}; "
      f"derivatives differ by up to {np.abs(exact_slope - approx_slope).max():.1e}")
print(f"GELU' ranges from {exact_slope.min():.3f} (at x = {xs[exact_slope.argmin()]:+.2f}) "
      f"to {exact_slope.max():.3f} (at x = {xs[exact_slope.argmax()]:+.2f})")
'''),
md(r'''
What to look at:

* Left: GELU is a smooth ReLU that lets a little negative signal through: it dips below zero for
  negative $x$ before returning to 0.
* Middle: unlike ReLU's step, GELU's slope is smooth, goes slightly *negative* for $x \lesssim -0.75$
  and overshoots 1 for $x \gtrsim 0.75$: a gradient flowing back through a GELU can be amplified or
  flip sign.
* Right: the two forms differ by a few $10^{-4}$. That is far above float32's precision, and it
  compounds through six layers of 1536 GELUs per token: a model using the approximation does not
  reproduce the checkpoint's numbers (lesson 4 matches them to $10^{-14}$ in float64).


The exact form needs erf, which NumPy lacks: `backend.erf`, which the reference GELU calls, runs
`math.erf` element by element (exact, and slow). How the fast ops compute it instead (a rational
approximation, in cache-sized blocks) is the optional appendix A, `appendix_a_fast_ops.ipynb`.
'''),
md(r'''
## 3. LayerNorm

LayerNorm normalises each token vector (one row of length $H$) to zero mean and unit variance,
then applies a learned per-feature scale $\gamma$ and shift $\beta$. For one row:

$$\mu = \frac1H\sum_j x_j, \quad \sigma^2 = \frac1H\sum_j (x_j-\mu)^2, \quad r = \frac{1}{\sqrt{\sigma^2+\epsilon}}, \quad
\hat x_i = (x_i-\mu)\,r, \quad y_i = \gamma_i\,\hat x_i + \beta_i .$$

**Backward.** The last step is elementwise: $\bar\gamma = \sum_{\text{rows}} \bar y \odot \hat x$,
$\bar\beta = \sum_{\text{rows}} \bar y$, and the gradient reaching $\hat x$ is $g = \bar y \odot \gamma$.
The hard part is $\hat x$, because *every* $x_j$ moves *every* $\hat x_i$ through $\mu$ and $r$:

$$\frac{\partial \mu}{\partial x_j} = \frac1H, \qquad
\frac{\partial \sigma^2}{\partial x_j} = \frac2H (x_j-\mu), \qquad
\frac{\partial r}{\partial x_j} = -\tfrac12 (\sigma^2+\epsilon)^{-3/2}\,\frac2H(x_j-\mu) = -\frac{r^2\,\hat x_j}{H},$$

$$\frac{\partial \hat x_i}{\partial x_j} = r\Big(\delta_{ij} - \frac1H\Big) + (x_i - \mu)\,\frac{\partial r}{\partial x_j}
= r\Big(\delta_{ij} - \frac1H - \frac{\hat x_i\,\hat x_j}{H}\Big).$$

Contracting with $g$ gives the line in `layernorm.backward`:

$$\bar x_j = \sum_i g_i\,\frac{\partial \hat x_i}{\partial x_j}
= r\Big(g_j \;-\; \underbrace{\operatorname{mean}(g)}_{\text{from }\mu} \;-\; \hat x_j\,\underbrace{\operatorname{mean}(g\odot\hat x)}_{\text{from }\sigma^2}\Big).$$

**What the two mean terms do.** LayerNorm cannot see two directions of change in its input:

* *shifting* a row, $x \to x + c\,\mathbf 1$, changes $\mu$ by $c$ and leaves $\hat x$ alone;
* *stretching* a row about its mean, $x - \mu \to (1+t)(x-\mu)$, leaves $\hat x$ alone (up to $\epsilon$).

A change the output cannot see must get zero gradient, so $\bar x$ must have no component along
$\mathbf 1$ and none along $\hat x$. That is exactly what the two terms remove: subtracting
$\operatorname{mean}(g)$ projects out the $\mathbf 1$ direction, subtracting
$\hat x\operatorname{mean}(g\odot\hat x)$ projects out the $\hat x$ direction (the two directions are
orthogonal, since $\sum_j \hat x_j = 0$, and $\|\hat x\|^2 \approx H$). So
$\bar x = r\,P\,g$ with $P = I - \tfrac1H \mathbf 1\mathbf 1^\top - \tfrac1H \hat x\hat x^\top$.
'''),
code(r'''
H = 16
xl = rng.standard_normal((3, H)) * 2 + 1
gamma = 1 + 0.3 * rng.standard_normal(H)
beta = 0.1 * rng.standard_normal(H)
dyl = rng.standard_normal(xl.shape)

y_ln, ln_cache = layernorm.forward(xl, gamma, beta, trainable=True)
dx_ln, dgamma, dbeta = layernorm.backward(dyl, ln_cache)
print("cache fields:", ln_cache._fields)
print(f"rel_error dx     {gradcheck.check(lambda z: layernorm.forward(z, gamma, beta)[0], xl, dyl, dx_ln):.1e}")
print(f"rel_error dgamma {gradcheck.check(lambda z: layernorm.forward(xl, z, beta)[0], gamma, dyl, dgamma):.1e}")
print(f"rel_error dbeta  {gradcheck.check(lambda z: layernorm.forward(xl, gamma, z)[0], beta, dyl, dbeta):.1e}")
print("frozen (trainable=False) returns:", [None if t is None else t.shape
                                            for t in layernorm.backward(dyl, layernorm.forward(xl, gamma, beta)[1])])
'''),
md(r'''
Now the claim, numerically: the correct $\bar x$ sums to zero along each row and is orthogonal to
$\hat x$. Two deliberately broken backwards, each missing one of the mean terms, show what each
term is for: drop one and both the gradient check and the matching zero-sum fail.
'''),
code(r'''
def layernorm_backward_no_mean_g(dy, cache):
    """BROKEN on purpose: forgets the mean(g) term (the dependence on mu)."""
    g = dy * cache.gamma
    return (g - cache.xhat * (g * cache.xhat).mean(axis=-1, keepdims=True)) * cache.rstd,


def layernorm_backward_no_var_term(dy, cache):
    """BROKEN on purpose: forgets the xhat * mean(g * xhat) term (the dependence on sigma^2)."""
    g = dy * cache.gamma
    return (g - g.mean(axis=-1, keepdims=True)) * cache.rstd,


numeric = gradcheck.numerical_grad(lambda z: layernorm.forward(z, gamma, beta)[0], xl, dyl)
xhat = ln_cache.xhat
print(f"{'backward':32s} {'rel_error':>9s}  {'max|sum_j dx_j|':>16s}  {'max|sum_j dx_j xhat_j|':>22s}")
for bwd in (layernorm.backward, layernorm_backward_no_mean_g, layernorm_backward_no_var_term):
    d = bwd(dyl, ln_cache)[0]
    label = "layernorm.backward (library)" if bwd is layernorm.backward else bwd.__name__
    print(f"{label:32s} {gradcheck.rel_error(d, numeric):9.1e}  {np.abs(d.sum(-1)).max():16.1e}  "
          f"{np.abs((d * xhat).sum(-1)).max():22.1e}")
'''),
md(r'''
The picture: on the left, three different rows that LayerNorm maps to the *same* $\hat x$ (a row, the
row shifted by 3, the row stretched 2× about its mean). On the right, for one row, the gradient
$g$ arriving at $\hat x$, the two components the backward removes, and what is left ($\bar x / r$):
a vector with no $\mathbf 1$ component and no $\hat x$ component.
'''),
code(r'''
row = xl[0]
variants = {"x": row, "x + 3": row + 3, "mean + 2 (x − mean)": row.mean() + 2 * (row - row.mean())}
g = dyl[0] * gamma
xh = xhat[0]
along_one = np.full(H, g.mean())
along_xhat = xh * (g * xh).mean()
left = dx_ln[0] / ln_cache.rstd[0]

fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
for (name, v), style in zip(variants.items(), ("o-", "s-", "^-")):
    axes[0].plot(v, style, ms=4, label=name)
    axes[1].plot(layernorm.forward(v, np.ones(H), np.zeros(H))[0], style, ms=4, label=name)
axes[0].set_title("three different inputs x")
axes[1].set_title(r"... give the same $\hat{x}$ (the markers coincide)")
axes[0].legend(fontsize=8)
j = np.arange(H)
axes[2].bar(j - 0.3, g, 0.2, color="grey", label=r"$g = \bar{y}\odot\gamma$")
axes[2].bar(j - 0.1, along_one, 0.2, color="C0", label=r"removed: mean$(g)\,\mathbf{1}$")
axes[2].bar(j + 0.1, along_xhat, 0.2, color="C1", label=r"removed: $\hat{x}\,$mean$(g\odot\hat{x})$")
axes[2].bar(j + 0.3, left, 0.2, color="C2", label=r"$\bar{x}\,/\,r$ (what is left)")
axes[2].axhline(0, color="k", lw=0.5)
axes[2].set_title(f"backward of one row: sum(dx) = {dx_ln[0].sum():.0e}, dx·x̂ = {dx_ln[0] @ xh:.0e}")
axes[2].legend(fontsize=7, ncol=2)
for ax in axes:
    ax.set_xlabel("feature j")
    ax.grid(alpha=0.3)
plt.tight_layout()
plt.show()
'''),
md(r'''
Implementation details worth noticing in `layernorm.py`:

* The cache holds $\hat x$, $r$ (one number per row) and $\gamma$: everything the backward formula
  uses. It does not keep $x$, $\mu$ or $\sigma^2$.
* Each formula is one NumPy expression over the whole `(..., H)` array. The fast version,
  [fast/layernorm.py](../minadapt/fast/layernorm.py), runs the same formulas in row blocks that fit in the CPU cache
  (`numerics.blockwise`), because each makes several passes over a row that would otherwise each
  stream the whole array through memory.
* $\epsilon = 10^{-12}$ (from `config.json`'s `layer_norm_eps`) only guards against a constant row;
  it is why $\bar x\cdot\hat x$ is "almost" rather than exactly zero.
* `trainable=False` (the default, and the adapter setting) returns `dgamma = dbeta = None`;
  Houlsby et al. also train the LayerNorms, which `add_adapter(..., train_layer_norms=True)` turns on.

## 4. The other small ops in `minadapt/nn/`

| file | forward | derivative used by backward | cache keeps |
|---|---|---|---|
| `relu.py` | $y = \max(x, 0)$ | $\mathbb 1[x > 0]$ | the boolean mask |
| `swish.py` (adapter default) | $y = x\,s$, $s = \sigma(x)$ | $s + x\,s\,(1-s)$ | $x$, $s$ |
| `tanh.py` (classification head) | $y = \tanh x$ | $1 - y^2$ | the *output* $y$ |
| `dropout.py` | $y = x \odot M/(1-p)$, $M_i \sim \text{Bernoulli}(1-p)$ | the same $M/(1-p)$ | the scaled mask |
| `loss.py` | $L = -\frac1B\sum_b \log \operatorname{softmax}(z_b)_{y_b}$ | $(\operatorname{softmax}(z) - \text{onehot}(y))/B$ | $p$, labels |
| `mse.py` (regression head) | $L = \frac1n\sum_i (\hat y_i - t_i)^2$ | $\frac2n(\hat y - t)$ | the difference $\hat y - t$ |

Notes:

* tanh's derivative is cheapest from its output, so its cache keeps $y$ rather than $x$.
* Dropout is *inverted*: kept values are scaled by $1/(1-p)$ during training so that $E[y] = x$
  and evaluation is the plain identity (`train=False` returns `x` itself and a `None` cache).
  It is linear in $x$, so the backward multiplies by the same mask. The reference draws the mask
  as `rng.random(shape) >= p`; for a gradient check the mask must not change between calls, so the
  check below gives every call a generator with the same seed. (The fast version,
  [fast/dropout.py](../minadapt/fast/dropout.py), draws 16 random bits per element instead, `numerics.keep_mask`, read
  straight from the generator's raw 64-bit output: about three times as fast as float uniforms, with
  $p$ rounded to a multiple of $2^{-16}$ and the scale computed from that rounded $p$.)
* Cross-entropy: with $\log p_{bc} = z_{bc} - \log\sum_k e^{z_{bk}}$, $\;\partial L/\partial z_{bc}
  = \frac1B(p_{bc} - \mathbb 1[c = y_b])$. The forward subtracts each row's maximum first
  (`log-sum-exp` cannot overflow that way) and works in log space.
'''),
code(r'''
xs_ = rng.standard_normal((3, 5))
dys_ = rng.standard_normal(xs_.shape)
x_relu = np.where(np.abs(xs_) < 1e-3, 0.5, xs_)  # keep clear of ReLU's kink at 0
logits = rng.standard_normal((4, 3))
labels = np.array([0, 2, 1, 2])

checks = {
    "relu": check_pair(relu.forward, relu.backward, x_relu, dys_),
    "swish": check_pair(swish.forward, swish.backward, xs_, dys_),
    "tanh": check_pair(tanh.forward, tanh.backward, xs_, dys_),
    "dropout (fixed mask)": check_pair(lambda z: dropout.forward(z, 0.3, np.random.default_rng(1)),
                                       dropout.backward, xs_, dys_),
    "cross-entropy": check_pair(lambda z: loss.forward(z, labels), loss.backward, logits, np.array(1.0)),
    "mean squared error": check_pair(lambda z: mse.forward(z, labels.astype(float)), mse.backward,
                                     logits[:, :1], np.array(1.0)),
}
for name, err in checks.items():
    print(f"{name:22s} rel_error {err:.1e}")

big = np.ones((1000, 1000))
kept, _ = dropout.forward(big, 0.1, np.random.default_rng(0), train=True)
print(f"dropout p=0.1: {np.mean(kept == 0):.3f} of entries dropped, mean of output {kept.mean():.4f} (input mean 1)")
print("dropout at evaluation is the identity:", dropout.forward(big, 0.1, train=False)[0] is big)
'''),
md(r'''
Of the files in `minadapt/nn/`, you have now seen `linear`, `gelu`, `layernorm`, `relu`, `swish`,
`tanh`, `dropout`, `loss` and `mse`, and met `gelu_tanh` (the approximation above). The others:
`attention` (lesson 3), `embedding` (lesson 4), `adapter` (lesson 5), `adamw` (the plain optimiser
update, lesson 6 and exercise 4) and `lora` (lesson 10).
'''),
md(r'''
## Check your understanding

1. Why is $\bar b$ the sum of $\bar y$ over the rows?
2. Why does LayerNorm's $\bar x$ sum to zero along each row?
3. GELU's cache keeps $\Phi(x)$ but recomputes $\varphi(x)$. Why that way round?

<details><summary>Answers</summary>

1. The same $b$ is added to every row, so every row's output depends on it; the chain rule adds the contributions of all its uses.
2. Adding a constant to a whole row does not change the output (the mean is subtracted), so the gradient has no component along the all-ones direction.
3. $\Phi$ needs erf, the expensive part, already computed in the forward; $\varphi$ is one `exp`.
</details>
'''),
]
