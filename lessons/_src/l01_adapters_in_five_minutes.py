"""Lesson 1: the point first (a frozen encoder, small adapters, a trained task in a few minutes),
then the forward/backward/cache pattern, gradient checking, float32 against float64."""
from .cells import SETUP, WEIGHTS, code, md

CELLS = [
md(r'''
# Lesson 1 — Adapters in five minutes

Take a sentence encoder that someone else pretrained (here all-MiniLM-L6-v2: a six-layer BERT,
22.6 million numbers), **freeze it**, slot two small **bottleneck adapters** into each of its layers,
put a small classification **head** on top, and train only the adapters and the head. A new task
then costs a few percent of the model's parameters, and a file of a few megabytes instead of a copy
of the model. That is the whole idea of adapters (Houlsby et al., 2019), and `minadapt` implements
it in NumPy with every forward and every backward pass written by hand.

This lesson shows the point first:

1. **the picture**: what is frozen, what trains, and how many numbers each is, counted on the real model;
2. **five minutes end to end**: load the pretrained model, add an adapter and a head, train a hundred
   steps on movie-review sentiment (SST-2), watch the loss go down, predict two sentences, save the
   adapter and look at its size.

To run it yourself: `pip install -e ".[dev]"` in the repository root (the one install line for all
the lessons and exercises), then `jupyter lab lessons/`. The checkpoint is fetched on first use.

Then it opens the first box: how the library writes every layer as a forward/backward pair, and how
each backward is checked against finite differences, in float64. The later lessons build each piece:
what BERT is and how it was pretrained (0, if you have not met it), the ops (2, 3), the encoder (4),
the adapter (5), training (6), many tasks on one backbone (9), and the other ways of adapting (10).
Lessons 7 (what freezing saves, and speed on a CPU) and 8 (the GPU) are optional appendices. The
exercises (`exercises/`) ask you to write each op before you read its answer, and the last one
trains BERT on your own code.
'''),
SETUP,
WEIGHTS,
md(r'''
## 1. The picture

`minadapt.load_model` reads the checkpoint (the folder found above) into a `Model`: one flat dict
`model.params` from the checkpoint's names to NumPy arrays. `add_adapter("sst2", ...)` puts two
adapters into every layer and `add_classification_head("sst2", ...)` a head on the final [CLS]
vector; both belong to the task `"sst2"`, and `model.trainable_names("sst2")` lists exactly what
training that task may change. Everything else is the frozen backbone. Counting both:
'''),
code(r'''
import minadapt

model = minadapt.load_model(WEIGHTS)  # float32, on the CPU
model.add_adapter("sst2", bottleneck=64)  # 2 adapters per layer, 384 -> 64 -> 384 each
model.add_classification_head("sst2", num_labels=2)  # negative / positive

trainable = model.trainable_names("sst2")
n_adapters = sum(model.params[k].size for k in trainable if ".adapters." in k)
n_head = sum(model.params[k].size for k in trainable if k.startswith("heads."))
n_backbone = sum(v.size for k, v in model.params.items() if k not in trainable)
n_all = n_backbone + n_adapters + n_head
print(f"frozen backbone: {n_backbone:>10,} numbers in {len(model.params) - len(trainable)} arrays")
print(f"adapters:        {n_adapters:>10,} numbers in {sum('.adapters.' in k for k in trainable)} arrays")
print(f"head:            {n_head:>10,} numbers in {sum(k.startswith('heads.') for k in trainable)} arrays")
print(f"trains: {n_adapters + n_head:,} of {n_all:,} = {100 * (n_adapters + n_head) / n_all:.1f}%")
'''),
code(r'''
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Patch

FROZEN, ADAPTER, HEAD = "#cccccc", "#ff9f40", "#d62728"


def block(ax, x, y, w, h, text, colour, fontsize=8, **kw):
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02,rounding_size=0.08",
                                fc=colour, ec="black", lw=0.8, **kw))
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize)


def up(ax, x, y0, y1):
    ax.add_patch(FancyArrowPatch((x, y0), (x, y1), arrowstyle="-|>", mutation_scale=10, lw=0.9, color="black"))


def right(ax, x0, x1, y):
    ax.add_patch(FancyArrowPatch((x0, y), (x1, y), arrowstyle="-|>", mutation_scale=8, lw=0.8, color="black"))


fig, ax = plt.subplots(figsize=(9, 8))
block(ax, 0, 0, 6.4, 0.55, "tokens  ->  embeddings (word + position + type), LayerNorm", FROZEN)
n_layers = model.cfg.num_hidden_layers
for i in range(n_layers):
    y = 1.1 + 1.05 * i
    ax.add_patch(FancyBboxPatch((-3.4, y - 0.4), 6.8, 0.8, boxstyle="round,pad=0.02", fc="#f2f2f2",
                                ec="grey", lw=0.8))
    ax.text(-3.3, y + 0.28, f"layer {i}", fontsize=7, color="dimgrey")
    block(ax, -2.05, y - 0.04, 1.9, 0.45, "self-attention", FROZEN)
    block(ax, -0.62, y - 0.04, 0.5, 0.45, "A", ADAPTER, fontsize=9, zorder=3)
    block(ax, 1.05, y - 0.04, 1.9, 0.45, "feed-forward", FROZEN)
    block(ax, 2.5, y - 0.04, 0.5, 0.45, "A", ADAPTER, fontsize=9, zorder=3)
    right(ax, -1.1, -0.87, y - 0.04)
    right(ax, -0.37, 0.1, y - 0.04)
    right(ax, 2.0, 2.25, y - 0.04)
    up(ax, 0, y - 0.4 - (0.25 if i == 0 else 0.25), y - 0.4)
top = 1.1 + 1.05 * (n_layers - 1) + 0.4
block(ax, 0, top + 0.75, 4.2, 0.55, "head on [CLS]: dense, tanh, dense  ->  2 logits", HEAD)
up(ax, 0, top, top + 0.47)
ax.text(0, top + 1.3, "negative / positive", ha="center", fontsize=9, style="italic")
# one adapter, enlarged
ax.annotate("", xy=(2.75, 1.1 + 1.05 * 2), xytext=(4.1, 4.3),
            arrowprops=dict(arrowstyle="-", color=ADAPTER, lw=0.8, ls=":"))
ax.add_patch(FancyBboxPatch((3.75, 3.3), 2.5, 2.6, boxstyle="round,pad=0.05", fc="none", ec=ADAPTER, ls="--"))
ax.text(5.0, 5.65, "A: a bottleneck adapter", ha="center", fontsize=8, weight="bold")
for j, (text, colour) in enumerate((("h  (384 wide)", None), ("down 384 -> 64", ADAPTER),
                                    ("swish", "white"), ("up 64 -> 384", ADAPTER), ("h + up(...)", None))):
    yy = 3.5 + 0.45 * j
    if colour is None:
        ax.text(5.0, yy, text, ha="center", va="center", fontsize=8, style="italic")
    else:
        block(ax, 5.0, yy, 1.9, 0.3, text, colour, fontsize=7)
ax.legend(handles=[Patch(fc=FROZEN, ec="black", label=f"frozen: {n_backbone / 1e6:.1f} M numbers, never change"),
                   Patch(fc=ADAPTER, ec="black", label=f"trains: 12 adapters, {n_adapters:,} numbers"),
                   Patch(fc=HEAD, ec="black", label=f"trains: the head, {n_head:,} numbers")],
          loc="upper right", fontsize=8, frameon=False, bbox_to_anchor=(1.04, 1.0))
ax.set_xlim(-3.6, 6.4)
ax.set_ylim(-0.5, top + 1.6)
ax.axis("off")
ax.set_title(f"all-MiniLM-L6-v2 with Houlsby adapters: {100 * (n_adapters + n_head) / n_all:.1f}% of the "
             "numbers train", fontsize=11)
plt.show()
'''),
md(r'''
Grey is the pretrained encoder: embeddings and six layers, each a self-attention block and a
feed-forward block (each block's residual connection and LayerNorm are left out of the picture;
lesson 5 draws one layer in full). Orange are the adapters, two per layer, each after one of the two blocks: it
squeezes the block's 384-wide output through 64 numbers and adds the result back, so it can only
*adjust* what the frozen block says. Red is the head that turns the final [CLS] vector into two
scores. A freshly added adapter is exactly the identity (lesson 5 shows why), so before training the
model computes precisely what the pretrained encoder computed.

## 2. Five minutes end to end

**The data.** SST-2 (GLUE's Stanford Sentiment Treebank): snippets of film reviews labelled
negative (0) or positive (1). `load_task("sst2")` reads it from the folder `MINADAPT_DATA` names
(one holding `sst2/`), or else from minadapt's cache, downloading it there once. Set that folder in
the cell below if you have the data elsewhere: a notebook's kernel does not see an `export` typed in
a terminal after it started.
'''),
code(r'''
import os

# os.environ["MINADAPT_DATA"] = "/path/to/data"   # a folder holding sst2/ (train.tsv, dev.tsv)
print("MINADAPT_DATA =", os.environ.get("MINADAPT_DATA", "(not set: minadapt's cache, downloading SST-2 once)"))
'''),
md(r'''
We train on the first 3,200 training sentences and measure accuracy on the 872 sentences of the dev
set. The tokenizer turns sentences into token ids, and `bucketed_batches` cuts them into batches of
32 sentences of similar length (lesson 6 says why).
'''),
code(r'''
from minadapt.tasks import load_task
from minadapt.tasks.batching import bucketed_batches
from minadapt.train import evaluate

data = load_task("sst2")
sentences, labels = data["train"].texts, data["train"].labels
print(f"{len(sentences):,} training sentences, e.g. {sentences[3]!r} -> {labels[3]}; "
      f"{len(data['dev'].texts)} dev sentences")

SUBSET, STEPS = 3200, 100
train_ids = model.tokenizer.ids(sentences[:SUBSET])
train_len = np.array([len(s) for s in train_ids])
dev_ids = model.tokenizer.ids(data["dev"].texts)
batches = bucketed_batches(train_len, 32, np.random.default_rng(0))
print(f"{len(batches)} batches of 32; the first has shape {model.tokenizer.pad([train_ids[i] for i in batches[0]]).input_ids.shape}")

dev_before, _ = evaluate(model, dev_ids, data["dev"].labels, adapter="sst2")
print(f"dev accuracy before training: {dev_before:.1%} (the head is random: a coin toss)")
'''),
md(r'''
**Training.** One step is three library calls: `loss_and_grads` runs the model forward on a batch,
the cross-entropy loss, and the backward pass, and returns the gradients of exactly the trainable
names (adapters and head); `clip_grad_norm` caps their overall size; `AdamW.step` updates those
arrays in place, at this step's learning rate from `lr_schedule` (a short warm-up, then a linear
decay). The optimiser is given the trainable arrays only: it does not know the backbone exists.
'''),
code(r'''
import time

from minadapt import optim

opt = optim.AdamW({k: model.params[k] for k in trainable}, lr=2e-3)
frozen_name = "encoder.layer.3.intermediate.dense.weight"
frozen_before = model.params[frozen_name].copy()

losses, t0 = [], time.perf_counter()
for step in range(STEPS):
    idx = batches[step % len(batches)]
    b = model.tokenizer.pad([train_ids[i] for i in idx])  # ids, attention mask, token types
    loss, logits, grads = model.loss_and_grads(b.input_ids, b.attention_mask, b.token_type_ids,
                                               labels[idx], adapter="sst2", train=True)
    optim.clip_grad_norm(grads, max_norm=1.0)
    opt.step(model.params, grads, lr=optim.lr_schedule(step, STEPS, warmup_steps=6, base_lr=2e-3))
    losses.append(float(loss))
    if step % 20 == 0 or step == STEPS - 1:  # progress: a CPU step takes a second or more
        print(f"step {step:3d}/{STEPS}  loss {np.mean(losses[-20:]):.3f}  {time.perf_counter() - t0:4.0f} s", flush=True)
print(f"{STEPS} steps in {time.perf_counter() - t0:.0f} s")
print("the frozen backbone is bit-identical after training:",
      np.array_equal(model.params[frozen_name], frozen_before))

dev_after, _ = evaluate(model, dev_ids, data["dev"].labels, adapter="sst2")
print(f"dev accuracy: {dev_before:.1%} before, {dev_after:.1%} after {STEPS} steps")

fig, ax = plt.subplots(figsize=(8, 3.2))
ax.plot(losses, color="lightgrey", label="loss of each batch")
ax.plot(np.arange(9, STEPS), np.convolve(losses, np.ones(10) / 10, "valid"), color="C0",
        label="mean of the last 10")
ax.axhline(np.log(2), color="grey", ls=":", label="ln 2: a coin toss")
ax.set_xlabel("step (32 sentences each)")
ax.set_ylabel("cross-entropy")
ax.set_title("training the adapters and the head; the backbone stays frozen")
ax.legend(fontsize=8)
ax.grid(alpha=0.3)
plt.show()
'''),
md(r'''
**Predicting.** `model.logits` runs the model in evaluation mode (no dropout) with the task's
adapter, and a softmax turns the two logits into probabilities:
'''),
code(r'''
from minadapt.train import softmax

mine = ["a gripping , beautifully shot film with a terrific cast .",
        "the plot never comes together and the jokes fall flat ."]
probs = softmax(model.logits(*model.tokenizer.encode(mine), adapter="sst2"))
for s, p in zip(mine, probs):
    print(f"{['negative', 'positive'][int(p.argmax())]:8s} {p.max():6.1%}   {s}")
'''),
md(r'''
**Saving.** `save_adapter` writes the task's trainable arrays, and nothing else, to one safetensors
file, with the adapter's and head's settings and the backbone's checksum in its metadata, so that
`load_adapter` can later put them into a fresh copy of the same backbone (lesson 6 does).
'''),
code(r'''
import tempfile

path = model.save_adapter(pathlib.Path(tempfile.mkdtemp()) / "sst2.safetensors", adapter="sst2")
size, backbone_size = path.stat().st_size, (WEIGHTS / "model.safetensors").stat().st_size
print(f"{path.name}: {size / 1e6:.1f} MB; the backbone it plugs into: {backbone_size / 1e6:.0f} MB "
      f"({backbone_size / size:.0f}x larger, and shared by every task)")
'''),
md(r'''
That is the whole product: a training run of the length printed above on this CPU (yours will
differ), a file of the size printed
just above, and a frozen backbone shared by every task. (A hundred steps see 3,200 sentences, a twentieth of SST-2; the full run,
`minadapt train sst2`, is lesson 6.)

What ran inside `loss_and_grads` is the rest of this course: a forward pass through a dozen small
functions (lessons 2–5), then each function's backward in reverse order, stopping where nothing
below needs a gradient (lesson 7). The rest of this lesson is the pattern every one of those
functions follows, and how we know each backward is right. (The ops take their array module from
their input, so the same code runs on a GPU with CuPy: lesson 8.)

## 3. Shapes, and the dimension legend

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
`BertConfig` dataclass (`minadapt/config.py`), `model.cfg`:
'''),
code(r'''
cfg = model.cfg
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
## 4. Forward, backward, cache: a linear layer

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

## 5. Gradient checking with centred differences

Nudge one input element by $\pm h$ and Taylor-expand:

$$g(x \pm h e_i) = g(x) \pm h\,\partial_i g + \tfrac{h^2}{2}\,\partial_i^2 g \pm \tfrac{h^3}{6}\,\partial_i^3 g + \dots
\quad\Longrightarrow\quad
\frac{g(x+he_i)-g(x-he_i)}{2h} = \partial_i g + \tfrac{h^2}{6}\,\partial_i^3 g + O(h^4).$$

The even terms cancel, so the **truncation error** is $O(h^2)$ (a one-sided difference would be
$O(h)$). But each $g$ is computed with a relative rounding error of about $\varepsilon$ (machine
epsilon), and dividing by $2h$ amplifies it: a **rounding error** of about $\varepsilon |g| / h$.
Small $h$ is not automatically better; section 6 draws the trade-off.

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

## 6. float32 versus float64

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
argument. float32 halves the memory and the bytes every op moves, and a vector instruction does
twice as many float32 operations as float64 ones; for training a network seven correct digits are
plenty: lesson 4 shows the float32 model agreeing with
PyTorch's float64 numbers to a few millionths.

**Next:** lesson 2 derives the backward of the linear layer, GELU and LayerNorm, and checks each.
'''),
md(r'''
## Check your understanding

1. After training, how do you get the original pretrained model back?
2. Why are gradient checks done in float64, not float32?
3. What does a cache hold, and what does a frozen linear's cache leave out?

<details><summary>Answers</summary>

1. Drop the adapter and the head: the backbone's arrays are bit-identical to the checkpoint (the lesson checks one), because the optimiser was never given them.
2. A centred difference has a truncation error of order $h^2$ and a rounding error of order $\epsilon/h$. With float32's $\epsilon \approx 10^{-7}$ no $h$ makes both small; float64's $10^{-16}$ leaves room for agreement to many digits.
3. What the backward needs and cannot cheaply recompute. A frozen linear never computes $\bar W = \bar y^\top x$, so it does not keep $x$.
</details>
'''),
]
