"""Lesson 7: what the frozen backbone buys: FLOPs, memory, [CLS]-only, shards, PyTorch, a linear probe."""
from .cells import BENCH_COMMAND, SETUP, WEIGHTS, code, md
from .l06_training_sst2 import THREADS

CELLS = [
md(r'''
# Lesson 7 — What the frozen backbone buys

Adapters were introduced to save *storage*: one small file per task instead of a copy of the model
(lesson 6 saved 1.2 MB against 91 MB). A frozen backbone saves *work* as well, and this lesson
measures where:

1. **No $\bar W$ for frozen weights.** The backward of a frozen linear computes $\bar x$ only:
   FLOPs counted, against full fine-tuning.
2. **No backward below the lowest adapter.** Nothing below the lowest trainable parameter needs a
   gradient, so the backward stops there.
3. **[CLS] only in the last layer.** The head reads one vector per sentence.
4. **Memory.** What a frozen linear does not need to keep for its backward.
5. **Every core at once.** Not a frozen-backbone trick, but what makes the rest pay on a CPU: the
   batch is cut into shards that run side by side, one per core (`parallel.DataParallel`).
6. **Against PyTorch**, from the benchmark results the repository commits.
7. **And against doing even less**: a linear probe on frozen [CLS] features, with no backward through
   the encoder at all. Is the adapter worth its cost?

**Counts, not timings.** Sections 1–4 count the work (FLOPs, bytes) from the shapes and the code
paths: the numbers are the same on every machine. What a step costs in seconds depends on the
machine, so the one measured comparison (section 6, against PyTorch) is read from the benchmark
result the repository commits, which names the command and the machine that made it.
'''),
THREADS,
SETUP,
WEIGHTS,
code(r'''
import json
import tempfile

import minadapt
from minadapt import bert
from minadapt.nn import linear


def random_batch(B, L, vocab_size, seed=0):
    """B full-length sentences of L random word ids ([CLS] first), their mask and random labels."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1000, vocab_size, (B, L))
    ids[:, 0] = 101  # [CLS]
    return ids, np.ones((B, L), np.int64), rng.integers(0, 2, B)
'''),
md(r'''
## 1. A frozen linear needs no $\bar W$

A linear layer $y = xW^\top$ with $x$ of shape $(N, D)$ and $W$ of shape $(O, D)$ costs three matrix
products of the same size, $2NDO$ FLOPs each (one multiply and one add per term):

| | product | FLOPs | needed when |
|---|---|---|---|
| forward | $y = xW^\top$ | $2NDO$ | always |
| backward, input | $\bar x = \bar y\,W$ | $2NDO$ | something below trains |
| backward, weight | $\bar W = \bar y^\top x$ | $2NDO$ | **$W$ trains** |

A frozen layer skips the third: a third of its forward-plus-backward work. In adapter training
*every* backbone linear is frozen (Q|K|V, attention output, both FFN matrices), so only the small
adapters and the head pay for $\bar W$.

Counting them for one step takes only the shapes. Per sentence of $L$ tokens, one layer's matrix
products in the forward are: Q|K|V $6LH^2$, the attention output $2LH^2$, the FFN $4LHF$, the two
adapters $8LHm$, and attention's two batched products ($q k^\top$ and $a v$) $4L^2H$. The
backward's $\bar x$ products have the forward's sizes, except attention's, which has four ($\bar a$,
$\bar v$, $\bar q$, $\bar k$): $8L^2H$. Adapter training adds $\bar W$ for the adapters and the head
only, and in layer 0 stops right after the attention-output adapter: nothing below it trains, so
layer 0's attention output, attention and Q|K|V need no $\bar x$ (`bert.after_attention_backward`,
lesson 4). Full fine-tuning adds a $\bar W$ for every backbone linear (the same FLOPs as its
forward) and all of layer 0's $\bar x$, to reach the embeddings. The count below takes every row of
every layer; section 3 subtracts what the [CLS]-only last layer saves. Two configurations: the
committed benchmark's (32 sentences of 64 tokens, bottleneck 64), and the batch this lesson runs
(16 sentences of 32 tokens, bottleneck 16).
'''),
code(r'''
model = minadapt.load_model(WEIGHTS, dtype="float32")
cfg = model.cfg
B, L = 16, 32  # the batch this lesson runs: 16 sentences of 32 tokens
ids, mask, labels = random_batch(B, L, cfg.vocab_size)  # random words, every row full length


def step_flops_by_part(B, L, m, k=None, full=False):
    """Matrix-product FLOPs of one training step, split into forward, backward dx and backward dW.
    Adapters in the top k layers (default: every layer) and the head train; full=True: every weight
    trains. Every row of every layer (no [CLS]-only last layer: section 3)."""
    H, F, n_layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    k = n_layers if k is None else k
    linears = 8 * L * H * H + 4 * L * H * F  # Q|K|V 6LH^2, attention output 2LH^2, FFN in and out 2LHF each
    attn = 4 * L * L * H  # q k^T and a v over all heads; the backward has four such products
    adapters = 8 * L * H * m  # two adapters, down and up
    head = 2 * H * H + 2 * H * 2  # dense H -> H, then H -> 2 labels, on [CLS]
    layer_dx = linears + 2 * attn + adapters  # every input gradient of one layer
    parts = {"forward": n_layers * (linears + attn + adapters) + head}
    if full:  # every weight trains, down into the embeddings
        parts["backward dx"] = n_layers * layer_dx + head
        parts["backward dW"] = n_layers * (linears + adapters) + head  # dW = dy^T x: the forward's FLOPs
    elif k == 0:  # the head alone: no backward through the encoder
        parts["backward dx"], parts["backward dW"] = 0, head
    else:  # the top k - 1 layers in full; the lowest trainable one stops after its first adapter
        lowest = 4 * L * H * F + adapters  # the FFN's dx and the two adapters' dx
        parts["backward dx"] = (k - 1) * layer_dx + lowest + head
        parts["backward dW"] = k * adapters + head
    return {part: B * flops for part, flops in parts.items()}


for (b_, l_, m_) in ((32, 64, 64), (B, L, 16)):
    ours, full = step_flops_by_part(b_, l_, m_), step_flops_by_part(b_, l_, m_, full=True)
    print(f"B={b_}, L={l_}, bottleneck {m_}:")
    for name, parts in (("adapter training", ours), ("full fine-tuning", full)):
        print(f"  {name:17s} " + "  ".join(f"{k} {v / 1e9:6.2f}" for k, v in parts.items())
              + f"   total {sum(parts.values()) / 1e9:6.2f} GFLOP = {sum(parts.values()) / parts['forward']:.2f}"
              + " x the forward")
    print(f"  full / adapters = {sum(full.values()) / sum(ours.values()):.2f}")
'''),
md(r'''
So an adapter step does about $2\times$ the forward's FLOPs, full fine-tuning $3\times$: the
familiar "backward costs twice the forward" is the full fine-tuning figure. In the library, a
second model trains *everything*: `full.trainable_names("sst2").update(full.params)` adds every
name to the task's trainable set. Two rules of the library show up here:

* Q, K and V are one fused matmul (lesson 4), so they train together or not at all: a trainable set
  holding only the query weight is refused with a clear error;
* with the embedding tables trainable, `lowest_trainable_layer("sst2")` returns $-1$: the backward goes on
  through layer 0 into the embeddings.
'''),
code(r'''
model.add_adapter("sst2", bottleneck=16)
model.add_classification_head("sst2", num_labels=2)

full = minadapt.load_model(WEIGHTS, dtype="float32")
full.add_adapter("sst2", bottleneck=16)
full.add_classification_head("sst2", num_labels=2)
full_trainable = full.trainable_names("sst2")  # the set itself: adding to it makes more trainable
full_trainable.add("encoder.layer.2.attention.self.query.weight")
try:
    full.loss_and_grads(ids[:1, :4], mask[:1, :4], None, labels[:1], adapter="sst2")
except ValueError as e:
    print("only the query trainable -> ValueError:", e)
full_trainable.update(full.params)  # now everything: full fine-tuning
n_full = sum(full.params[k].size for k in full_trainable)
n_ad = sum(model.params[k].size for k in model.trainable_names("sst2"))
print(f"adapter model: {len(model.trainable_names('sst2'))} trainable arrays, {n_ad:,} numbers; "
      f"lowest_trainable_layer = {model.lowest_trainable_layer('sst2')}")
print(f"full model:    {len(full_trainable)} trainable arrays, {n_full:,} numbers; "
      f"lowest_trainable_layer = {full.lowest_trainable_layer('sst2')}")
'''),
code(r'''
ours, whole = step_flops_by_part(B, L, 16), step_flops_by_part(B, L, 16, full=True)
fig, ax = plt.subplots(figsize=(6, 3.8))
colours = {"forward": "#9ecae1", "backward dx": "#3182bd", "backward dW": "#e6550d"}
for j, (name, parts) in enumerate((("adapters", ours), ("full fine-tuning", whole))):
    bottom = 0
    for part, flops in parts.items():
        ax.bar(j, flops / 1e9, bottom=bottom, color=colours[part], label=part if j == 0 else None)
        bottom += flops / 1e9
    ax.text(j, bottom, f"{bottom:.1f}", ha="center", va="bottom")
ax.set_xticks([0, 1], ["adapters", "full fine-tuning"])
ax.set_ylabel("GFLOP per step")
ax.set_title(f"matrix-product FLOPs of one step (B={B}, L={L})")
ax.legend(fontsize=8)
ax.grid(alpha=0.3, axis="y")
plt.tight_layout()
plt.show()
'''),
md(r'''
What to look at: the orange $\bar W$ block is almost absent for adapters and as large as the forward
for full fine-tuning. A count of matrix products is not a time. The rest of a step (GELU, softmax,
LayerNorm and dropout) costs the same both ways; full fine-tuning also scatters a gradient into the
$30522 \times 384$ word-embedding table (47 MB, mostly zeros, every step), which no FLOP count sees;
and after `loss_and_grads` it runs AdamW over 22.9 million numbers instead of 0.3 million (section 4
counts their memory). Section 6 reads measured step times from the committed benchmark.

## 2. No backward below the lowest adapter

`encoder_backward(dh, caches, run, lowest)` walks the layers from the top down to `lowest`, the
lowest layer holding a trainable parameter (`model.lowest_trainable_layer(name)`), and inside that layer
stops as soon as nothing below owes a gradient. With adapters in every layer that is layer 0, and the
whole backward runs (minus the part of layer 0 below its first adapter). With adapters only in the
top $k$ layers, the backward is cut short. We emulate that on the same model by taking the lower layers'
adapter names out of the task's trainable set (their adapters still run in the forward, as the
identity-ish maps they are at this point); with no adapter name left, only the head trains,
`lowest_trainable_layer` is `None`, and there is no encoder backward at all.
'''),
code(r'''
trainable = model.trainable_names("sst2")  # the set itself, changed in place below
all_trainable = set(trainable)


def use_top_k(k):
    """Make the trainable set hold adapters only in the top k layers (k = 0: the head alone)."""
    first = cfg.num_hidden_layers - k
    trainable.clear()
    trainable.update(n for n in all_trainable if ".adapters." not in n or int(n.split(".")[2]) >= first)


ks = list(range(cfg.num_hidden_layers + 1))
lowest, sweep = {}, {}
for k in ks:
    use_top_k(k)
    lowest[k] = model.lowest_trainable_layer("sst2")
    _, _, grads = model.loss_and_grads(ids[:2, :8], mask[:2, :8], None, labels[:2], adapter="sst2")
    assert set(grads) == trainable  # gradients for exactly the names left in the set
    sweep[k] = step_flops_by_part(B, L, 16, k=k)
    print(f"adapters in the top {k} layers: lowest_trainable_layer = {str(lowest[k]):4s} "
          f"{len(grads):2d} gradients; backward {(sweep[k]['backward dx'] + sweep[k]['backward dW']) / 1e9:5.2f} GFLOP")
use_top_k(cfg.num_hidden_layers)
assert trainable == all_trainable

fig, ax = plt.subplots(figsize=(8, 3.8))
bottom = np.zeros(len(ks))
for part in ("forward", "backward dx", "backward dW"):
    values = np.array([sweep[k][part] / 1e9 for k in ks])
    ax.bar(ks, values, bottom=bottom, color=colours[part], label=part)
    bottom += values
ax.axhline(sum(whole.values()) / 1e9, color="#756bb1", ls="--", label="full fine-tuning (section 1)")
ax.set_xticks(ks, [f"{k}\n(lowest {lowest[k]})" for k in ks])
ax.set_xlabel("layers with a trainable adapter (counted from the top)")
ax.set_ylabel("GFLOP per step")
ax.set_title(f"the backward stops at the lowest trainable layer (B={B}, L={L}, every row)")
ax.legend(fontsize=8, loc="upper left")
ax.set_ylim(0, 1.25 * sum(whole.values()) / 1e9)
ax.grid(alpha=0.3, axis="y")
plt.tight_layout()
plt.show()
'''),
md(r'''
What to look at: the forward is the same for every $k$ (the adapters run either way); the backward
grows by one layer's worth for each layer it has to cross, from nothing (head only: a forward with
dropout and a tiny head backward) to the full adapter step; full fine-tuning sits above all of them.
The first step is smaller than the others: the lowest trainable layer stops after its first adapter.
Houlsby-style adapters sit in every layer, so adapter training pays for the whole backward; variants
that put adapters only in the upper layers trade some accuracy for exactly this saving.

## 3. The last layer for [CLS] only

The head reads the final hidden state of [CLS] alone, so the last layer only needs that one row of
its output. The query, the attention output, the FFN and the adapters are needed for one row per
sentence. The reference ops compute every row and the head reads one. The fast ops (the default)
compute the one row: `bert.encoder_forward(..., cls_only=True)` runs the last layer through
[fast/cls_layer.py](../minadapt/fast/cls_layer.py) (used by `model.logits` and
`model.loss_and_grads`), and returns `(B, 1, H)`. `model.encode` runs the full last layer. The
fast [CLS] row must agree with the full layer's, and with the reference model's
(`ops="reference"`, the same adapter):
'''),
code(r'''
run = bert.Run(ops=model.ops, adapter=model.adapters["sst2"])  # evaluation mode, with the sst2 adapter
h_all, _ = bert.encoder_forward(model.params, model.qkv, cfg, ids, mask, None, run)
h_cls, _ = bert.encoder_forward(model.params, model.qkv, cfg, ids, mask, None, run, cls_only=True)
reference = minadapt.load_model(WEIGHTS, dtype="float32", ops="reference").add_adapter("sst2", bottleneck=16)
h_ref = reference.encode(ids, mask, adapter="sst2")  # the same seed: the same adapter weights
print("full last layer:", h_all.shape, "| cls_only:", h_cls.shape)
print(f"fast cls_only vs the reference model, on [CLS]: max |difference| "
      f"{np.abs(h_ref[:, 0] - h_cls[:, 0]).max():.1e}")
assert np.allclose(h_cls[:, 0], h_ref[:, 0], atol=1e-4)
print(f"max |difference| on [CLS]: {np.abs(h_all[:, 0] - h_cls[:, 0]).max():.1e} "
      f"(values of size {np.abs(h_all[:, 0]).mean():.2f}); model.encode gives the full one: "
      f"{model.encode(ids, mask, adapter='sst2').shape}")
'''),
md(r'''
The two agree to float32 rounding (the printed differences, against values of the size printed
beside them: a few parts in $10^{6}$, near float32's resolution of $6\cdot10^{-8}$ per operation
accumulated over six layers; the products add their terms in a different order, so they are not
bit-identical).

The [CLS] query still attends to every token, so it seems to need every token's key and value,
$k = x W_k^\top + b_k$ and $v = x W_v^\top + b_v$: $4LH^2$ FLOPs a sentence for what one query
reads. But matrix products associate. With $q'_h = q_h / \sqrt{d}$ and head $h$'s rows $W_{k,h}$,
$W_{v,h}$ of the weights,

$$s_h = q'_h k_h^\top = (q'_h W_{k,h})\, x^\top + q'_h \cdot b_{k,h}, \qquad
c_h = \tilde a_h v_h = (\tilde a_h x)\, W_{v,h}^\top + \Big(\sum_j \tilde a_{h,j}\Big)\, b_{v,h},$$

where $\tilde a_h$ is the row of probabilities after dropout. Softmax ignores the $q'_h \cdot b_{k,h}$
that every score of the row shares. The bias term of $c_h$ is $b_{v,h}$ itself only when the row
sums to 1, which is true at evaluation; with attention dropout in training, $\tilde a_h$ sums to
something else, and the bias must be scaled by that sum. So the weights move to the query's side:
$u_h = q'_h W_{k,h}$ (one row), scores $u_h x^\top$, $z_h = \tilde a_h x$, context
$z_h W_{v,h}^\top + (\sum_j \tilde a_{h,j})\, b_{v,h}$. That is [fast/cls_attention.py](../minadapt/fast/cls_attention.py):
with Q, K and V frozen, the last layer never forms a key or a value. Its backward sends gradient to
$x$ along both paths, through the scores and through $z$; `tests/test_fast_ops.py` checks it against
the reference attention over projected keys and values. Here is that check once, in float64, on the
real weights of the last layer (the [CLS] query of three sentences, one of them padded):
'''),
code(r'''
import importlib

from minadapt import gradcheck
from minadapt.nn import attention

cls_attention = importlib.import_module("minadapt.fast.cls_attention")
p = f"encoder.layer.{cfg.num_hidden_layers - 1}.attention.self."
w_k, b_k, w_v, b_v = (model.params[p + n].astype(np.float64) for n in ("key.weight", "key.bias",
                                                                         "value.weight", "value.bias"))
rng = np.random.default_rng(0)
x_last, q_cls = rng.standard_normal((3, 12, cfg.hidden_size)), rng.standard_normal((3, 1, cfg.hidden_size))
pad = np.ones((3, 12))
pad[2, 7:] = 0
bias = attention.mask_bias(pad, np.float64)
c_ref, _ = attention.forward(q_cls, x_last @ w_k.T + b_k, x_last @ w_v.T + b_v, bias, cfg.num_attention_heads)
c_fast, _ = cls_attention.forward(q_cls, x_last, w_k, w_v, b_v, bias, cfg.num_attention_heads)
print(f"fast/cls_attention.py vs the reference attention over projected keys and values: "
      f"rel_error {gradcheck.rel_error(c_fast, c_ref):.0e}")
'''),
md(r'''

What both save, per sentence of $L$ tokens and $n_h$ heads, against a full last layer: rows $1$ to
$L-1$ of Q, K, V and of the attention output ($8H^2$ a row), of the FFN ($4HF$) and of the two
adapters ($8Hm$); and attention's products, $4L^2H$ FLOPs over all the queries, become the
$4 n_h L H$ of $u_h x^\top$ and $a_h x$:

$$\text{saved} = (L-1)\,\big(8H^2 + 4HF + 8Hm\big) + 4LH\,(L - n_h) \quad\text{FLOPs per sentence.}$$

Counted for an inference pass of 32 sentences, against a full layer ($8LH^2 + 4L^2H + 8LHm + 4LHF$
a sentence):
'''),
code(r'''
H, F, nh, n_layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_attention_heads, cfg.num_hidden_layers
rows = []
for L_ in (16, 32, 64, 128):
    m_ = 64
    saved = 32 * ((L_ - 1) * (8 * H * H + 4 * H * F + 8 * H * m_) + 4 * L_ * H * (L_ - nh))
    full_layer = 8 * L_ * H * H + 4 * L_ * L_ * H + 8 * L_ * H * m_ + 4 * L_ * H * F
    full = 32 * (n_layers * full_layer + 2 * H * H + 2 * H * 2)  # and the head (dense, 2 labels)
    cls_infer = full - saved
    rows.append((L_, cls_infer, saved))
    print(f"L={L_:3d}: inference {cls_infer / 1e9:6.2f} GFLOP with cls_only, {full / 1e9:6.2f} without: "
          f"saves {saved / full:.1%}")
'''),
md(r'''
About 16% of the forward: a whole layer of six would be 17%, and what is left of the last layer is
one row per sentence and attention's $4 n_h L H$. In a training step the saving counts twice, since
the last layer's backward products shrink in the same way.

## 4. Memory: what the caches hold

A forward pass in training keeps, for each op, the cache its backward will need (lesson 1). A
*frozen* linear keeps no input: `linear.forward(x, w, b, frozen=True)` stores `LinearCache(x=None, w)`,
because $\bar x = \bar y W$ needs only $W$, which is the parameter itself, not a copy. A trainable
linear must keep $x$ for $\bar W = \bar y^\top x$.

To count what a step keeps, run `bert.encoder_forward` in training mode twice, once with the adapter
model's trainable set and once with everything trainable, and walk the returned caches (nested
NamedTuples, tuples and lists), adding up the bytes of every array. Two details: parameters that a
cache merely refers to (the $W$ in a `LinearCache`, $\gamma$ in a `LayerNormCache`) are not
activations and are left out, and an array that is a view of another (Q, K and V are slices of one
Q|K|V output) is counted once, by its underlying buffer. Batch 32, 64 tokens, the benchmark's shape.
(The caches are those of the fast ops, which training runs.)
'''),
code(r'''
ids64, mask64, _ = random_batch(32, 64, cfg.vocab_size)


def buffer(a):
    """The array that owns a view's memory."""
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def walk(obj, owners=()):
    """Yield (names of the NamedTuples it sits in, array) for every array inside nested caches."""
    if isinstance(obj, np.ndarray):
        yield owners, obj
    elif isinstance(obj, (tuple, list)):
        inner = owners + (type(obj).__name__,) if hasattr(obj, "_fields") else owners
        for item in obj:
            yield from walk(item, inner)


def kept_bytes(caches, params):
    """Bytes of activations kept in the caches, by kind of cache (parameters and repeated views left out)."""
    skip = {id(buffer(p)) for p in params.values()}
    seen, by_kind = set(), {}
    for owners, a in walk(caches):
        buf = buffer(a)
        if id(buf) in skip or id(buf) in seen:
            continue
        seen.add(id(buf))
        kind = "adapters" if "AdapterCache" in owners else owners[-1].removesuffix("Cache") if owners else "other"
        by_kind[kind] = by_kind.get(kind, 0) + buf.nbytes
    return by_kind


print("a frozen linear's cache keeps x?", linear.forward(np.ones((2, 3)), np.ones((4, 3)), frozen=True)[1].x is not None)
kept = {}
for name, names in (("adapters", model.trainable_names("sst2")), ("full fine-tuning", set(model.params))):
    run_train = bert.Run(ops=model.ops, train=True, rng=np.random.default_rng(0),
                         adapter=model.adapters["sst2"], trainable=frozenset(names))
    _, caches = bert.encoder_forward(model.params, model.qkv, cfg, ids64, mask64, None, run_train, cls_only=True)
    kept[name] = kept_bytes(caches, model.params)
    del caches
    print(f"{name:17s} {sum(kept[name].values()) / 1e6:6.1f} MB kept for the backward: "
          + ", ".join(f"{k} {v / 1e6:.1f}" for k, v in sorted(kept[name].items(), key=lambda kv: -kv[1])))
'''),
md(r'''
Two rows differ. `Linear`: the inputs of the backbone's linears, which full fine-tuning must keep
and adapter training need not. And attention: adapter training runs the last layer for [CLS]
alone (`ClsAttention`, section 3), which keeps one query row's probabilities per sentence instead of
all of them; full fine-tuning needs every row of that layer. Everything else is kept both ways, because $\bar x$ needs it
too: GELU's input and $\Phi(x)$, the attention probabilities (per head, $L\times L$ per sentence),
LayerNorm's $\hat x$, the dropout masks. A whole step's memory adds the gradients and AdamW's two
moments, one number each per *trainable* parameter, where the gap is two orders of magnitude:
'''),
code(r'''
per_param = {"adapters": n_ad, "full fine-tuning": n_full}
fig, ax = plt.subplots(figsize=(9, 3.6))
kinds = sorted({k for v in kept.values() for k in v}, key=lambda k: -kept["full fine-tuning"].get(k, 0))
for j, name in enumerate(per_param):
    left = 0
    for i, kind in enumerate(kinds + ["gradients", "AdamW m and v"]):
        if kind == "gradients":
            mb = 4 * per_param[name] / 1e6
        elif kind == "AdamW m and v":
            mb = 8 * per_param[name] / 1e6
        else:
            mb = kept[name].get(kind, 0) / 1e6
        special = {"Linear": "#e6550d", "gradients": "#756bb1", "AdamW m and v": "#31a354"}
        colour = special.get(kind, plt.cm.Blues(0.25 + 0.12 * i))
        ax.barh(j, mb, left=left, color=colour, ec="white", lw=0.5, label=kind if j == 1 else None)
        left += mb
    ax.text(left + 5, j, f"{left:.0f} MB", va="center")
ax.set_yticks([0, 1], list(per_param))
ax.set_xlabel("MB (float32; B=32, L=64)")
ax.set_title("what one training step holds besides the model's own weights")
ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.25))
ax.set_xlim(0, 1.15 * left)
plt.tight_layout()
plt.show()
for name, n in per_param.items():
    print(f"{name:17s} gradients {4 * n / 1e6:6.1f} MB, AdamW m and v {8 * n / 1e6:6.1f} MB")
'''),
md(r'''
What to look at: the orange block (the linears' saved inputs) exists only for full fine-tuning, and
the green and purple ones (gradients, optimiser state) are visible only there: 22.9 million trainable
numbers need 91 MB of gradient and 182 MB of AdamW moments, on top of the model's own 91 MB, where
the adapters' 0.3 million need about 4 MB in all. The activations (blue) are the same both ways apart
from the orange part, and they grow with $B\cdot L$ (attention's with $B\cdot L^2$): on a GPU, that is
what decides the largest batch that fits.
'''),
md(r'''
## 5. Every core at once: shards of the batch

A sentence never looks at another one: attention mixes tokens *within* a sentence only. So a batch of
$B$ sentences can be cut into shards that run forward and backward on their own, at the same time,
one per core. The batch's loss is the mean over all $B$ sentences, which is each shard's mean loss
weighted by its share:

$$\mathcal L = \frac1B \sum_{b=1}^{B} \ell_b = \sum_s \frac{B_s}{B}\, \mathcal L_s,
\qquad\text{so}\qquad \nabla \mathcal L = \sum_s \frac{B_s}{B}\, \nabla \mathcal L_s .$$

Each shard starts its backward from $B_s / B$ instead of 1, and the shards' gradients are simply
added. This is how multi-GPU training works (PyTorch's DistributedDataParallel: one process per
device, each its own micro-batch, gradients summed), with cores for devices. The model itself is
one process and never forks; a layer above it does the cutting: `parallel.DataParallel(model,
adapter)` offers the model's `loss_and_grads`, `logits` and `encode` for one task, with each batch
cut by `parallel.shards(B)`. Shard 0 runs in your process, and each other shard in a *worker
process* forked from it, so the worker starts with the whole model already in its memory.
`minadapt.train.train` runs its steps through one.

Why processes and not threads? NumPy lets go of Python's global lock (the GIL) inside every matmul
and every ufunc, so threads do run side by side; but each NumPy call has to take the lock back to
start and to finish, a step makes thousands of calls, and with two busy threads every hand-over
costs microseconds. Processes have a GIL each. The price is that they share nothing by default: after
a fork each process writes to its own copy of memory. Two things must be common, so they live in
*shared memory* (`parallel.shared_empty`): the parameters, which AdamW changes in place after every
step, and one gradient vector per shard, which your process adds up. Everything else (token ids in,
loss and logits out) is small and travels through a pipe.

Why not let the BLAS use the cores instead, as NumPy does by default? OpenBLAS threads only the
matrix products. GELU, softmax, LayerNorm and the residual adds then run on one core while the other
waits. Sharded, every line of the step runs on every core, and each matrix product is a
single-threaded one on half the rows. `DataParallel(..., n=...)` sets the number of shards; by
default it is `parallel.threads()`: `$MINADAPT_THREADS`, else the number of cores. The same step
both ways must give the same loss and gradients:
'''),
code(r'''
from minadapt.parallel import cores as parallel

n = max(2, parallel.cores())  # two shards at least, so that the cell shows a fork even on one core
print(f"{parallel.cores()} cores here; DataParallel with n={n} shards")

with parallel.DataParallel(model, "sst2", n=n) as dp:
    loss_1, _, g_1 = model.loss_and_grads(ids, mask, None, labels, adapter="sst2", train=False)
    loss_n, _, g_n = dp.loss_and_grads(ids, mask, None, labels, train=False)
    print("worker processes:", len(dp.pids))
    worst = max(float(np.abs(g_1[k] - g_n[k]).max() / np.abs(g_1[k]).max())
                for k in g_1 if np.abs(g_1[k]).max() > 0)
    print(f"loss {float(loss_1):.6f} whole, {float(loss_n):.6f} sharded; largest gradient difference "
          f"{worst:.1e} of that gradient's size (float32 rounding)")
    assert worst < 1e-3
'''),
md(r'''
The loss and the gradients agree to float32 rounding: the shards change where the sums are added up,
not what is added. On a one-core machine sharding cannot help (the shards take turns, and pay for
the hand-over); with more cores, the sharded step is the faster one, by an amount that depends on
the batch's shape (`benchmarks/README.md` has measurements, with the machine they ran on).
On a GPU there is one device, and the batch runs whole.

## 6. Against PyTorch: the committed benchmark

The benchmark in `benchmarks/` times the same adapter-training step (bottleneck 64, batch 32,
float32) in minadapt and in PyTorch + HuggingFace transformers + AdapterHub, alternating the two in
one run on one machine, per sequence length $L$; the repository keeps its JSON output under
`benchmarks/results/`, and `benchmarks/README.md` says how each file was made. This lesson reads
the current CPU result. The file records the machine it ran on and the settings it ran with,
printed below as the `minadapt bench` command they stand for:
'''),
BENCH_COMMAND,
code(r'''
def bench_machine(report):
    """The machine a benchmark report was measured on, from its "machine"."""
    m = report["machine"]
    simd = f" ({m['simd']})" if m.get("simd") else ""
    return (f"{m['cpu']}{simd}, {m['usable_cores']} cores; NumPy {m['numpy']} with "
            f"{m['blas']['name']} {m['blas']['version']}; Python {m['python']}")


path = ROOT / "benchmarks" / "results" / "cpu_after_redesign.json"
report = json.loads(path.read_text())
print(f"{path.relative_to(ROOT)}\n    command: {bench_command(report)}\n    machine: {bench_machine(report)}")
rows = [r for r in report["rows"] if r.get("minadapt") and r.get("torch")]
Ls = [r["L"] for r in rows]
fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
for ax, key, title in ((axes[0], "train_ms", "training step"), (axes[1], "infer_ms", "inference (logits)")):
    for impl, style in (("minadapt", "o-"), ("torch", "s--")):
        s = [r[impl][key] for r in rows]
        med = np.array([v["median"] for v in s])
        err = [med - [v["min"] for v in s], [v["max"] for v in s] - med]
        ax.errorbar(Ls, med, yerr=err, fmt=style, capsize=3, label=impl)
    ax.set_xlabel("sequence length L")
    ax.set_ylabel("ms (median, bars: min-max)")
    ax.set_title(f"{title}, batch {report['config']['batch_size']}")
    ax.set_xticks(Ls)
    ax.set_ylim(0, None)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
fig.suptitle(f"{path.relative_to(ROOT)}: {report['machine']['cpu']}, {report['machine']['usable_cores']} cores",
             fontsize=9)
plt.tight_layout()
plt.show()
for r in rows:
    ratio, ours_ms = r["ratio"], r["minadapt"]
    print(f"L={r['L']:3d}  minadapt/torch: train {ratio['train']}, infer {ratio['infer']}, peak memory "
          f"{ratio['rss']}  (below 1: minadapt is faster or smaller); minadapt's step: forward "
          f"{ours_ms['fwd_ms']['median']:.0f} ms, backward {ours_ms['bwd_ms']['median']:.0f} ms, "
          f"AdamW {ours_ms['opt_ms']['median']:.0f} ms")
'''),
md(r'''
Only ratios taken within one run mean much: a machine's speed drifts over minutes, which is why
the benchmark alternates the two implementations and reports their ratio. Where minadapt is
slower, the gap is mostly in the element-wise work: PyTorch runs each element-wise op as one fused
C++ loop, while here an op like GELU is a dozen or more NumPy passes over its array (lesson 2);
where it is faster, the frozen backbone's skipped work (sections 1-3) is what pays.
`benchmarks/README.md` discusses the numbers, with the machine each was measured on.

## 7. Is the adapter worth it? Against a linear probe

The cheapest use of a frozen encoder is a **linear probe**: run the encoder *once* over the data,
keep each sentence's final [CLS] vector $x \in \mathbb R^{384}$, and fit a logistic regression on
those fixed features. There is no backward through the encoder at all, and every pass over the data
after the first is nearly free. (Training the model's own head alone, `add_classification_head`
without `add_adapter`, is the same idea with a small MLP: `lowest_trainable_layer()` is `None`, and
its step is a forward plus a tiny head backward, the leftmost point of section 2.)

Features of the first 2,000 training sentences and of the whole dev set, with the plain pretrained
model (no adapter). We also keep the mean over each sentence's tokens: all-MiniLM-L6-v2 was trained by
sentence-transformers to be read through *mean pooling*, not through [CLS].
'''),
code(r'''
from minadapt.tasks.sst2 import load_sst2, sequential_batches
from minadapt.train import TrainConfig, encode_split, train

data = load_sst2()  # finds SST-2 as lesson 6 did ($MINADAPT_DATA, else the cache)
N_PROBE = 2000
plain = minadapt.load_model(WEIGHTS, dtype="float32")


def features(sentences):
    """[CLS] vectors and mean-pooled vectors of the final layer, (n, H) each, in batches sorted by length."""
    seq_ids, lengths = encode_split(plain.tokenizer, sentences)
    cls_vec, mean_vec = np.zeros((2, len(seq_ids), cfg.hidden_size), np.float32)
    for idx in sequential_batches(len(seq_ids), 128, lengths):
        b = plain.tokenizer.pad([seq_ids[i] for i in idx])
        h = plain.encode(b.input_ids, b.attention_mask)  # (b, T, H)
        cls_vec[idx] = h[:, 0]
        m = b.attention_mask[..., None]
        mean_vec[idx] = (h * m).sum(axis=1) / m.sum(axis=1)
    return cls_vec, mean_vec


train_cls, train_mean = features(data["train"][0][:N_PROBE])
dev_cls, dev_mean = features(data["dev"][0])
y_train, y_dev = data["train"][1][:N_PROBE], data["dev"][1]
print(f"features of the {N_PROBE:,} training sentences and of the {len(y_dev)} dev sentences: "
      f"{train_cls.shape} and {dev_cls.shape}")
'''),
md(r'''
**Logistic regression, by Newton's method.** With $a_i = [x_i, 1]$ and weights $w$, the model says
$p_i = \sigma(a_i^\top w)$, and we minimise the mean cross-entropy plus an L2 penalty on the weights
(not the bias):

$$J(w) = -\frac1n\sum_i \big[y_i\log p_i + (1-y_i)\log(1-p_i)\big] + \frac\lambda2\lVert w_{1:H}\rVert^2,
\qquad \nabla J = \frac1n A^\top(p - y) + \lambda w_{1:H},
\qquad \nabla^2 J = \frac1n A^\top \operatorname{diag}\!\big(p(1-p)\big) A + \lambda I_{1:H} .$$

$J$ is convex, so Newton's step $w \leftarrow w - (\nabla^2 J)^{-1}\nabla J$ reaches its minimum in
under ten iterations (a $385\times385$ solve each; near the minimum the number of correct digits
doubles at every step): the probe's answer does not depend on a learning rate or a number of epochs. $\lambda$ is chosen the honest way, on 500 *training* sentences held out from
the fit, never on dev; then the probe is refitted on all 2,000.
'''),
code(r'''
def fit_logistic(X, y, lam, max_iterations=15, tol=1e-10):
    """Weights (H + 1,) of an L2-regularised logistic regression (last entry: bias), by Newton's
    method, and the largest |gradient| before each step."""
    A = np.c_[X, np.ones(len(X))].astype(np.float64)
    reg = lam * np.r_[np.ones(X.shape[1]), 0.0]  # no penalty on the bias
    w, grad_max = np.zeros(A.shape[1]), []
    for _ in range(max_iterations):
        p = 1 / (1 + np.exp(-A @ w))
        grad = A.T @ (p - y) / len(y) + reg * w
        grad_max.append(float(np.abs(grad).max()))
        if grad_max[-1] < tol:
            break
        hess = (A * (p * (1 - p))[:, None]).T @ A / len(y) + np.diag(reg)
        w -= np.linalg.solve(hess, grad)
    return w, grad_max


def accuracy(w, X, y):
    return float(((np.c_[X, np.ones(len(X))] @ w > 0) == y).mean())


probe = {}
for name, (Xtr, Xdv) in (("[CLS] probe", (train_cls, dev_cls)), ("mean-pooled probe", (train_mean, dev_mean))):
    lams = (1e-4, 1e-3, 1e-2, 1e-1)
    held = [accuracy(fit_logistic(Xtr[:1500], y_train[:1500], lam)[0], Xtr[1500:], y_train[1500:]) for lam in lams]
    lam = lams[int(np.argmax(held))]
    w, grad_max = fit_logistic(Xtr, y_train, lam)
    probe[name] = accuracy(w, Xdv, y_dev)
    print(f"{name}: held-out accuracy per lambda {dict(zip(lams, held))} -> lambda {lam:g}\n"
          f"    refit on all {N_PROBE:,}: max|gradient| per Newton step "
          + " ".join(f"{g:.0e}" for g in grad_max)
          + f"\n    train accuracy {accuracy(w, Xtr, y_train):.1%}, dev accuracy {probe[name]:.1%}")
'''),
md(r'''
Now the adapter, on the same 2,000 sentences: `train` as in lesson 6 (bottleneck 16, the default
peak rate), for 126 steps of 32, about two passes over the subset, evaluated once at the end.
'''),
code(r'''
out = pathlib.Path(tempfile.mkdtemp(prefix="minadapt-lesson7-"))
adapted = minadapt.load_model(WEIGHTS, dtype="float32")
run_cfg = TrainConfig(out=str(out), options={"bottleneck": 16}, train_subset=N_PROBE, max_steps=126,
                      eval_every=0, log_every=10, seed=0)
result = train(run_cfg, model=adapted, data=data, progress=False)
print(f"adapter: {result.steps} steps of {run_cfg.batch_size}, dev accuracy {result.dev_accuracy:.1%}")
'''),
code(r'''
# Training cost in matrix-product FLOPs, each sentence at its own length (bucketed batches pad
# about 1%, lesson 6). The probe: one forward over its training sentences (the Newton fit, a few
# 385 x 385 solves, is negligible). The adapter: 126 x 32 sentences, each a whole training step.
_, probe_len = encode_split(plain.tokenizer, data["train"][0][:N_PROBE])
seen = result.steps * run_cfg.batch_size / N_PROBE  # passes over the subset
probe_flops = sum(step_flops_by_part(1, int(n), 16)["forward"] for n in probe_len)
adapter_flops = seen * sum(sum(step_flops_by_part(1, int(n), 16).values()) for n in probe_len)
names = ["[CLS] probe", "mean-pooled probe", "adapter (126 steps)"]
acc = [probe["[CLS] probe"], probe["mean-pooled probe"], result.dev_accuracy]
cost = [probe_flops / 1e12, probe_flops / 1e12, adapter_flops / 1e12]
fig, axes = plt.subplots(1, 2, figsize=(12, 3.6))
axes[0].bar(names, [100 * a for a in acc], color=["#9ecae1", "#6baed6", "#31a354"])
for j, a in enumerate(acc):
    axes[0].text(j, 100 * a, f"{a:.1%}", ha="center", va="bottom")
axes[0].axhline(50, color="grey", ls=":")
axes[0].set_ylim(40, 100)
axes[0].set_ylabel("dev accuracy (%)")
axes[0].set_title(f"SST-2 dev, trained on the same {N_PROBE:,} sentences")
axes[1].bar(names, cost, color=["#9ecae1", "#6baed6", "#31a354"])
for j, c in enumerate(cost):
    axes[1].text(j, c, f"{c:.1f}", ha="center", va="bottom")
axes[1].set_ylabel("TFLOP (matrix products)")
axes[1].set_ylim(0, 1.15 * max(cost))
axes[1].set_title("training cost (probes: one forward over the training sentences)")
for ax in axes:
    ax.grid(alpha=0.3, axis="y")
    ax.tick_params(axis="x", labelsize=8)
plt.tight_layout()
plt.show()
print(f"the adapter's training: {adapter_flops / probe_flops:.1f}x the probe's forward pass "
      f"({seen:.1f} passes over the subset, each step about "
      f"{sum(step_flops_by_part(1, 32, 16).values()) / step_flops_by_part(1, 32, 16)['forward']:.1f} forward passes)")
'''),
md(r'''
What to look at: on the same 2,000 sentences the [CLS] probe is the weakest, and the adapter beats
both probes (the cell below checks it): this checkpoint's [CLS] vector was never trained to summarise the
sentence (its training read the mean of the tokens), and a linear map cannot fix that, while the
adapters can change what [CLS] ends up holding, in every layer. The price is the backward: the
probe pays one forward pass over the data and then nearly nothing, while each adapter step costs
about two forward passes (the last line above) and is repeated for every batch of every epoch.

'''),
code(r'''
margin = result.dev_accuracy - max(probe.values())
print(f"adapter {result.dev_accuracy:.1%} against the better probe {max(probe.values()):.1%}: "
      f"{100 * margin:+.1f} points, {margin * len(y_dev):+.0f} of the {len(y_dev)} dev sentences")
assert result.dev_accuracy > max(probe.values()), "the adapter did not beat both probes in this run"
assert probe["[CLS] probe"] < probe["mean-pooled probe"]
'''),
md(r'''
So the frozen backbone buys a spectrum. A probe (or a head alone) is the cheapest and the weakest;
adapters pay for a backward through the frozen layers, but not for their weight gradients, nor their
saved inputs, nor an optimiser state the size of the model, nor a 91 MB file per task; and full
fine-tuning pays for all of it.
'''),
]
