"""Lesson 1: arrays and backends, the forward/backward/cache pattern, gradient checking, precision."""
from .cells import SETUP, WEIGHTS, code, md

CELLS = [
md(r'''
# Lesson 1 — Arrays, backends, and checking a gradient

`minadapt` is a BERT encoder with bottleneck adapters in which every forward and every backward
pass is written by hand, in NumPy. Before any transformer appears, this lesson sets up the three
habits that every file of the library relies on:

1. **Layer maths is written against an array module `xp`** taken from the input array, so that the
   same line runs with NumPy on the CPU or with CuPy on a GPU (`minadapt/backend.py`).
2. **Every layer is a pair** `forward(...) -> (out, cache)` and `backward(dout, cache) -> (dx, *dparams)`,
   side by side in one file under `minadapt/nn/`. The cache holds what the backward needs, nothing more.
3. **Every backward is checked against finite differences** in float64 (`minadapt/gradcheck.py`).
   A hand-written gradient that has not been checked is a guess.

At the end we look at float32 versus float64, and at a picture that explains why gradient
checks run in float64 while training runs in float32.
'''),
SETUP,
md(r'''
## 1. One array module, two devices

A NumPy array lives in the computer's main memory and NumPy's functions run on the CPU.
[CuPy](https://cupy.dev) is a NumPy look-alike for NVIDIA GPUs: a `cupy.ndarray` lives in GPU
memory, `cupy.exp(x)` launches a CUDA kernel, `a @ b` calls cuBLAS. The *names* are the same,
so a line such as `xp.exp(x)` runs on either device, provided `xp` is the module that `x` belongs
to. `minadapt.backend` provides the few helpers this needs:

| function | what it does |
|---|---|
| `get_xp(x)` | the array module of `x`: `numpy`, or `cupy` for a CuPy array |
| `resolve_device(d)` | `"cpu"` or `"gpu"` from an argument, else `$MINADAPT_DEVICE`, else `"cpu"` |
| `xp_for(device)` | the module for a device (importing CuPy only when asked for the GPU) |
| `gpu_available()` | `True` when CuPy imports *and* sees a CUDA device |
| `to_device`, `to_numpy` | the only places where data crosses between host and GPU |
| `erf` | the one function NumPy lacks and CuPy has (see below) |
'''),
code(r'''
import inspect

import minadapt.nn
from minadapt import backend

x = np.arange(6, dtype=np.float32).reshape(2, 3)
print("get_xp(a NumPy array) is numpy:", backend.get_xp(x) is np)
print("resolve_device()       ->", backend.resolve_device(), "  (no argument: $MINADAPT_DEVICE or 'cpu')")
print("resolve_device('cuda') ->", backend.resolve_device("cuda"))
print("xp_for('cpu') is numpy:", backend.xp_for("cpu") is np)
print("gpu_available()        ->", backend.gpu_available())
try:
    backend.resolve_device("tpu")
except ValueError as e:
    print("resolve_device('tpu')  -> ValueError:", e)
'''),
md(r'''
Here is what an op looks like from the inside. Read `swish.forward` (the adapter's default
non-linearity, $y = x\,\sigma(x)$): it asks its input for `xp` and writes `xp.exp`. Arithmetic
operators (`+`, `*`, `/`, `@`) need no `xp` at all, because NumPy and CuPy arrays both define them.
There is no `if device == ...` anywhere in `minadapt/nn/`.
'''),
code(r'''
print(inspect.getsource(minadapt.nn.swish.forward))
'''),
code(r'''
if backend.gpu_available():
    import cupy

    xg = cupy.asarray(x)  # host -> device copy
    yg, _ = minadapt.nn.swish.forward(xg)  # the very same function
    print("get_xp(a CuPy array) is cupy:", backend.get_xp(xg) is cupy, "| output type:", type(yg))
    print("max |CPU - GPU| =", float(np.abs(backend.to_numpy(yg) - minadapt.nn.swish.forward(x)[0]).max()))
else:
    print("No GPU (or no CuPy) on this machine: the cell above ran everything with NumPy.")
    print("On a machine with one, cupy.asarray(x) would move x to the GPU, and swish.forward(x)")
    print("would return a cupy.ndarray computed there. Lesson 8 does this with the whole model.")
'''),
md(r'''
The one thing the two libraries do differently in our maths is the **error function** that BERT's
exact GELU needs (lesson 2): NumPy has no `erf`, CuPy has one in `cupyx.scipy.special`. So
`backend.erf` is the one place in the maths with a device branch: on NumPy it runs `math.erf`
element by element (exact, and slow, which is fine for the plain reference ops of `minadapt/nn/`
and for float64 checks), on CuPy the library's exact kernel. (The fast ops in `minadapt/fast/` use a
float32 rational approximation instead, `minadapt/fast/numerics.py`, lesson 2.) Everything else in
`backend.py` is about the machinery, not the maths: moving arrays, synchronising, and a
scatter-add. The cores are used one level up: `parallel.py` runs each core on its own shard of the
batch (lesson 7). `resolve_dtype` is the precision policy: only float32 and float64 exist.
'''),
code(r'''
for d in ("float32", np.float64):
    print(repr(d), "->", backend.resolve_dtype(d))
try:
    backend.resolve_dtype("float16")
except ValueError as e:
    print("float16 -> ValueError:", e)
'''),
md(r'''
## 2. Shapes, and the dimension legend

Every layer file opens with a legend of the letters its shape comments use. The same letters
run through the whole library:

| letter | meaning | all-MiniLM-L6-v2 |
|---|---|---|
| `B` | sentences in a batch | e.g. 32 |
| `T` (`Tq`, `Tk`) | tokens per sentence after padding (queries, keys) | ≤ 128 |
| `N` | rows = `B·T`, when a layer does not care about sentences | |
| `H` | hidden size: the width of every token vector between layers | 384 |
| `nh`, `hs` | attention heads, head size `H / nh` | 12, 32 |
| `F` | feed-forward width | 1536 |
| `V` | vocabulary size | 30522 |
| `m` | adapter bottleneck | e.g. 64 |

The numbers in the last column come from the checkpoint's `config.json`, read into a
`BertConfig` dataclass (`minadapt/config.py`):
'''),
WEIGHTS,
code(r'''
from minadapt import BertConfig

cfg = BertConfig.from_json(WEIGHTS / "config.json")
print(f"H = {cfg.hidden_size}, nh = {cfg.num_attention_heads}, hs = {cfg.head_size}, "
      f"F = {cfg.intermediate_size}, V = {cfg.vocab_size}, layers = {cfg.num_hidden_layers}")
'''),
md(r'''
A matrix multiply wants 2-D operands, but activations are `(B, T, H)`. A linear layer treats every
token the same way, so it can fold the leading axes into rows: `x.reshape(-1, H)` is `(N, H)`. For a
contiguous array this is free: a *view* of the same memory with a different shape, no copy. One big
`(N, H) @ (H, O)` product is also much faster than `B` small ones.
'''),
code(r'''
B, T, H = 2, 5, 4
acts = np.arange(B * T * H, dtype=np.float64).reshape(B, T, H)
rows = acts.reshape(-1, H)  # (N, H), N = B*T
print("rows.shape:", rows.shape, "| a view, not a copy:", np.shares_memory(rows, acts))
print("row 7 is sentence", 7 // T, "token", 7 % T, ":", rows[7], "==", acts[1, 2])
'''),
md(r'''
## 3. Forward, backward, cache: a linear layer

`minadapt/nn/linear.py` computes $y = xW^\top + b$ with $x$ of shape `(N, D)` and the weight in
PyTorch's layout, $W$ of shape `(O, D)` (so a HuggingFace checkpoint loads without transposing).

**What a backward pass computes.** Training needs the gradient of a scalar loss $L$ with respect to
every parameter. Write $\bar y = \partial L / \partial y$ for the gradient arriving from above
(the code calls it `dy`; it has the shape of $y$). The backward pass of a layer turns $\bar y$ into
the gradients of its inputs, by the chain rule:

$$\bar x = \bar y\, W, \qquad \bar W = \bar y^\top x, \qquad \bar b = \sum_{n} \bar y_{n,:}$$

(lesson 2 derives these index by index). Look at what each line needs: $\bar x$ needs $W$,
$\bar W$ needs $x$, $\bar b$ needs nothing. That is exactly what the **cache** keeps:
`LinearCache(x, w)`. Nothing else is stored, nothing is recomputed.
'''),
code(r'''
from minadapt.nn import linear

rng = np.random.default_rng(0)
N, D, O = 4, 3, 2
x = rng.standard_normal((N, D))
w = rng.standard_normal((O, D))
b = rng.standard_normal(O)

y, cache = linear.forward(x, w, b)
print("y.shape:", y.shape, "| cache fields:", cache._fields,
      "| shapes:", [None if t is None else t.shape for t in cache])

dy = rng.standard_normal(y.shape)  # pretend this came from the layers above
dx, dw, db = linear.backward(dy, cache)
print("dx", dx.shape, " dw", dw.shape, " db", db.shape, " (each the shape of its variable)")
'''),
md(r'''
**Frozen weights.** In adapter training the backbone's weights never change, so nobody needs
$\bar W$, and so the forward need not keep $x$. `frozen=True` stores `x=None` in the cache, and
the backward then returns `dw = db = None`: half of the layer's backward arithmetic (a third of
forward plus backward), and all of its saved activations, gone. `dx` is still returned, because the layers below (where the adapters
sit) need it.
'''),
code(r'''
y_f, cache_f = linear.forward(x, w, b, frozen=True)
print("frozen cache keeps x?", cache_f.x is not None)
dx_f, dw_f, db_f = linear.backward(dy, cache_f)
print("dw, db:", dw_f, db_f, "| dx unchanged:", np.array_equal(dx_f, dx))
'''),
md(r'''
**A backward is a vector–Jacobian product.** The Jacobian $\partial y / \partial x$ of even this
small layer has $NO \times ND$ entries; for a real layer it would not fit in memory. A backward
never builds it. It computes $\bar x_i = \sum_j \bar y_j\, \partial y_j / \partial x_i$ directly,
which is the gradient of the *scalar*

$$g(x) = \sum_j f(x)_j\,\bar y_j .$$

That is what makes a backward testable: choose a random $\bar y$, and $g$ is an ordinary scalar
function of $x$ whose gradient we can estimate numerically.

## 4. Gradient checking with centred differences

Nudge one input element by $\pm h$ and Taylor-expand:

$$g(x \pm h e_i) = g(x) \pm h\,\partial_i g + \tfrac{h^2}{2}\,\partial_i^2 g \pm \tfrac{h^3}{6}\,\partial_i^3 g + \dots
\quad\Longrightarrow\quad
\frac{g(x+he_i)-g(x-he_i)}{2h} = \partial_i g + \tfrac{h^2}{6}\,\partial_i^3 g + O(h^4).$$

The even terms cancel, so the **truncation error** is $O(h^2)$ (a one-sided difference would be
$O(h)$). But each $g$ is computed with a relative rounding error of about $\varepsilon$ (machine
epsilon), and dividing by $2h$ amplifies it: a **rounding error** of about $\varepsilon |g| / h$.
Small $h$ is not automatically better; section 5 draws the trade-off.

`gradcheck.numerical_grad(f, x, dy, h)` loops over the elements of `x` (perturbing `x` *in place*
and restoring it, so `f` must read that same array), and `gradcheck.rel_error(a, b)` compares two
gradients scale-free:

$$\text{rel error}(a, b) = \frac{\max_i |a_i - b_i|}{\max_i \left(|a_i| + |b_i|\right)} .$$

In float64 a correct backward gives about $10^{-10}$; the library's tests demand less than $10^{-7}$.
A real mistake gives something near $1$.
'''),
code(r'''
from minadapt import gradcheck

num_dx = gradcheck.numerical_grad(lambda x_: linear.forward(x_, w, b)[0], x, dy)
num_dw = gradcheck.numerical_grad(lambda w_: linear.forward(x, w_, b)[0], w, dy)
num_db = gradcheck.numerical_grad(lambda b_: linear.forward(x, w, b_)[0], b, dy)
for name, analytic, numeric in (("dx", dx, num_dx), ("dw", dw, num_dw), ("db", db, num_db)):
    print(f"{name}: rel_error = {gradcheck.rel_error(analytic, numeric):.1e}")
'''),
md(r'''
**Does the check catch mistakes?** Here are two deliberately broken backwards, written out in full,
with the kind of slip one makes deriving gradients by hand: a sign error in $\bar x$, and the
bias gradient *averaged* over rows instead of summed.
'''),
code(r'''
def linear_backward_sign_flipped(dy, cache):
    """BROKEN on purpose: dx has the wrong sign."""
    x2, w = cache
    dx = -(dy @ w)  # should be +dy W
    return dx, dy.T @ x2, dy.sum(axis=0)


def linear_backward_mean_bias(dy, cache):
    """BROKEN on purpose: the bias gradient is a mean over rows, not a sum."""
    x2, w = cache
    return dy @ w, dy.T @ x2, dy.mean(axis=0)  # should be dy.sum(axis=0)


for backward in (linear.backward, linear_backward_sign_flipped, linear_backward_mean_bias):
    ddx, ddw, ddb = backward(dy, cache)
    errs = [gradcheck.rel_error(a, n) for a, n in ((ddx, num_dx), (ddw, num_dw), (ddb, num_db))]
    verdict = "PASS" if max(errs) < 1e-7 else "FAIL"
    label = "linear.backward (the library)" if backward is linear.backward else backward.__name__
    print(f"{label:30s}  dx {errs[0]:.1e}   dw {errs[1]:.1e}   db {errs[2]:.1e}   {verdict}")
'''),
md(r'''
What to look at: the correct backward sits near $10^{-10}$ everywhere. The sign flip gives
*exactly* 1 on `dx` ($|a-b| = 2|a|$ and $|a|+|b| = 2|a|$), a fingerprint worth remembering. The
averaged bias is off by the factor $N = 4$, so $(1 - 1/N)/(1 + 1/N) = 0.6$. Both would train
something, just not what we meant; only a check says so.

## 5. float32 versus float64

A float32 number has a 24-bit significand (about 7 decimal digits), a float64 one 53 bits (about 16).
Machine epsilon, the gap between 1 and the next representable number, is what sets every rounding
error below.
'''),
code(r'''
for t in (np.float32, np.float64):
    print(f"{np.dtype(t).name}: eps = {np.finfo(t).eps:.2e}, smallest normal = {np.finfo(t).tiny:.1e}, "
          f"max = {np.finfo(t).max:.1e}")

print("float32: 1 + 1e-8 == 1 ?", np.float32(1) + np.float32(1e-8) == np.float32(1))
print("float32: 16_777_217 stored as", int(np.float32(16_777_217)))
tenths = np.full(1_000_000, 0.1, dtype=np.float32)
print(f"a million 0.1s, float32, added one by one (cumsum): {np.cumsum(tenths)[-1]:.2f}")
print(f"                float32, pairwise (np.sum):        {tenths.sum():.2f}")
print(f"                float64, one by one:               {np.cumsum(tenths.astype(np.float64))[-1]:.4f}"
      f"   (float32's 0.1 is really {float(np.float32(0.1)):.12f})")
'''),
md(r'''
Now the gradient check itself in float32. With the default $h = 10^{-6}$, $x + h$ barely differs
from $x$ in float32, and the rounding term $\varepsilon |g| / h \approx 10^{-7}/10^{-6}$ swamps
everything:
'''),
code(r'''
x32, w32, b32, dy32 = (t.astype(np.float32) for t in (x, w, b, dy))
num32 = gradcheck.numerical_grad(lambda x_: linear.forward(x_, w32, b32)[0], x32, dy32)
print(f"float32, h=1e-6: rel_error = {gradcheck.rel_error(dx, num32):.1e}   (float64 gave {gradcheck.rel_error(dx, num_dx):.0e})")
'''),
md(r'''
### The picture: error against step size

A linear layer has no truncation error at all (its third derivative is zero), so to see both effects we
check a curved function, `minadapt.nn.tanh`, for step sizes from $10^{-1}$ down to $10^{-13}$,
once in float64 and once in float32. The analytic gradient is always computed in float64.
'''),
code(r'''
from minadapt.nn import tanh

xs = rng.standard_normal(20)
dys = rng.standard_normal(20)
_, tcache = tanh.forward(xs)
(exact,) = tanh.backward(dys, tcache)  # float64 analytic gradient: the reference
steps = np.logspace(-1, -13, 49)
curves = {}
for t in (np.float64, np.float32):
    xt, dyt = xs.astype(t), dys.astype(t)
    curves[t] = np.array([gradcheck.rel_error(exact, gradcheck.numerical_grad(
        lambda z: tanh.forward(z)[0], xt, dyt, h=h)) for h in steps])
    best = steps[curves[t].argmin()]
    print(f"{np.dtype(t).name}: best h = {best:.0e} (eps^(1/3) = {np.finfo(t).eps ** (1 / 3):.0e}), "
          f"best rel_error = {curves[t].min():.0e}")

fig, ax = plt.subplots(figsize=(8, 4.8))
for t, colour in ((np.float64, "C0"), (np.float32, "C1")):
    ax.loglog(steps, curves[t], "o-", ms=3, color=colour, label=np.dtype(t).name)
    eps = np.finfo(t).eps
    ax.loglog(steps, 0.3 * eps / steps, ":", color=colour, lw=1)  # rounding: slope -1
ax.loglog(steps, 0.05 * steps ** 2, "k--", lw=1, label=r"truncation $\propto h^2$")
ax.axvline(1e-6, color="grey", lw=0.8)
ax.text(1.2e-6, 3e-1, "gradcheck's default h = 1e-6", color="grey", fontsize=8)
ax.axhline(1e-7, color="C3", lw=0.8)
ax.text(1e-13, 1.6e-7, "tests fail above 1e-7", color="C3", fontsize=8)
ax.text(3e-12, 3e-5, r"rounding $\propto \varepsilon/h$ (dotted)", fontsize=8)
ax.set_ylim(1e-12, 3)
ax.set_xlabel("step size h")
ax.set_ylabel("rel_error(analytic, centred difference)")
ax.set_title("Centred differences: truncation error (right) against rounding error (left)")
ax.legend(loc="lower right")
ax.grid(True, which="major", alpha=0.3)
plt.show()
'''),
md(r'''
What to look at:

* **Right arm, slope 2**: truncation error $\propto h^2$. It is the same for both precisions.
* **Left arm, slope −1**: rounding error $\propto \varepsilon/h$, with $\varepsilon$ nine orders of
  magnitude apart for the two types. Below $h \approx 10^{-7}$, float32 cannot even tell $x + h$
  from $x$ (for $|x| \approx 1$), and the estimate is garbage (error 1).
* **The bottom of each V** sits near $h \approx \varepsilon^{1/3}$, where the two arms meet. For
  float64 that is about $10^{-11}$ in error, ten thousand times below the tests' threshold, while a
  real bug gives errors many orders of magnitude above it: nothing can hide. For float32 the best
  possible is about $10^{-5}$, and a small missing term could hide below that.

Hence the library's policy (README.md, "Tests"): **gradient checks and reference comparisons
run in float64, training and inference in float32**, with the very same code and a `dtype`
argument. float32 is about 2.3× faster on the CPU and halves the memory, and for training a
network seven correct digits are plenty: lesson 4 shows the float32 model agreeing with
PyTorch's float64 numbers to a few millionths.

**Next:** lesson 2 derives the backward of the linear layer, GELU and LayerNorm, and checks each.
'''),
]
