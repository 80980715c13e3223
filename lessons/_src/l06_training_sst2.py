"""Lesson 6: training an adapter on SST-2: the loop by hand, AdamW, the schedule, bucketing, a real run."""
from .cells import SETUP, WEIGHTS, code, md

# OpenBLAS reads its settings once, when NumPy is first imported, so this runs before SETUP.
THREADS = code(r'''
# Before NumPy is imported: let OpenBLAS's idle worker threads go to sleep after a moment instead of
# spinning. On a machine with few cores, where other work competes for them, spinning workers can
# make every step several times slower (benchmarks/README.md has the measurements).
import os

if "OPENBLAS_THREAD_TIMEOUT" not in os.environ:  # a value you set yourself wins
    os.environ["OPENBLAS_THREAD_TIMEOUT"] = "1"
''')

CELLS = [
md(r'''
# Lesson 6 — Training an adapter on SST-2

Lessons 1–5 built a model whose every forward and backward we have checked. This lesson trains it.
The task is **SST-2** (GLUE's Stanford Sentiment Treebank, binary): is a snippet of a film review
positive or negative? The recipe is the one in `minadapt/train.py`:

$$\text{for each batch:}\quad \underbrace{\text{forward} \to \text{loss} \to \text{backward}}_{\texttt{model.loss\_and\_grads}}
\;\to\; \underbrace{\text{clip}}_{\texttt{optim.clip\_grad\_norm}} \;\to\; \underbrace{\text{AdamW}}_{\texttt{AdamW.step}}
\quad\text{at the rate}\quad \underbrace{\eta_t}_{\texttt{optim.lr\_schedule}}$$

1. the data, as `minadapt.tasks.sst2` finds and reads it;
2. a few training steps written out by hand, one library call per line;
3. AdamW's update, and what "decoupled" weight decay means;
4. the warm-up + linear-decay learning-rate schedule;
5. length-bucketed batches, and how much padding they save;
6. a real (short) training run with `minadapt.train.train`, and its curves;
7. the saved adapter file: what is in it and how big it is; reloading it; predicting.

Everything runs on a CPU in a couple of minutes, so the run is short: a few thousand sentences, not
the 67,349 of a full epoch.
'''),
THREADS,
SETUP,
WEIGHTS,
md(r'''
## 1. The data

`minadapt.tasks.sst2.find_sst2()` looks for the folder holding GLUE's `train.tsv` and `dev.tsv`: in
its argument if given, else in `$MINADAPT_DATA/sst2` when that environment variable is set (CI sets
it to the shared data folder), else in minadapt's cache, downloading GLUE's zip there when it is
missing. A place that was named and lacks the files is an error that lists where it looked, never a
silent download somewhere else. `load_sst2` reads both files with `read_tsv`, which checks every
line and names the file and line of anything malformed.
'''),
code(r'''
import json
import tempfile

import minadapt
from minadapt import gradcheck, optim
from minadapt.tasks.sst2 import bucketed_batches, find_sst2, load_sst2
from minadapt.train import TrainConfig, encode_split

DEFAULTS = TrainConfig()  # the settings `minadapt train sst2` uses when given none

folder = find_sst2()
data = load_sst2(folder)
print("SST-2 found in:", folder)
for split, (sentences, labels) in data.items():
    print(f"{split:5s}: {len(sentences):6,} sentences, {np.mean(labels):.1%} positive")
print()
for s, y in zip(data["train"][0][:4], data["train"][1][:4]):
    print(f"  {['negative', 'positive'][y]:8s}  {s}")
'''),
md(r'''
The training set is mostly *phrases* cut from the parse trees of longer sentences (hence
"hide new secretions from the parental units"); the dev set holds whole sentences, so dev sentences
are about twice as long. Both are close to balanced, so accuracy is a fair measure and 50% is chance.

The model sees token ids. `encode_split` tokenises a list of sentences without padding
(`[CLS] … [SEP]`, one array per sentence) and returns their lengths:
'''),
code(r'''
model = minadapt.load_model(WEIGHTS, dtype="float32")
train_ids, train_len = encode_split(model.tokenizer, data["train"][0])
dev_ids, dev_len = encode_split(model.tokenizer, data["dev"][0])
print(model.tokenizer.tokens(data["train"][0][1]))
print(f"tokens per sentence: train mean {train_len.mean():.1f} (max {train_len.max()}), "
      f"dev mean {dev_len.mean():.1f} (max {dev_len.max()})")
'''),
md(r'''
## 2. One training step, by hand

`minadapt.train.train` is a loop around four library calls. Here they are, one per line, on the real
model: add a bottleneck-16 adapter and a classification head (lesson 5), then take a few steps on
length-bucketed batches (section 5) of the first 4,800 training sentences.

* `model.loss_and_grads(ids, mask, types, labels, adapter="sst2", train=True)` runs the forward with dropout on
  (the last layer for [CLS] only), the mean cross-entropy, and the backward down to the lowest layer
  holding a trainable parameter. It returns the loss, the logits, and a dict of gradients whose keys
  are exactly `model.trainable_names("sst2")`: adapters and head, nothing of the frozen backbone.
* `optim.clip_grad_norm(grads, 1.0)` computes the *global* norm
  $\lVert g\rVert = \sqrt{\sum_{\text{arrays}}\sum_{\text{elements}} g^2}$ and, when it exceeds 1,
  scales *every* gradient by $1/\lVert g\rVert$: the step keeps its direction but cannot be huge
  because of one unusual batch. It returns the norm before clipping.
* `optim.lr_schedule(step, total, warmup, base_lr)` gives this step's learning rate (section 4).
* `AdamW.step(params, grads, lr)` updates the arrays of `params` in place (section 3). The optimiser
  is built on the trainable arrays only, so it keeps moments for those alone.
'''),
code(r'''
model.add_adapter("sst2", bottleneck=16)
model.add_classification_head("sst2", num_labels=2)
SUBSET, STEPS = 4800, 150  # the real run in section 6 uses the same numbers
BATCH, LR = DEFAULTS.batch_size, DEFAULTS.lr  # the defaults: batch size and peak learning rate
WARMUP = int(DEFAULTS.warmup * STEPS)  # the warm-up, a fraction of the steps
print(f"batch {BATCH}, peak learning rate {LR:g}, warm-up {DEFAULTS.warmup:.0%} of the steps = {WARMUP}")

trainable = model.trainable_names("sst2")
opt = optim.AdamW({k: model.params[k] for k in trainable}, lr=LR, weight_decay=DEFAULTS.weight_decay)
labels = data["train"][1]
batches = bucketed_batches(train_len[:SUBSET], BATCH, np.random.default_rng(0))

frozen_name = "encoder.layer.3.intermediate.dense.weight"
up_name = "encoder.layer.3.output.adapters.sst2.adapter_up.weight"
frozen_before, up_before = model.params[frozen_name].copy(), model.params[up_name].copy()
print(f"{'step':>4s} {'T':>3s} {'lr':>9s} {'loss':>7s} {'|g| before clip':>16s} {'max|change of W_up|':>20s}")
for step in range(4):
    idx = batches[step]
    b = model.tokenizer.pad([train_ids[i] for i in idx])  # pad to this batch's longest sentence
    lr = optim.lr_schedule(step, STEPS, WARMUP, LR)
    loss, logits, grads = model.loss_and_grads(b.input_ids, b.attention_mask, b.token_type_ids,
                                               labels[idx], adapter="sst2", train=True)
    norm = optim.clip_grad_norm(grads, max_norm=1.0)
    before = model.params[up_name].copy()
    opt.step(model.params, grads, lr)
    moved = np.abs(model.params[up_name] - before).max()
    print(f"{step:4d} {b.input_ids.shape[1]:3d} {lr:9.2e} {float(loss):7.4f} {norm:16.3f} {moved:20.2e}")

print("\ngradients for exactly the trainable names:", set(grads) == trainable,
      f"({len(grads)} arrays)")
print("frozen weight bit-identical after the steps:", np.array_equal(model.params[frozen_name], frozen_before))
print("adapter up-projection moved by up to:", float(np.abs(model.params[up_name] - up_before).max()))
'''),
md(r'''
What to look at:

* **Step 0 does not move anything** (the change of $W_\text{up}$ is 0): the schedule's rate at step 0 is exactly
  $0$, the first point of the warm-up ramp. That is HuggingFace's `get_linear_schedule_with_warmup`,
  which `lr_schedule` follows to the letter. The step is not wasted: AdamW's moment estimates $m$ and
  $v$ already take in the first gradient.
* The loss starts near $\ln 2 \approx 0.693$: the fresh head is a coin toss, and the adapters are the
  identity (lesson 5).
* `T` is the padded length of each batch: they differ because batches are bucketed by length.
* From step 1 on, the largest change of an element of $W_\text{up}$ is (almost exactly) that step's
  learning rate, although the gradients are tiny numbers: the next section explains why.
* The frozen backbone weight is *bit-identical*: it received no gradient, and the optimiser does not
  even know it exists.

**Reference ops and fast ops.** `load_model` gives a model that runs the fast ops of
`minadapt/fast/` (`ops="fast"`, the default; [ops.py](../minadapt/ops.py) bundles them). They
compute what the reference ops of `minadapt/nn/` compute, the ones lessons 2–5 derived and checked,
with less work: elementwise chains in cache-sized blocks and a float32 erf (lesson 2), the softmax
in place (lesson 3), contiguous $W^\top$ copies of frozen weights and the last layer for [CLS] only
(lesson 4), dropout masks from 16 random bits (lesson 2). The check: a model with
`ops="reference"`, given the same adapter and head values as the one just trained, must give the
same loss and the same gradients. (With dropout off: the two dropouts draw their masks differently.)
'''),
code(r'''
reference = minadapt.load_model(WEIGHTS, dtype="float32", ops="reference")
reference.add_adapter("sst2", bottleneck=16)
reference.add_classification_head("sst2", num_labels=2)
for k in trainable:
    reference.params[k][...] = model.params[k]  # the trained values
loss_f, _, grads_f = model.loss_and_grads(b.input_ids, b.attention_mask, b.token_type_ids, labels[idx],
                                          adapter="sst2", train=False)
loss_r, _, grads_r = reference.loss_and_grads(b.input_ids, b.attention_mask, b.token_type_ids, labels[idx],
                                              adapter="sst2", train=False)
worst = max(gradcheck.rel_error(grads_f[k], grads_r[k]) for k in trainable)
print(f"loss: fast {float(loss_f):.6f}, reference {float(loss_r):.6f}; "
      f"largest rel_error over the {len(trainable)} gradients: {worst:.1e} (float32 rounding)")
assert abs(float(loss_f) - float(loss_r)) < 1e-5 and worst < 1e-3
del reference
'''),
md(r'''
## 3. AdamW

For a parameter $p$ with gradient $g_t$ at its $t$-th step, `optim.AdamW` computes (as
`torch.optim.AdamW` does, with $\beta_1 = 0.9$, $\beta_2 = 0.999$, $\epsilon = 10^{-8}$, weight
decay $\lambda = 0.01$):

$$p \leftarrow p - \eta_t\,\lambda\,p \qquad\text{(decoupled weight decay)}$$
$$m_t = \beta_1 m_{t-1} + (1-\beta_1)\,g_t, \qquad v_t = \beta_2 v_{t-1} + (1-\beta_2)\,g_t^2$$
$$\hat m_t = \frac{m_t}{1-\beta_1^t}, \qquad \hat v_t = \frac{v_t}{1-\beta_2^t}, \qquad
p \leftarrow p - \eta_t\,\frac{\hat m_t}{\sqrt{\hat v_t} + \epsilon}$$

* $m$ is a running mean of the gradient (momentum), $v$ a running mean of its square, both per element.
* $m$ and $v$ start at zero, which biases them towards zero early on; dividing by $1-\beta^t$ undoes
  exactly that bias (for a constant gradient, $\hat m_t = g$ at every $t$).
* The step is $\eta\,\hat m/\sqrt{\hat v}$: a *normalised* gradient. Its size is about $\eta$ whatever
  the scale of $g$: at $t = 1$, $\hat m_1/\sqrt{\hat v_1} = g/|g| = \pm 1$ exactly (up to $\epsilon$).
  That is why the learning rate of Adam is a step size in parameter units.
* **Decoupled decay.** Plain L2 regularisation adds $\lambda p$ to $g$; Adam would then divide it by
  $\sqrt{\hat v}$ like the rest of the gradient, so a weight with large gradients would hardly be
  decayed and one with tiny gradients decayed hard. AdamW (Loshchilov & Hutter, 2019) instead shrinks
  every weight by the same factor $1 - \eta\lambda$, outside the adaptive step. Biases and LayerNorm
  parameters are not decayed at all (`optim.default_no_decay`), BERT's recipe.

Both claims, on a toy problem with three parameters: gradients that differ by a factor of $10^6$
give the same first step, and a weight with zero gradient is still pulled towards zero.
'''),
code(r'''
toy = {"w": np.array([1.0, 1.0, 1.0]), "bias": np.array([1.0])}
toy_opt = optim.AdamW({k: v.copy() for k, v in toy.items()}, lr=0.1, weight_decay=0.5)
params = {k: v.copy() for k, v in toy.items()}
toy_opt.step(params, {"w": np.array([1e-4, 100.0, 0.0]), "bias": np.array([0.0])})
print("gradient          [1e-4, 100, 0]")
print("change in w      ", params["w"] - toy["w"], " = -lr*wd*w - lr*sign(g)")
print("change in bias   ", params["bias"] - toy["bias"], "(no decay for biases, zero gradient)")
print("no_decay('...adapter_up.bias') =", optim.default_no_decay("encoder.layer.0.output.adapters.sst2.adapter_up.bias"))
'''),
md(r'''
The first two elements move by $-\eta\lambda w - \eta = -0.05 - 0.1 = -0.15$ although their gradients
differ by $10^6$; the third, with no gradient at all, still decays by $\eta\lambda w = 0.05$.

## 4. The learning-rate schedule: warm-up, then linear decay

$$\eta_t = \eta_\text{peak}\cdot\begin{cases} t / t_w & t < t_w \quad\text{(warm-up)}\\
\max\!\big(0,\ (T - t)/(T - t_w)\big) & t \ge t_w \quad\text{(linear decay)}\end{cases}$$

with $T$ the total number of steps and $t_w$ the warm-up steps (the fraction `TrainConfig.warmup` of $T$).
**Why warm up:** in the first steps $\hat v$ rests on one or two gradients, so the normalised step
$\hat m/\sqrt{\hat v}$ is about $\pm 1$ in *every* element, however noisy; small steps until the
estimates settle keep an unlucky first batch from throwing the fresh head far off. **Why decay:**
late in training, a smaller step averages out the noise of individual batches instead of bouncing
around the minimum. Below, the schedule of this lesson's short run and that of the default run of
`minadapt train sst2`, its length and peak rate read from `TrainConfig()`.
'''),
code(r'''
from minadapt.selection import validation_size

# steps in one pass over the training set, less the slice the run holds out to choose its step
EPOCH = int(np.ceil((len(train_ids) - validation_size(len(train_ids))) / DEFAULTS.batch_size))
FULL = DEFAULTS.total_steps(EPOCH)  # the default run: DEFAULT_EPOCHS passes (at least DEFAULT_MIN_STEPS)
print(f"default run: {DEFAULTS.DEFAULT_EPOCHS:g} epochs of {EPOCH:,} steps = {FULL:,} steps, peak {DEFAULTS.lr:g}")
fig, axes = plt.subplots(1, 2, figsize=(12, 3.4))
for ax, (total, peak, title) in zip(axes, ((STEPS, LR, f"this lesson: {STEPS} steps, peak {LR:g}"),
                                            (FULL, DEFAULTS.lr, f"the default run: {FULL:,} steps, peak {DEFAULTS.lr:g}"))):
    warm = int(DEFAULTS.warmup * total)
    steps = np.arange(total)
    ax.plot(steps, [optim.lr_schedule(s, total, warm, peak) for s in steps])
    ax.axvline(warm, color="grey", ls=":", label=f"end of warm-up (step {warm})")
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
plt.tight_layout()
plt.show()
'''),
md(r'''
## 5. Length-bucketed batches

A batch is a rectangle: every sentence is padded to the batch's longest one, and the encoder pays
for every padded token (linearly in the dense layers, quadratically in attention). SST-2's
training sentences are 3 to 66 tokens long, most of them short, so a batch drawn at random
almost always contains one long sentence and is mostly padding.

`bucketed_batches(lengths, batch_size, rng, pool_batches=200)` shuffles all indices, cuts them into
pools of 200 batches, sorts each pool by length and cuts it into batches, then shuffles the batches.
Each batch holds sentences of similar length, while which sentences share a batch, and the order of
the batches, are still random. `pool_batches=1` is the plain random split. Over one epoch of the full
training set:
'''),
code(r'''
rng = np.random.default_rng(0)
kinds = {"random (pool_batches=1)": bucketed_batches(train_len, BATCH, rng, pool_batches=1),
         "bucketed (pool_batches=200)": bucketed_batches(train_len, BATCH, rng)}

fig, axes = plt.subplots(1, 2, figsize=(13, 3.8))
for (name, batches_), colour in zip(kinds.items(), ("C3", "C0")):
    padded = np.array([train_len[b].max() for b in batches_])  # each batch's T
    rows = np.array([len(b) for b in batches_])
    waste = 1 - train_len.sum() / (padded * rows).sum()
    label = f"{name}: mean T {padded.mean():.1f}, {waste:.0%} padding"
    axes[0].plot(padded[:150], ".-", color=colour, lw=0.7, ms=4, label=label)
    axes[1].hist(padded, bins=np.arange(0, 70, 2), color=colour, alpha=0.6, label=name)
    print(label)
print(f"mean real length {train_len.mean():.1f} tokens; a random batch pads to "
      f"{np.mean([train_len[b].max() for b in kinds['random (pool_batches=1)']]) / train_len.mean():.1f}x that")
axes[0].set_xlabel("batch, in epoch order (the first 150)")
axes[0].set_ylabel("padded length T")
axes[0].set_title("each batch's padded length")
axes[0].legend(fontsize=8)
axes[1].set_xlabel("padded length T")
axes[1].set_ylabel("batches")
axes[1].set_title(f"all {len(padded):,} batches of one epoch")
axes[1].legend(fontsize=8)
for ax in axes:
    ax.grid(alpha=0.3)
plt.tight_layout()
plt.show()
'''),
md(r'''
What to look at: random batches pad to around 40 tokens because nearly every one of them contains
some long sentence; two thirds of what the encoder would compute is padding. Bucketed batches track
the length distribution itself (most batches are short, a few long), and padding drops to about
1%. The pool's size is the knob: the larger the pool, the nearer a sentence's neighbours in length
(pools of 50 batches leave 4.6% padding, 200 leave 1.25%), while sentences still meet at random in
pools of 6,400. Since a step's cost grows at least linearly with $T$, an epoch becomes roughly
three times cheaper, for free. (Evaluation, `train.evaluate`, goes one step further and sorts the whole dev set
by length: it needs no randomness.)

## 6. A real training run

`minadapt.train.train(TrainConfig(...), model=..., data=...)` runs exactly the loop of section 2,
plus what a real run needs: dev-set evaluation every `eval_every` steps, a checkpoint (parameters,
AdamW moments, step, dropout generator state) at each evaluation so that `--resume` can continue,
a line of `metrics.jsonl` every `log_every` steps, a plot, and the adapter file at the end.
`train_subset` keeps the first $N$ training sentences, and `max_steps` overrides the epoch count.
Here: 4,800 sentences, 150 steps of 32 (one pass), bottleneck 16, the default peak learning rate,
into a temporary folder. `train` adds the adapter and head to the fresh model it is given.
'''),
code(r'''
from minadapt.train import train

out = pathlib.Path(tempfile.mkdtemp(prefix="minadapt-lesson6-"))
cfg = TrainConfig(out=str(out), options={"bottleneck": 16}, lr=LR, train_subset=SUBSET, max_steps=STEPS,
                  eval_every=50, log_every=10, seed=0)
trained = minadapt.load_model(WEIGHTS, dtype="float32")
result = train(cfg, model=trained, data=data, progress=False)
print(f"dev accuracy after {result.steps} steps: {result.dev_accuracy:.2%}")
print("files written:", sorted(p.name for p in out.iterdir()))
'''),
md(r'''
`metrics.jsonl` holds one JSON object per line: `"train"` lines with the mean loss over the last
`log_every` steps, the rate, the gradient norm (before clipping) and the throughput, and `"eval"`
lines with the dev accuracy. Plot them ourselves:
'''),
code(r'''
history = [json.loads(line) for line in result.metrics_path.read_text().splitlines()]
tr = [h for h in history if h["kind"] == "train"]
ev = [h for h in history if h["kind"] == "eval"]
print("a train line:", tr[-1])
print("an eval line:", ev[-1])

fig, axes = plt.subplots(1, 3, figsize=(15, 3.6))
axes[0].plot([h["step"] for h in tr], [h["loss"] for h in tr], "o-", ms=3)
axes[0].axhline(np.log(2), color="grey", ls=":", label="ln 2 (a coin toss)")
axes[0].set_title("training loss (mean over 10 steps)")
axes[1].plot([h["step"] for h in ev], [100 * h["dev_accuracy"] for h in ev], "o-", color="C3")
axes[1].axhline(50, color="grey", ls=":", label="chance")
axes[1].set_title("dev accuracy (%), 872 sentences")
axes[2].plot([h["step"] for h in tr], [h["grad_norm"] for h in tr], "o-", ms=3, color="C2",
             label="gradient norm before clipping")
axes[2].axhline(1.0, color="k", ls="--", lw=0.8, label="max_grad_norm = 1")
axes[2].set_title("global gradient norm (at each logged step)")
for ax in axes:
    ax.set_xlabel("step")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
plt.tight_layout()
plt.show()
'''),
md(r'''
What to look at (the run is seeded, so it gives the same numbers each time on one machine; on
another, rounding in a different BLAS can shift them a little):

* The loss leaves $\ln 2$ within the first few dozen steps and then falls slowly and noisily: each
  point is a mean over only 10 batches of 32.
* Dev accuracy (the middle panel; its last point is the eval line printed above the figure) rises
  over the run and is still rising at the end: 150 steps see 4,800 sentences, 7% of one epoch. (Each
  evaluation runs all 872 dev sentences, as much work as about 20 training steps, so this run
  evaluates only three times; one dev sentence is 0.11%.)
* The gradient norm (logged every 10th step) is mostly below the threshold of 1 and sometimes
  above it: those steps are the ones clipping scales down, so that one unusual batch cannot throw
  the adapters far.

`train` also drew this plot itself, with matplotlib's file-only backend, into `training.png` in the
run folder, refreshed at each evaluation:
'''),
code(r'''
from IPython.display import Image, display

display(Image(filename=str(result.plot_path), width=520))
'''),
md(r'''
## 7. The adapter file

At the end, `train` calls `model.save_adapter(out / "adapter.safetensors", ...)`: the trainable
parameters (adapters and head) in a safetensors file (lesson 4), with the adapter's and head's
configs, the backbone's name and SHA-256, and the run's settings and accuracy in its metadata.
How big is it, and what are the bytes?
'''),
code(r'''
from minadapt.io.weights import read_safetensors

tensors, meta = read_safetensors(result.adapter_path)
size = result.adapter_path.stat().st_size
groups = {"adapters": [k for k in tensors if ".adapters." in k], "head": [k for k in tensors if k.startswith("heads.")]}
n_total = sum(t.size for t in tensors.values())
print(f"{result.adapter_path.name}: {size:,} bytes, {len(tensors)} arrays, {n_total:,} numbers, "
      f"dtype {sorted({str(t.dtype) for t in tensors.values()})}")
for name, keys in groups.items():
    n = sum(tensors[k].size for k in keys)
    print(f"  {name:8s} {len(keys):2d} arrays {n:9,} numbers x 4 bytes = {4 * n:9,} bytes ({n / n_total:.0%})")
w1 = "heads.sst2.1.weight"
print(f"  of which the head's {tensors[w1].shape} dense layer alone: {tensors[w1].size:,} numbers "
      f"({tensors[w1].size / n_total:.0%} of the file)")
print(f"  header (JSON: names, shapes, offsets, metadata): {size - 4 * n_total:,} bytes")
print("metadata keys:", sorted(meta))
print("adapter:", meta["adapter"], "| head:", meta["head"])
print("backbone:", json.loads(meta["backbone"])["name"], json.loads(meta["backbone"])["sha256"][:16] + "...")
print(f"the backbone it needs: {WEIGHTS.joinpath('model.safetensors').stat().st_size / 1e6:.1f} MB, "
      f"{WEIGHTS.joinpath('model.safetensors').stat().st_size / size:.0f}x the adapter file")
'''),
md(r'''
A task costs about 1.2 MB here, against 90 MB for a copy of the model. Each bottleneck-16 adapter
has $2\cdot 16\cdot 384 + 16 + 384 = 12{,}688$ numbers, twelve of them make 152,256; the head has
$384\cdot 384 + 384 + 2\cdot 384 + 2 = 148{,}610$, almost all of it in the $384\times384$ dense layer
on [CLS]. So at bottleneck 16 the *head* is half the file: shrinking the adapters further would
hardly shrink it. (At the default bottleneck 64 the adapters are 595,200 numbers and the head a
fifth.) Everything is stored as float32, 4 bytes a number; the JSON header is a few kilobytes.

## 8. Reload it into a fresh model, and predict

`load_adapter` reads the file, checks that it was made for *this* backbone (the SHA-256 of
`model.safetensors`) and that its keys and shapes match its own config, then adds the adapter and
head exactly as they were saved. The fresh model must give the trained model's logits, bit for bit.
'''),
code(r'''
fresh = minadapt.load_model(WEIGHTS, dtype="float32")
name = fresh.load_adapter(result.adapter_path)  # returns the task's name, from the file
print("loaded:", name)
print("adapter:", fresh.adapters[name])
print("head:   ", fresh.heads[name])
batch = fresh.tokenizer.encode(data["dev"][0][:64])
same = np.array_equal(fresh.logits(*batch, adapter=name), trained.logits(*batch, adapter=name))
print("logits of the reloaded model == logits of the trained one, on 64 dev sentences:", same)
'''),
md(r'''
Predicting is `model.logits` (evaluation mode: no dropout, the last layer for [CLS] only) and a
softmax, $p_c = e^{z_c}/\sum_k e^{z_k}$. Label 1 is positive. Try your own sentences: they should be
lower-case, as SST-2 is (the tokenizer lower-cases anyway).
'''),
code(r'''
from minadapt.train import softmax

mine = ["a gripping , beautifully shot film with a terrific cast .",
        "the plot never comes together and the jokes fall flat .",
        "not bad at all .",
        "i wanted to love it , but it is just dull .",
        "an utterly forgettable sequel ."]
probs = softmax(fresh.logits(*fresh.tokenizer.encode(mine), adapter=name))
for s, p in zip(mine, probs):
    label = int(p.argmax())
    print(f"{['negative', 'positive'][label]:8s} {p[label]:6.1%}   {s}")
'''),
md(r'''
With 150 steps the model is confident about plainly worded sentences. "not bad at all" is a
**wrong** prediction (it is praise, and the run calls it negative): a double negative is where a
short run goes wrong, and its probability is the lowest of the five.

## 9. The full run

The command-line version of this lesson's run, over the whole training set and with the defaults
of `TrainConfig` (printed below):

    minadapt train sst2                       # --data-dir DIR or $MINADAPT_DATA; weights fetched if missing
    minadapt train sst2 --out runs/sst2 --resume            # continue after Ctrl-C, to the same numbers
    minadapt eval --adapter runs/sst2/adapter.safetensors   # dev accuracy of a saved adapter

Seeing many times the sentences of this run, it reaches a clearly higher dev accuracy than this
150-step run; the README gives the measured figure with its command and machine.
'''),
code(r'''
print(f"defaults: bottleneck {DEFAULTS.method_config().bottleneck}, {DEFAULTS.DEFAULT_EPOCHS:g} epochs ({FULL:,} steps of "
      f"{DEFAULTS.batch_size}), peak rate {DEFAULTS.lr:g}, evaluation and checkpoint every {DEFAULTS.eval_interval(FULL)} steps")
print(f"that is {FULL * DEFAULTS.batch_size / (STEPS * BATCH):.0f}x the sentences this lesson's run saw")
'''),
md(r'''
**Next:** lesson 7 counts what the frozen backbone saves in such a step (FLOPs and memory),
and compares the adapter with a linear probe on frozen features.
'''),
md(r'''
## Check your understanding

1. What does clipping the gradient norm protect against?
2. Why batch sentences of similar length together?
3. Why do biases and LayerNorm parameters get no weight decay?

<details><summary>Answers</summary>

1. One unusual batch with a very large gradient throwing the adapters far in one step; clipped steps keep the direction and shrink the length.
2. Each batch is padded to its longest sentence, and the cost grows with that padded length; similar lengths mean little padding.
3. Decay pulls weights towards zero to keep the function simple; a bias or a LayerNorm gain at zero is not "simpler", just different (a gain of 0 switches a unit off). BERT's recipe, and HuggingFace's, exempt them.
</details>
'''),
]
