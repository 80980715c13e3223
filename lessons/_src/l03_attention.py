"""Lesson 3: scaled dot-product attention, heads, the padding mask, softmax backward, real attention maps."""
from .cells import SETUP, WEIGHTS, code, md

CELLS = [
md(r'''
# Lesson 3 — Self-attention

Attention is the one place in BERT where tokens exchange information; everything else acts on each
token vector alone. `minadapt/nn/attention.py` holds the whole of it: splitting into heads, the
scaled scores, the padding mask, a numerically safe softmax, the weighted sum of values, and the
backward of all of it. This lesson takes it apart, checks it, and ends with the attention weights
of the real pretrained model on a real sentence.

The inputs are the query, key and value projections of the layer input, $q = xW_q^\top + b_q$ and
likewise $k$, $v$ (computed by *one* fused matmul in `bert.py`, see lesson 4), each `(B, T, H)`.
'''),
SETUP,
code(r'''
import math

from minadapt import gradcheck
from minadapt.nn import attention

rng = np.random.default_rng(0)
print(attention.__doc__)
'''),
md(r'''
## 1. Heads: `split_heads` and `merge_heads`

With $nh$ heads, the $H$ features of each token are cut into $nh$ groups of $hs = H/nh$, and each
group attends on its own, with its own attention pattern. No arithmetic is involved, only a change
of view: `(B, T, H)` $\to$ `(B, T, nh, hs)` (a free reshape) $\to$ `(B, nh, T, hs)` (a transpose, also
a view), so that a batched matmul `@` treats `(B, nh)` as batch axes and multiplies `(T, hs)` matrices.
`merge_heads` undoes it. Its input is the output of a batched matmul, a fresh contiguous
`(B, nh, T, hs)` array; transposed to `(B, T, nh, hs)` it is no longer contiguous, so the final
`reshape` to `(B, T, H)` has to copy.
'''),
code(r'''
B, T, H, nh = 1, 3, 8, 2
feats = np.arange(B * T * H).reshape(B, T, H)
heads = attention.split_heads(feats, nh)  # (B, nh, T, hs)
print("split:", feats.shape, "->", heads.shape, "| a view:", np.shares_memory(heads, feats))
print("head 0 sees features 0..3 of every token:\n", heads[0, 0])
print("head 1 sees features 4..7:\n", heads[0, 1])
print("merge(split(x)) == x:", np.array_equal(attention.merge_heads(heads), feats))
context = np.ascontiguousarray(heads)  # like the output of a batched matmul: (B, nh, T, hs), contiguous
merged = attention.merge_heads(context)
print("merging a contiguous (B, nh, T, hs) array copies:", not np.shares_memory(merged, context))
'''),
md(r'''
## 2. Scaled dot-product attention

For one sentence and one head, with $q, k, v$ of shape `(T, hs)`:

$$s = \frac{q\,k^\top}{\sqrt{hs}} + m, \qquad a = \operatorname{softmax}_{\text{row}}(s), \qquad c = a\,v .$$

Row $t$ of $a$ is a probability distribution over the keys: how much token $t$ takes from each
token. $c_t$ is the corresponding average of the value vectors.

**Why divide by $\sqrt{hs}$.** If the entries of $q$ and $k$ have unit variance, $q_t\cdot k_u$ is a
sum of $hs$ such products and has variance $hs$. Large scores saturate the softmax into a one-hot
row, whose gradient (section 4) vanishes. Dividing by $\sqrt{hs}$ brings the variance back to 1:
'''),
code(r'''
hs, Tk = 32, 16
q0 = rng.standard_normal((1000, hs))
k0 = rng.standard_normal((Tk, hs))
for name, scale in (("q·k", 1.0), ("q·k / sqrt(hs)", 1 / math.sqrt(hs))):
    s0 = q0 @ k0.T * scale
    p0 = np.exp(s0 - s0.max(1, keepdims=True))
    p0 /= p0.sum(1, keepdims=True)
    print(f"{name:15s} std of scores {s0.std():5.2f}   mean of the largest probability per row {p0.max(1).mean():.2f}")
'''),
md(r'''
**The softmax, safely.** $\operatorname{softmax}(s)_j = e^{s_j}/\sum_u e^{s_u}$ is unchanged by
subtracting any constant from the row, and subtracting the row's *maximum* makes every exponent
$\le 0$, so `exp` cannot overflow (the largest term becomes exactly $e^0 = 1$). That is the whole
of the library's `softmax` (two lines: write them yourself in exercise 2 §1 before reading
`attention.softmax` in [nn/attention.py](../minadapt/nn/attention.py)).
'''),
md(r'''
Without any shift, large scores overflow:
'''),
code(r'''
s_big = np.array([1000.0, 999.0, 990.0])
with np.errstate(over="ignore", invalid="ignore"):
    print("naive:  ", np.exp(s_big) / np.exp(s_big).sum())
shifted = np.exp(s_big - s_big.max())
print("shifted:", shifted / shifted.sum())
'''),
md(r'''
## 3. The padding mask

Sentences in a batch have different lengths; shorter ones are padded with `[PAD]` tokens up to the
longest (`attention_mask` is 1 on real tokens, 0 on padding). A real token must not attend to
padding, or its output would depend on how long the *other* sentences in the batch are.
`mask_bias` turns the mask into an additive bias $m$: 0 for a real key, and the most negative
finite number of the dtype (`finfo.min`, about $-3.4\times 10^{38}$ in float32) for a padded key.

After the max-shift, a padded key's score is about $-3.4\times10^{38}$ and `exp` of it **underflows
to exactly 0.0**. So padded keys get probability exactly zero, and real tokens' outputs are
bit-for-bit independent of whatever sits in the padded positions. (Why `finfo.min` and not
$-\infty$? A row whose keys were *all* padded would give $-\infty - (-\infty) = $ NaN; with a finite
bias it gives a harmless uniform row. Real rows always contain [CLS], so this is only a safety net.)
'''),
code(r'''
mask = np.array([[1, 1, 1, 1, 1],
                 [1, 1, 1, 0, 0]])  # sentence 1 has 3 real tokens and 2 [PAD]
bias = attention.mask_bias(mask, np.float64)
print("bias shape", bias.shape, "(B, 1, 1, Tk): broadcast over heads and queries")
print("bias of sentence 1:", [f"{b:.3g}" for b in bias[1, 0, 0]])

B, T, H, nh = 2, 5, 8, 2
q, k, v = (rng.standard_normal((B, T, H)) for _ in range(3))
c, cache = attention.forward(q, k, v, bias, nh)
print("\nprobabilities of sentence 1, head 0 (rows: queries, columns: keys):\n", cache.a[1, 0].round(3))

k2, v2 = k.copy(), v.copy()
k2[1, 3:] = 100 * rng.standard_normal((2, H))  # scribble over the padded keys and values
v2[1, 3:] = 100 * rng.standard_normal((2, H))
c2, _ = attention.forward(q, k2, v2, bias, nh)
print("real tokens' outputs unchanged, bit for bit:", np.array_equal(c[1, :3], c2[1, :3]))
'''),
md(r'''
Look at the matrix: the last two *columns* (padded keys) are exactly 0. The last two *rows* are the
padded positions' own queries: they get computed (masking rows would cost more than it saves) but
nothing ever reads them: the classification head reads [CLS], and comparisons with reference
numbers look at real tokens only.

## 4. The backward

Going up the forward, line by line (per sentence and head; the code does all of them at once with
batched matmuls):

* $c = a\,v$ is a matrix product, so as for a linear layer: $\;\bar v = a^\top \bar c, \quad \bar a = \bar c\,v^\top$.
* Dropout on $a$ (training only) multiplies $\bar a$ by the same mask.
* $a = \operatorname{softmax}(s)$, row by row. Its Jacobian is
  $\partial a_i / \partial s_j = a_i(\delta_{ij} - a_j)$, so
  $$\bar s_j = \sum_i \bar a_i\,a_i(\delta_{ij} - a_j) = a_j\Big(\bar a_j - \sum_i \bar a_i a_i\Big).$$
  One dot product per row instead of a $T\times T$ Jacobian per row.
* The mask $m$ is a constant: no gradient. And since $a_j = 0$ for a padded key, $\bar s_j = 0$ there.
* $s = q k^\top/\sqrt{hs}$: $\;\bar q = \bar s\,k/\sqrt{hs}, \quad \bar k = \bar s^\top q/\sqrt{hs}$.

The padded keys therefore receive **zero gradient**, in $\bar k$ (through $\bar s_j = 0$) and in
$\bar v$ (through $a_j = 0$ in $a^\top \bar c$): exactly what "they do not take part" should mean.

**Your turn, before reading the answer.** Exercise 2 §2 asks for exactly this forward and backward
(heads already split, no dropout): write them from the bullets above, and let its check name your
mistake if there is one. Then read the library's `forward` and `backward` in
[nn/attention.py](../minadapt/nn/attention.py) side by side: the backward's comments quote the
forward line each block differentiates, and each block is one of the bullets above. Its cache keeps
the per-head `q`, `k`, `v`, the probabilities before dropout (`a`, for the softmax Jacobian) and
after it (`a_drop`, for $\bar v$), and dropout's own cache. (Training runs a faster twin,
`minadapt/fast/attention.py`, with the same numbers: the optional appendix A shows how.)
'''),
md(r'''
First the softmax step alone, against the explicit Jacobian $\operatorname{diag}(a) - a a^\top$ for
one row (built here only to compare; the library never builds it):
'''),
code(r'''
a_row = cache.a[0, 0, 2]  # one row of probabilities
da_row = rng.standard_normal(T)
jacobian = np.diag(a_row) - np.outer(a_row, a_row)  # J[i, j] = a_i (delta_ij - a_j), symmetric
ds_jacobian = jacobian.T @ da_row
ds_library_formula = a_row * (da_row - (da_row * a_row).sum())
print("explicit Jacobian vs the one-line formula:", np.abs(ds_jacobian - ds_library_formula).max())
print("softmax gradients sum to zero per row (adding a constant to s changes nothing):", ds_library_formula.sum())
'''),
md(r'''
Now the whole op against centred differences, for `q`, `k` and `v`, with the padded batch from
above, once at evaluation and once with dropout on the probabilities. A gradient check needs the
same dropout mask at every call, so the function builds a fresh generator with a fixed seed each time.
'''),
code(r'''
dc = rng.standard_normal(c.shape)


def attend(q_, k_, v_, train):
    rng_ = np.random.default_rng(123)  # the same dropout mask at every call
    return attention.forward(q_, k_, v_, bias, nh, p_drop=0.2, rng=rng_, train=train)


for train in (False, True):
    _, cache_t = attend(q, k, v, train)
    dq, dk, dv = attention.backward(dc, cache_t)
    errs = [gradcheck.check(lambda q_: attend(q_, k, v, train)[0], q, dc, dq),
            gradcheck.check(lambda k_: attend(q, k_, v, train)[0], k, dc, dk),
            gradcheck.check(lambda v_: attend(q, k, v_, train)[0], v, dc, dv)]
    print(f"train={train!s:5s}  rel_error dq {errs[0]:.1e}  dk {errs[1]:.1e}  dv {errs[2]:.1e}")

print("gradient reaching the padded keys and values of sentence 1:",
      np.abs(dk[1, 3:]).max(), np.abs(dv[1, 3:]).max())
'''),
md(r'''
## 5. What the pretrained model attends to

Now real weights. We load all-MiniLM-L6-v2 in float32, embed two sentences (the second, shorter one
is padded to the length of the first), and run the first layers ourselves with
`bert.embeddings_forward` and `bert.layer_forward`. Each layer returns its `LayerCache`, whose field
`attn` is the attention cache above; `cache.attn.a` holds the probabilities `(B, nh, Tq, Tk)`.
`bert.Run(ops=...)` says which ops to run; with nothing else it means evaluation: no dropout, no
adapters, nothing trainable. We run the reference ops, `minadapt.ops.reference()`, whose attention
cache is the one read above.
'''),
WEIGHTS,
code(r'''
import minadapt
from minadapt import bert, ops

model = minadapt.load_model(WEIGHTS, dtype="float32")
sentences = ["The movie was surprisingly good, and the acting felt honest.", "Not my cup of tea."]
batch = model.tokenizer.encode(sentences)
tokens = [model.tokenizer.tokens(s) for s in sentences]
T = batch.input_ids.shape[1]
tokens[1] += ["[PAD]"] * (T - len(tokens[1]))
print(batch.input_ids.shape, "\n", tokens[0], "\n", tokens[1])

run = bert.Run(ops=ops.reference())
x, _ = bert.embeddings_forward(model.params, model.cfg, batch.input_ids, batch.token_type_ids, run)
bias = attention.mask_bias(batch.attention_mask, model.dtype)
probs = []
for i in range(2):  # the first two layers are enough here
    x, layer_cache = bert.layer_forward(model.params, i, x, bias, model.qkv[i], model.cfg, run)
    probs.append(layer_cache.attn.a)  # (B, nh, T, T)
print("attention probabilities per layer:", probs[0].shape)
'''),
md(r'''
Heads specialise. A simple score finds, for each head of the first two layers, how much of each
token's attention goes to the token just before it, or just after it:
'''),
code(r'''
n_real = int(batch.attention_mask[0].sum())
for i, a in enumerate(probs):
    a0 = a[0, :, :n_real, :n_real]  # sentence 0, all heads
    prev = np.array([np.diagonal(a0[h], -1).mean() for h in range(a0.shape[0])])
    nxt = np.array([np.diagonal(a0[h], 1).mean() for h in range(a0.shape[0])])
    print(f"layer {i}: previous-token head {prev.argmax()} ({prev.max():.2f} on average), "
          f"next-token head {nxt.argmax()} ({nxt.max():.2f})")
'''),
code(r'''
def heatmap(ax, a, ticks, title):
    im = ax.imshow(a, cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(len(ticks)), ticks, rotation=90, fontsize=8)
    ax.set_yticks(range(len(ticks)), ticks, fontsize=8)
    ax.set_xlabel("key (attended to)")
    ax.set_ylabel("query (attending)")
    ax.set_title(title, fontsize=10)
    return im


fig, axes = plt.subplots(1, 3, figsize=(18, 6), gridspec_kw=dict(wspace=0.4))
heatmap(axes[0], probs[0][0, 2], tokens[0], "layer 0, head 2: the previous token")
heatmap(axes[1], probs[1][0, 8], tokens[0], "layer 1, head 8: mostly the next token")
im = heatmap(axes[2], probs[0][1, 2], tokens[1], "layer 0, head 2, padded sentence")
n1 = int(batch.attention_mask[1].sum())
axes[2].add_patch(plt.Rectangle((n1 - 0.5, -0.5), T - n1, n1, fill=False, ec="red", lw=2))
axes[2].axhspan(n1 - 0.5, T - 0.5, color="grey", alpha=0.5)
axes[2].text(n1 + 0.5, 2, "[PAD] keys:\nprobability 0", color="red", fontsize=9, va="center")
axes[2].text(1, n1 + 2, "[PAD] queries: computed, never read", color="black", fontsize=9)
fig.colorbar(im, ax=axes, shrink=0.6, label="attention probability")
plt.show()
'''),
md(r'''
What to look at:

* **Left.** Layer 0, head 2 puts essentially all of each token's attention on the token before it
  (the bright sub-diagonal); [CLS] has no predecessor and attends to itself. With such a head,
  the next layer can read "which word came just before me" out of its input.
* **Middle.** Layer 1, head 8 mostly looks one token ahead; much of the rest goes to [CLS], a common
  "nothing to do" sink.
* **Right.** The same head on the padded sentence: the [PAD] *columns* are exactly zero (the
  red box), the mask at work. The [PAD] *rows* (greyed) hold numbers, but nobody reads them.

**What you now know of `minadapt/nn/attention.py`:** every line. `mask_bias` (the additive
`finfo.min` bias), `split_heads`/`merge_heads` (a view, and a copy), `softmax` (max-shifted),
`forward` (scores, bias, softmax, dropout, context) and `backward` (the same lines read
bottom-up, with the one-line softmax Jacobian).
Lesson 4 puts it inside a full BERT layer.
'''),
md(r'''
## Check your understanding

1. Why divide the scores by $\sqrt{hs}$?
2. Why does a padded key get zero gradient in $\bar k$ and $\bar v$?
3. Why is the mask bias the dtype's minimum rather than $-\infty$?

<details><summary>Answers</summary>

1. A dot product of two vectors of $hs$ independent unit-variance entries has variance $hs$; without the scaling, scores grow with the head size and the softmax saturates, with vanishing gradients.
2. Its probability $a_j$ is 0, so $\bar s_j = a_j(\ldots) = 0$ and $\bar v_j = \sum_i a_{ij}\bar c_i = 0$.
3. A row whose keys are all padding would compute $-\infty - (-\infty)$ = nan in the max-shift; a finite minimum keeps numbers.
</details>
'''),
]
