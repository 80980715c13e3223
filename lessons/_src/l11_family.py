"""Lesson 11: the rest of the family side by side (prompt tuning, prefix tuning, IA3 beside LoRA and
the bottleneck adapter): where each touches the layer, what it trains, what merges, and the prefix's
gradient, which is the attention backward of lesson 3 and nothing more."""
from .cells import SETUP, WEIGHTS, code, md

CELLS = [
md(r'''
# Lesson 11 — Prompt tuning, prefix tuning and IA3

Lessons 5 and 10 adapted the frozen backbone by adding small layers (bottleneck adapters) or
low-rank updates of its weights (LoRA). Three more methods complete the family people name first,
each as one file in `minadapt/methods/` with its maths in `minadapt/nn/`:

| method | where it acts in a layer | what trains | `minadapt/nn/` |
| --- | --- | --- | --- |
| prompt tuning (Lester et al., 2021) | before layer 0: $n$ vectors $P$ in front of the sentence's word embeddings | $P$, $n \times H$ | `prompt.py` |
| prefix tuning (Li & Liang, 2021) | inside every attention: $n$ keys and values in front of the sentence's, $c = \text{attention}(q, [P_k; k], [P_v; v])$ | $P_k, P_v$ per layer: $n \times 2LH$ | `prefix.py` |
| IA3 (Liu et al., 2022) | a scale per channel of $k$, $v$, and the inputs of both output projections | $3H + F$ per layer | `ia3.py` |

Each is placed exactly where PEFT places it for a sequence-classification BERT, and
`tests/test_family_methods.py` holds every one equal to PEFT in float64 (logits and loss to
$10^{-10}$, every gradient to $10^{-8}$), the prefix also to AdapterHub's. What PEFT does, read from
its source:

* **prompt**: the prompt replaces the *word* embeddings of $n$ extra tokens, so the position and
  type embeddings and the embedding LayerNorm apply to it too; the mask gains $n$ ones; [CLS] moves
  to position $n$, and the head reads row 0, the first virtual token (BERT's pooler reads row 0
  whatever sits there);
* **prefix**: handed to transformers as a key/value cache of length $n$, after which BERT numbers
  the sentence's positions from $n$ (AdapterHub joins it inside attention and keeps them from 0);
* **IA3**: PEFT's BERT defaults name `key`, `value` and `output.dense`, and `output.dense` matches
  the attention's output projection as well as the feed-forward one: both are "feed-forward
  modules", scaled on their input (the context $c$, the GELU activation $f$); keys and values are
  scaled on their output, bias included.

1. the three methods on the real backbone beside LoRA and Houlsby, their parameters counted;
2. what each does to the shapes: the prompt lengthens the sequence, the prefix the attention;
3. **the prefix's gradient**, derived and checked;
4. the prefix's reparameterisation and how it is merged away;
5. which methods merge into the weights, and what each costs at inference.
'''),
SETUP,
WEIGHTS,
md(r'''
## 1. Five tasks on one backbone

All five leave the backbone frozen, so one model holds them side by side, each under its own
name. `model.add(name, method=..., **options)` reads the method table.
'''),
code(r'''
import minadapt
from minadapt import bert
from minadapt.methods import METHODS

N, R, M = 20, 8, 16  # virtual tokens for prompt and prefix; LoRA's rank; the Houlsby bottleneck
model = minadapt.load_model(WEIGHTS, dtype="float64", ops="reference")
for name, options in (("houlsby", dict(bottleneck=M)), ("lora", dict(r=R)),
                      ("prompt", dict(virtual_tokens=N)), ("prefix", dict(virtual_tokens=N)),
                      ("ia3", {})):
    model.add_classification_head(name, num_labels=2)
    model.add(name, method=name, **options)
for name in ("prompt", "prefix", "ia3"):
    print(f"{name:7s} {METHODS[name].summary}")
    for k in sorted(k for k in model.trainable_names(name) if not k.startswith("heads."))[:3]:
        print(f"          {k:62s} {model.params[k].shape}")
'''),
md(r'''
**Parameters counted**, without the head (which every method trains beside), checked against the
formulas with $H = 384$, $F = 1536$, $L = 6$:

* prompt: $nH$; prefix: $2LnH$ (a key and a value row per virtual token and layer);
* IA3: $L(3H + F)$; LoRA on query and value: $L \cdot 2 \cdot 2rH$; Houlsby: $2L(2mH + m + H)$.
'''),
code(r'''
cfg = model.cfg
H, F, L = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
backbone = sum(model.params[k].size for k in model.backbone_names())
formula = {"houlsby": 2 * L * (2 * M * H + M + H), "lora": L * 2 * 2 * R * H,
           "prompt": N * H, "prefix": 2 * L * N * H, "ia3": L * (3 * H + F)}
counts = {}
print(f"{'method':8s} {'trainable (no head)':>20s} {'of the backbone':>16s}")
for name, want in formula.items():
    counts[name] = sum(model.params[k].size for k in model.trainable_names(name) if not k.startswith("heads."))
    assert counts[name] == want, (name, counts[name], want)
    print(f"{name:8s} {counts[name]:20,} {counts[name] / backbone:16.3%}")
head = sum(model.params[k].size for k in model.trainable_names("ia3") if k.startswith("heads."))
print(f"backbone: {backbone:,} parameters; the head beside each: {head:,}")
'''),
md(r'''
A prompt of 20 tokens is the smallest (7,680 numbers), IA3's scales next (16,128), both far below
LoRA and the Houlsby adapters; the prefix, a key and a value per token *and layer*, is twelve times
the prompt. The head beside each (about 148,000 numbers for two labels) is then most of what trains.

## 2. What each does to the shapes

A fresh IA3 is exactly the backbone (scales at one), as a fresh LoRA is ($B = 0$). A fresh prompt
or prefix is not: PEFT starts them at random, $N(0, 1)$, so the model changes from step 0.

The prompt makes every sequence $n$ rows longer in every layer: `encode` returns $n + T$ rows.
The prefix keeps $T$ rows, but each attention looks at $n + T$ keys.
'''),
code(r'''
texts = ["a gorgeous , witty , seductive movie .", "the plot is nothing but boilerplate clichés ."]
ids, mask, types = model.tokenizer.encode(texts)
T = ids.shape[1]
bare = model.encode(ids, mask, types, adapter="houlsby")  # Houlsby at init: the backbone
print("tokens T =", T)
print("houlsby:", bare.shape, "  prompt:", model.encode(ids, mask, types, adapter="prompt").shape,
      "  prefix:", model.encode(ids, mask, types, adapter="prefix").shape)
assert model.encode(ids, mask, types, adapter="prompt").shape[1] == N + T
print("IA3 at one is the backbone:", np.abs(model.encode(ids, mask, types, adapter="ia3") - bare).max())

run = bert.Run(ops=model.ops, prefix=model.config_of("prefix"))  # what model.encode runs for "prefix"
_, cache = bert.encoder_forward(model.params, model.qkv, cfg, ids, mask, types, run)
print("prefix: layer 0's attention weights", cache.layers[0].attn.attn.a.shape, "= (B, heads, T, n + T)")
'''),
md(r'''
## 3. The prefix's gradient

In layer $i$ the prefix joins the keys and values: $K' = [P_k; k]$, $V' = [P_v; v]$, and the mask
gains $n$ zeros in front (the prefix is never padding). Attention runs as in lesson 3 on these. Its
backward already returns $\bar K'$ and $\bar V'$ for all $n + T$ key rows, so the prefix needs no
backward of its own: its gradient is the first $n$ rows, summed over the batch (every sentence
shares the same $P_k$, $P_v$). Written out per head, with $\bar s$ the gradient of the scores
$s = q K'^\top/\sqrt{hs}$ and $a$ the attention weights:

$$\bar P_k = \sum_b \bar s_{b,\,:,\,1..n}^\top\, q_b / \sqrt{hs}, \qquad \bar P_v = \sum_b a_{b,\,:,\,1..n}^\top\, \bar c_b .$$

A prefix key learns from the queries that looked at it, weighted by how the loss wants each score
to move; a prefix value from every query's upstream gradient, weighted by how much that query
attended to it. Below: the formulas on the real layer 0, against `nn/prefix.py`'s backward (a slice
of attention's), and that backward against finite differences on a small case.
'''),
code(r'''
from minadapt.gradcheck import check
from minadapt.nn import attention, prefix

nh = cfg.num_attention_heads
hs = H // nh
c = cache.layers[0].attn  # the prefix attention's cache: (n, the attention op, its cache)
a, q_heads = c.attn.a, c.attn.q  # (B, nh, T, n+T), (B, nh, T, hs)
rng = np.random.default_rng(0)
dc = rng.standard_normal((ids.shape[0], T, H))  # some upstream gradient of the context
_, _, _, dpk, dpv = prefix.backward(dc, c)

dc_heads = attention.split_heads(dc, nh)
da = dc_heads @ c.attn.v.transpose(0, 1, 3, 2)
ds = a * (da - (da * a).sum(axis=-1, keepdims=True))  # the softmax backward of lesson 3
dpk_formula = (ds[..., :N].transpose(0, 1, 3, 2) @ q_heads / np.sqrt(hs)).sum(axis=0)  # (nh, n, hs)
dpv_formula = (a[..., :N].transpose(0, 1, 3, 2) @ dc_heads).sum(axis=0)
merge = lambda t: t.transpose(1, 0, 2).reshape(N, H)  # heads back to (n, H)
print("dPk: formula vs backward", np.abs(merge(dpk_formula) - dpk).max())
print("dPv: formula vs backward", np.abs(merge(dpv_formula) - dpv).max())

# and the backward against centred differences, on a small case (B=2, T=4, n=3, H=8, 2 heads)
q, k, v = (rng.standard_normal((2, 4, 8)) for _ in range(3))
pk, pv = rng.standard_normal((3, 8)), rng.standard_normal((3, 8))
bias = attention.mask_bias(np.array([[1, 1, 1, 0], [1, 1, 1, 1]]), np.float64)
dc_small = rng.standard_normal((2, 4, 8))
_, c_small = prefix.forward(q, k, v, pk, pv, bias, 2)
_, _, _, dpk_small, dpv_small = prefix.backward(dc_small, c_small)
err_k = check(lambda t: prefix.forward(q, k, v, t, pv, bias, 2)[0], pk, dc_small, dpk_small)
err_v = check(lambda t: prefix.forward(q, k, v, pk, t, bias, 2)[0], pv, dc_small, dpv_small)
print(f"finite differences: dPk {err_k:.1e}, dPv {err_v:.1e}")
assert err_k < 1e-7 and err_v < 1e-7
'''),
md(r'''
**Exercise** ([exercises/05_prefix_gradient.ipynb](exercises/05_prefix_gradient.ipynb)): write the
prefix's attention and its backward yourself, with `attention.forward` and `attention.backward`; the
check names the mistake yours looks like (the sum over the batch left out, the prefix masked, ...).
Then derive $\bar P_v$ from $c = a V'$ and $\bar P_k$ from $s = q K'^\top/\sqrt{hs} + m'$ by hand:
why does the mask $m'$ contribute nothing?

## 4. The reparameterisation, and merging it away

Li & Liang found training $P$ directly unsteady and made it instead from a smaller embedding
$E$ ($n \times H$) through a two-layer MLP, $P = \tanh(E W_1^\top + b_1) W_2^\top + b_2$; PEFT's
`prefix_projection=True`. The MLP is differentiated like any two layers (its backward is the
forward reversed, `prefix.reparam_backward`), and after training it is evaluated once and thrown
away: $P$ is all inference needs, and PEFT's saved directory holds $P$ alone.
'''),
code(r'''
model.add_classification_head("prefix_mlp", num_labels=2)
model.add("prefix_mlp", method="prefix", virtual_tokens=N, projection=True, width=64)
mlp = {k: model.params[k].size for k in model.trainable_names("prefix_mlp") if not k.startswith("heads.")}
print(f"trained through the MLP: {sum(mlp.values()):,} numbers for a table of {2 * L * N * H:,}")

from minadapt.methods.prefix import table

P = table(model, "prefix_mlp")  # the MLP evaluated once: (n, 2 L H)
model.add_classification_head("prefix_merged", num_labels=2)
model.add("prefix_merged", method="prefix", virtual_tokens=N)
heads_of_mlp = {k.replace("prefix_mlp", "prefix_merged"): model.params[k].copy()
                for k in model.trainable_names("prefix_mlp") if k.startswith("heads.")}
model.put({bert.prefix_names("prefix_merged", False)[0]: P, **heads_of_mlp})  # the same head
gap = np.abs(model.logits(ids, mask, types, adapter="prefix_mlp")
             - model.logits(ids, mask, types, adapter="prefix_merged")).max()
print("logits through the MLP vs the merged table:", gap)
assert gap < 1e-12
'''),
md(r'''
## 5. Which merge into the weights, and what each costs

A method whose change is linear in a weight folds into it:

* LoRA: $W' = W + \frac{\alpha}{r} B A$;
* IA3 on an output: $(x W^\top + b) \odot l = x (\operatorname{diag}(l) W)^\top + l \odot b$; on an
  input: $(x \odot l) W^\top = x (W \operatorname{diag}(l))^\top$. `model.merged("ia3")` returns a
  model that runs the bare backbone's code.

A bottleneck adapter has a nonlinearity between its two projections, and a prompt or a prefix adds
*rows* (tokens, or keys and values) rather than changing a weight: none of these can merge, and the
prompt and the prefix make every forward pass dearer, more so for short sentences.
'''),
code(r'''
rng = np.random.default_rng(1)
for k in model.trainable_names("ia3"):  # a fresh IA3 is all ones: give it scales that change W
    if ".ia3_l." in k:
        model.params[k][...] = 1 + 0.1 * rng.standard_normal(model.params[k].shape)
merged = model.merged("ia3")
assert not any(".ia3_l." in k for k in merged.params)
gap = np.abs(merged.logits(ids, mask, types, adapter="ia3") - model.logits(ids, mask, types, adapter="ia3")).max()
print("IA3 merged vs unmerged logits:", gap)
assert gap < 1e-12  # the same numbers, computed in another order
for name in ("prompt", "prefix", "houlsby"):
    try:
        model.merged(name)
    except Exception as e:
        print(f"{name}: {e}")
'''),
md(r'''
What each costs at inference, measured by `benchmarks/method_latency.py` (its committed report,
with the command and the machine that made it): every method answers the same batches of 64 tokens,
and each time is paired with the bare backbone's (the probe) in the same round. Read its ratios beside
the arithmetic below.
'''),
code(r'''
import json

report = json.loads((ROOT / "benchmarks" / "results" / "method_latency.json").read_text())
print(report["command"])
print(report["machine"], report["date"])
batches = [str(b) for b in report["batches"]]
print(f"{'model':>12s} " + " ".join(f"{'batch ' + b + ' ms':>14s} {'/ bare':>7s}" for b in batches))
for k, row in report["table"].items():
    print(f"{k:>12s} " + " ".join(f"{row[b]['ms']:14.1f} {row[b]['ratio_to_probe']:7.3f}" for b in batches))
'''),
md(r'''
The arithmetic does not depend on the machine. A layer's matmuls cost $2(4H^2 + 2HF)$ per row and
its attention $4 T_k H$ per query row, so against the bare layer:
'''),
code(r'''
def forward_flops(rows, keys):
    """Matmul FLOPs of one layer's forward: `rows` rows attending to `keys` keys."""
    return rows * (2 * (4 * H * H + 2 * H * F) + 4 * keys * H)


for T_ in (16, 64):
    bare_flops = forward_flops(T_, T_)
    print(f"T = {T_:2d}: prompt (n + T rows and keys) {forward_flops(N + T_, N + T_) / bare_flops:.3f} x, "
          f"prefix (T rows, n + T keys) {forward_flops(T_, N + T_) / bare_flops:.3f} x")
'''),
md(r'''
The prompt makes every sequence $n$ rows longer in every layer: a third dearer at 64 tokens, more
than twice at 16; its measured ratio is the one that stands out of the noise. The prefix adds keys,
not rows: under 1% of the arithmetic at 64 tokens, though like an unmerged IA3 or LoRA it costs the
[CLS]-only last layer its shortcut (lesson 7: that layer never forms keys and values when nothing
touches them). Merged, IA3 and LoRA run the bare backbone's code with other numbers in $W$; a
prompt or a prefix can never be merged away.

Which of them trains best on a given task is a question for `minadapt compare` (lesson 10 reads
its results): the methods are in its table, and benchmarks/README.md holds the runs made.
'''),
]
