"""Lesson 5: the Houlsby bottleneck adapter: maths, parameter count, near-identity init, placement, trainable set."""
from .cells import SETUP, WEIGHTS, code, md

CELLS = [
md(r'''
# Lesson 5 — The bottleneck adapter

Fine-tuning all 22.6 million parameters of lesson 4 for every new task means storing a full copy of
the model per task. Houlsby et al. (2019, *Parameter-Efficient Transfer Learning for NLP*) freeze the
pretrained model and insert small **bottleneck adapters** into each layer; only those (and a task
head) train. Per task you store a few percent of the model, and the frozen backbone makes training
cheaper too (lesson 7).

This lesson covers `minadapt/nn/adapter.py`, where `bert.py` puts the adapters, how they start out
as the exact identity, and what trains and what stays frozen.
'''),
SETUP,
md(r'''
## 1. The adapter: forward and backward

For a token vector $h \in \mathbb R^H$ (rows of a `(N, H)` array), with bottleneck width $m \ll H$:

$$z = h\,W_\text{down}^\top + b_\text{down}\ \ (N, m), \qquad u = f(z), \qquad
y = h + u\,W_\text{up}^\top + b_\text{up}\ \ (N, H).$$

Down-project to $m$ dimensions, apply a non-linearity $f$ (swish $x\,\sigma(x)$ by default, as in
AdapterHub; `gelu` and `relu` are the alternatives), project back up, and **add the input back**:
the adapter computes a small correction to $h$, never a replacement for it.

The backward is three ops we already know, read bottom-up, plus the skip connection:

$$\bar u = \bar y\,W_\text{up},\quad \bar W_\text{up} = \bar y^\top u,\quad \bar b_\text{up} = \textstyle\sum_n \bar y_n;
\qquad \bar z = f'(z) \odot \bar u;$$
$$\bar h = \underbrace{\bar y}_{\text{skip}} + \bar z\,W_\text{down},\quad \bar W_\text{down} = \bar z^\top h,\quad \bar b_\text{down} = \textstyle\sum_n \bar z_n .$$

**Your turn, before reading the answer.** Exercise 3 §1 asks you to compose this pair from the
`linear` and `swish` pairs: each line is one call, read bottom-up in the backward, and the skip
connection is one explicit `+ dy`. Write it, let its check pass, then read the library's
[nn/adapter.py](../minadapt/nn/adapter.py): there the non-linearity is passed in as a module with
its own forward/backward pair (`act=`; `adapter.NON_LINEARITIES` names them).
'''),
code(r'''
import minadapt
from minadapt import gradcheck
from minadapt.nn import adapter
'''),
md(r'''
**Gradient check** for all five gradients, with each non-linearity. $W_\text{up}$ is made non-zero
here; at its initial value of zero (section 3) several gradients would be trivially zero.
'''),
code(r'''
rng = np.random.default_rng(0)
H, m = 6, 3
h = rng.standard_normal((2, 4, H))  # (B, T, H): the adapter takes any leading shape
w_down, b_down = rng.standard_normal((m, H)), rng.standard_normal(m)
w_up, b_up = rng.standard_normal((H, m)), rng.standard_normal(H)
params = [h, w_down, b_down, w_up, b_up]
names = ["dh", "dW_down", "db_down", "dW_up", "db_up"]
dy = rng.standard_normal(h.shape)

for f in ("swish", "gelu", "relu"):
    act = adapter.NON_LINEARITIES[f]
    y, cache = adapter.forward(*params, act=act)
    analytic = adapter.backward(dy, cache)
    errs = []
    for j in range(5):
        def fwd(p, j=j):
            args = list(params)
            args[j] = p
            return adapter.forward(*args, act=act)[0]
        errs.append(gradcheck.check(fwd, params[j], dy, analytic[j]))
    print(f"{f:6s}" + "".join(f"  {n} {e:.0e}" for n, e in zip(names, errs)))
'''),
md(r'''
**The fast version.** There is no separate fast adapter: the adapter is two small linear layers and a
non-linearity, and the fast ops ([ops.py](../minadapt/ops.py), `ops.fast()`) run this same
`nn/adapter.py`, handing it their own non-linearity:
[fast/swish.py](../minadapt/fast/swish.py) (on the CPU the reference's formulas, on a GPU one fused
kernel instead of five launches, lesson 8) or [fast/gelu.py](../minadapt/fast/gelu.py) (cache-sized
blocks and a float32 erf, lesson 2). The check: the same adapter with the fast non-linearities gives
the reference's output and all five gradients.
'''),
code(r'''
from minadapt import ops

fast_ops = ops.fast()
for f in ("swish", "gelu"):
    y_ref, c_ref = adapter.forward(*params, act=adapter.NON_LINEARITIES[f])
    y_fast, c_fast = fast_ops.adapter.forward(*params, act=fast_ops.non_linearities[f])
    errs = [gradcheck.rel_error(a, b) for a, b in zip(adapter.backward(dy, c_fast), adapter.backward(dy, c_ref))]
    print(f"{f:6s} fast vs reference: output {gradcheck.rel_error(y_fast, y_ref):.0e}, "
          f"gradients up to {max(errs):.0e}")
    assert gradcheck.rel_error(y_fast, y_ref) < 1e-12 and max(errs) < 1e-12
'''),
md(r'''
## 2. How many parameters

$W_\text{down}$ is $m \times H$, $W_\text{up}$ is $H \times m$, plus the two biases:

$$2\,m\,H + m + H \quad\text{per adapter.}$$

For $H = 384$ and $m = 64$ that is $49{,}152 + 64 + 384 = 49{,}600$. `adapter.init_params` builds
exactly these four arrays, under AdapterHub's names (so adapter files are interchangeable with it):
'''),
code(r'''
H, m = 384, 64
init = adapter.init_params(H, m, np.random.default_rng(0), np.float32)
for name, value in init.items():
    print(f"  {name:22s} {str(value.shape):12s} {value.size:>7,}")
n_adapter = sum(v.size for v in init.values())
print(f"total {n_adapter:,} = 2 m H + m + H = {2 * m * H + m + H:,}")
print(f"two per layer, six layers: {12 * n_adapter:,} parameters")
'''),
md(r'''
## 3. Near-identity initialisation

`init_params` draws $W_\text{down} \sim \mathcal N(0, 0.01^2)$ and sets $W_\text{up} = 0$, $b_\text{down} = b_\text{up} = 0$.
With $W_\text{up} = 0$ and $b_\text{up} = 0$, the correction $u W_\text{up}^\top + b_\text{up}$ is exactly
zero, whatever $u$ is, and $y = h + 0 = h$ **exactly** (adding an exact zero is exact in floating point).
So a freshly added adapter leaves the pretrained network's output untouched, bit for bit, and training
starts from the pretrained function rather than from a randomly perturbed one.

On the real model: encode two sentences, add the adapters (`model.add_adapter`), encode again.
'''),
WEIGHTS,
code(r'''
model = minadapt.load_model(WEIGHTS, dtype="float32")
batch = model.tokenizer.encode(["A gripping, beautifully shot film.", "The plot never comes together."])
before = model.encode(*batch)  # the bare backbone: the model holds no adapter yet
model.add_adapter("sst2", bottleneck=64)
after = model.encode(*batch, adapter="sst2")
print("adapters held:", model.adapters)
print("hidden states exactly equal before and after:", np.array_equal(before, after))

# The adapters really are in the computation: give one up-projection small random values and the
# output moves. (Not a constant: a constant W_up adds the same number to every hidden unit of a row,
# and the LayerNorm right after subtracts each row's mean, which removes it again.)
name = "encoder.layer.3.output.adapters.sst2.adapter_up.weight"
saved = model.params[name].copy()
model.params[name][...] = 1e-2 * np.random.default_rng(1).standard_normal(saved.shape)
moved = float(np.abs(model.encode(*batch, adapter="sst2") - before).max())
print(f"after giving one W_up random values of size 1e-2, max |change| = {moved:.1e} "
      f"(values of size {float(np.abs(before).mean()):.2f})")
model.params[name][...] = saved
'''),
md(r'''
**Why $W_\text{down}$ is random and not zero too.** Look at the backward at the initial point. With
$W_\text{up} = 0$: $\bar u = \bar y W_\text{up} = 0$, so $\bar z = 0$, so $\bar W_\text{down} = 0$ and
$\bar b_\text{down} = 0$. The only non-zero gradients are $\bar b_\text{up}$ and
$\bar W_\text{up} = \bar y^\top u$, and that needs $u = f(h W_\text{down}^\top) \ne 0$. If $W_\text{down}$
were zero as well, $u = f(0) = 0$ for swish, GELU and ReLU alike, and $\bar W_\text{up}$ would be zero
too: apart from $b_\text{up}$, nothing would ever move. The small random $W_\text{down}$ breaks the
deadlock, and makes the $m$ hidden units start out different from each other, so they learn different
things. After the first step $W_\text{up} \ne 0$ and $W_\text{down}$ starts receiving gradient.
'''),
code(r'''
hr = rng.standard_normal((8, H))
dyr = rng.standard_normal((8, H))
zero_init = {k: np.zeros_like(v) for k, v in init.items()}
for label, p in (("W_down random (the library)", init), ("W_down = 0 as well", zero_init)):
    y0, c0 = adapter.forward(hr, *(p[k].astype(np.float64) for k in p))
    dh0, *grads0 = adapter.backward(dyr, c0)
    norms = "  ".join(f"|{n}| {np.linalg.norm(g):.2e}" for n, g in zip(names[1:], grads0))
    print(f"{label:30s} y == h: {np.array_equal(y0, hr)}, dh == dy: {np.array_equal(dh0, dyr)}\n    {norms}")
'''),
md(r'''
(AdapterHub's default "bert" init draws *both* projections from $\mathcal N(0, 0.02^2)$, so its adapters
start close to, but not exactly at, the identity; the reference fixtures in `tests/` overwrite all
adapter weights anyway, so the comparison does not depend on the init.)

## 4. Where the two adapters sit in a layer

`bert.layer_forward` (through `after_attention_forward`) calls `_adapter_forward` twice per layer: after the attention block's output
projection (and its dropout), and after the feed-forward block's output projection (and its dropout),
each time **before** the residual add and the LayerNorm. This is Houlsby's placement, and AdapterHub's
`DoubleSeqBnConfig`:

$$h = \operatorname{LayerNorm}_1\big(x + \operatorname{adapter}(\operatorname{dropout}(c\,W_o^\top + b_o))\big), \qquad
\text{out} = \operatorname{LayerNorm}_2\big(h + \operatorname{adapter}(\operatorname{dropout}(f\,W_{o2}^\top + b_{o2}))\big).$$

Parameter names follow AdapterHub: `encoder.layer.{i}.attention.output.adapters.{name}.…` for the
first, `encoder.layer.{i}.output.adapters.{name}.…` for the second (`bert.adapter_prefix`). Which
sites an architecture uses is stated once, in `bert.ADAPTER_SITES`, and `run.adapter` (an
`AdapterConfig`) says which adapter a forward pass runs: a model can hold several, and each call
names one (`adapter="sst2"`). Both the reference and the fast ops run this same `nn/adapter.py`
(the fast bundle only swaps in its fast non-linearities, section 1).
'''),
code(r'''
from matplotlib.patches import Circle, FancyBboxPatch, Patch

FROZEN, ADAPTER, NORM, PLAIN = "#d9d9d9", "#ff9f40", "#9ecae1", "white"


def box(ax, xc, y, text, colour, w=3.6, hgt=0.62, bold=False):
    ax.add_patch(FancyBboxPatch((xc - w / 2, y - hgt / 2), w, hgt, boxstyle="round,pad=0.02,rounding_size=0.12",
                                fc=colour, ec="black", lw=1.2 if bold else 0.8))
    ax.text(xc, y, text, ha="center", va="center", fontsize=9, weight="bold" if bold else "normal")


def node(ax, xc, y, text, colour, fontsize=10, **box_kw):
    """One step of a diagram: a plain label (colour None), a "+" (colour "plus"), or a box."""
    if colour is None:
        ax.text(xc, y, text, ha="center", va="center", fontsize=fontsize, style="italic")
    elif colour == "plus":
        ax.add_patch(Circle((xc, y), 0.22, fc="white", ec="black"))
        ax.text(xc, y, "+", ha="center", va="center", fontsize=13)
    else:
        box(ax, xc, y, text, colour, **box_kw)


def arrow(ax, start, end, **kw):
    ax.annotate("", xy=end, xytext=start,
                arrowprops=dict(arrowstyle="-|>", color=kw.get("color", "black"), lw=1.1, shrinkA=0, shrinkB=0))


steps = [("x   (B, T, H)", None), ("self-attention (lesson 3)\nfused Q|K|V matmul, 12 heads", FROZEN),
         ("dense  W_o  (H→H)", FROZEN), ("dropout", PLAIN), ("ADAPTER", ADAPTER), ("+", "plus"),
         ("LayerNorm 1", NORM), ("FFN: dense W_i (H→F), GELU", FROZEN), ("dense  W_o2  (F→H)", FROZEN),
         ("dropout", PLAIN), ("ADAPTER", ADAPTER), ("+", "plus"), ("LayerNorm 2", NORM), ("out   (B, T, H)", None)]
half = {None: 0.2, "plus": 0.22}
fig, ax = plt.subplots(figsize=(11, 11))
xc = 0.0
for j, (text, colour) in enumerate(steps):
    node(ax, xc, j, text, colour, bold=colour == ADAPTER, hgt=0.72 if "\n" in text else 0.62)
    if j:
        top_of_previous = (j - 1) + half.get(steps[j - 1][1], 0.31 if "\n" not in steps[j - 1][0] else 0.36)
        arrow(ax, (xc, top_of_previous), (xc, j - half.get(colour, 0.31 if "\n" not in text else 0.36)))

# the two residual connections: the block's input skips to the "+"
for split_y, plus_y, label in ((0.5, 5, "residual: x"), (6.5, 11, "residual: h")):
    left = xc - 2.6
    ax.plot([xc, left, left], [split_y, split_y, plus_y], color="C0", lw=1.4)
    arrow(ax, (left, plus_y), (xc - 0.22, plus_y), color="C0")
    ax.text(left - 0.1, (split_y + plus_y) / 2, label, rotation=90, ha="right", va="center", color="C0", fontsize=9)

# inside an adapter, drawn to the right
ix = 6.0
inner = [("h   (N, H)", None), ("down: W_down, b_down  (H→m)", ADAPTER), ("swish  f", PLAIN),
         ("up: W_up, b_up  (m→H)", ADAPTER), ("+", "plus"), ("y = h + up(f(down(h)))", None)]
y0 = 1.5
for j, (text, colour) in enumerate(inner):
    y = y0 + 1.1 * j
    node(ax, ix, y, text, colour, fontsize=9, w=4.2)
    if j:
        arrow(ax, (ix, y - 1.1 + (0.2 if inner[j - 1][1] is None else 0.31)), (ix, y - (0.22 if colour == "plus" else 0.31)))
right = ix + 2.5
ax.plot([ix, right, right], [y0 + 0.45, y0 + 0.45, y0 + 4 * 1.1], color="C0", lw=1.4)
arrow(ax, (right, y0 + 4 * 1.1), (ix + 0.22, y0 + 4 * 1.1), color="C0")
ax.text(right + 0.1, y0 + 2.2, "skip", rotation=90, va="center", color="C0", fontsize=9)
ax.add_patch(FancyBboxPatch((ix - 2.8, y0 - 0.5), 5.9, 6.5, boxstyle="round,pad=0.1", fc="none", ec=ADAPTER,
                            lw=1.5, ls="--"))
ax.text(ix, y0 + 6.3, "inside each ADAPTER (bottleneck m = 64)", ha="center", fontsize=10, weight="bold")
for yy in (4, 10):
    ax.plot([xc + 1.8, ix - 2.9], [yy, 4.5 if yy == 4 else 6.5], color=ADAPTER, lw=1, ls=":")

ax.legend(handles=[Patch(fc=FROZEN, ec="black", label="frozen pretrained weights"),
                   Patch(fc=ADAPTER, ec="black", label="trainable adapter weights"),
                   Patch(fc=NORM, ec="black", label="LayerNorm (frozen; trainable with train_layer_norms=True)"),
                   Patch(fc=PLAIN, ec="black", label="no parameters")],
          loc="upper right", fontsize=9, frameon=False)
ax.set_xlim(-4, 10)
ax.set_ylim(-0.7, 13.7)
ax.axis("off")
ax.set_title("One BERT layer with its two Houlsby adapters (bert.layer_forward)", fontsize=12)
plt.show()
'''),
md(r'''
Reading the diagram from the bottom: the adapter sees the sub-block's output *before* it is added to the
residual stream, so it can reshape what the frozen block contributes, and it has its own skip around
it (the identity at init). The gradient on its way down takes both paths at every `+`: through the
adapter and around it.

## 5. What trains and what stays frozen

`add_adapter` puts the 48 adapter arrays (4 per adapter, 2 per layer, 6 layers) into `model.params`
and their names into the task's trainable set, `model.trainable_names("sst2")`;
`add_classification_head` does the same for the head
(`minadapt/heads.py`, AdapterHub's default head on the final [CLS] vector):

$$z = \operatorname{dropout}(h_\text{[CLS]})\,W_1^\top + b_1, \qquad t = \tanh(z), \qquad
\text{logits} = \operatorname{dropout}(t)\,W_4^\top + b_4 ,$$

named `heads.{name}.1.*` and `heads.{name}.4.*` after their positions in AdapterHub's
`Sequential(Dropout, Linear, Tanh, Dropout, Linear)`; its backward is the same three ops read
bottom-up (lesson 2). Everything else in `model.params` is frozen.
'''),
code(r'''
from minadapt import heads

model.add_classification_head("sst2", num_labels=2)
print("head parameters:", heads.head_names("sst2"))
trainable = model.trainable_names("sst2")
frozen = set(model.params) - trainable
n_adapters = sum(model.params[k].size for k in trainable if ".adapters." in k)
n_head = sum(model.params[k].size for k in trainable if k.startswith("heads."))
n_frozen = sum(model.params[k].size for k in frozen)
n_all = n_adapters + n_head + n_frozen
print(f"trainable: {len(trainable)} arrays, {n_adapters + n_head:,} numbers "
      f"({n_adapters:,} adapters + {n_head:,} head) = {100 * (n_adapters + n_head) / n_all:.2f}% of the model")
print(f"frozen:    {len(frozen)} arrays, {n_frozen:,} numbers")
print("lowest layer with a trainable parameter (backward stops there):", model.lowest_trainable_layer("sst2"))

fig, ax = plt.subplots(figsize=(11, 2.2))
left = 0
for label, n, colour, text_x in (("frozen backbone", n_frozen, FROZEN, None), ("adapters", n_adapters, ADAPTER, 19.5),
                                 ("head", n_head, "#d62728", 26.0)):
    ax.barh(0, n / 1e6, left=left / 1e6, height=0.8, color=colour, ec="black", lw=0.5)
    text = f"{label}: {n:,} ({100 * n / n_all:.1f}%)"
    middle = (left + n / 2) / 1e6
    if text_x is None:
        ax.text(middle, 0, text, ha="center", va="center", fontsize=9)
    else:
        ax.annotate(text, xy=(middle, 0.4), xytext=(text_x, 1.1), ha="center", fontsize=9,
                    arrowprops=dict(arrowstyle="-", color="black", lw=0.8))
    left += n
ax.set_xlim(0, 29)
ax.set_ylim(-0.5, 1.5)
ax.set_yticks([])
ax.set_xlabel("millions of parameters")
ax.set_title("What a task stores: the coloured sliver on the right")
plt.show()
'''),
md(r'''
**The gradient at step 0.** `model.loss_and_grads` runs the forward (only [CLS] in the last layer), the
cross-entropy, and the backward down to the lowest trainable layer, and returns gradients for exactly
the names in `model.trainable_names("sst2")`. As section 3 predicts, every $W_\text{down}$ gradient is exactly zero
at the start and every $W_\text{up}$ gradient is not: the up-projections move first.
'''),
code(r'''
labels = np.array([1, 0])
loss, logits, grads = model.loss_and_grads(*batch, labels, adapter="sst2", train=False)
print(f"loss {float(loss):.4f} (ln 2 = {np.log(2):.4f}: a fresh head is close to a coin toss)")
print("gradients for exactly the trainable names:", set(grads) == trainable)
for i in (0, 5):
    for where in ("attention.output", "output"):
        p = f"encoder.layer.{i}.{where}.adapters.sst2."
        print(f"layer {i} {where:16s} |dW_down| = {np.linalg.norm(grads[p + 'adapter_down.0.weight']):.1e}"
              f"   |dW_up| = {np.linalg.norm(grads[p + 'adapter_up.weight']):.1e}")
'''),
md(r'''
That is the whole of `adapter.py`, and the last piece of `bert.py` (`_adapter_forward` /
`_adapter_backward`: look up the four arrays by name, call the pair, file the gradients under their
names). Houlsby et al. also train the layers' LayerNorms; `add_adapter(..., train_layer_norms=True)`
gives the adapter its own copies of them (`bert.layer_norm_prefix`), starting as the backbone's, and
adds those to its trainable set, so training it leaves every other adapter's model as it was
(AdapterHub's `train_adapter` does not train them, hence the default).

**Next:** lesson 6 trains this adapter on SST-2, and lesson 7 measures what the frozen backbone buys.
'''),
md(r'''
## Check your understanding

1. An adapter has $W_\text{up} = 0$ at the start. Why is $W_\text{down}$ not zero too?
2. How many parameters does one adapter of bottleneck $m$ on width $H$ have?
3. Why does the adapter sit before the residual sum and the LayerNorm?

<details><summary>Answers</summary>

1. With both zero, $u = f(0) = 0$ and $\bar W_\text{up} = \bar y^\top u = 0$: apart from $b_\text{up}$ nothing would move. The small random $W_\text{down}$ breaks that, and makes the $m$ units differ.
2. $2mH + m + H$: two matrices and two biases.
3. There it adjusts the sub-layer's output before the layer's own residual sum and normalisation, and at its identity initialisation the layer computes exactly what it did before (section 3).
</details>
'''),
]
