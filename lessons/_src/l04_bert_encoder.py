"""Lesson 4: the checkpoint, the config, the encoder layer by layer, matching transformers, parameter counts."""
from .cells import SETUP, WEIGHTS, code, md

CELLS = [
md(r'''
# Lesson 4 — The BERT encoder, from checkpoint to last hidden state

Lessons 1–3 built every op. This lesson assembles them into the pretrained encoder:

1. how the checkpoint file is laid out and how `minadapt.io.weights` reads and checks it;
2. the config, and the flat parameter dict with Q, K and V fused into one matrix;
3. the embeddings (the last op under `minadapt/nn/`);
4. one encoder layer, run by hand, and its backward checked end to end;
5. the proof that it is the same function as HuggingFace transformers' `BertModel`: our float64
   forward against a stored float64 reference, to $10^{-14}$;
6. where the 22.6 million parameters are.
'''),
SETUP,
WEIGHTS,
md(r'''
## 1. The checkpoint: a safetensors file

`model.safetensors` is deliberately simple: 8 bytes giving the length of a JSON header, the header
(for each tensor: dtype, shape, and byte range in the data section, plus a `__metadata__` dict of
strings), then the raw little-endian bytes. Loading it cannot execute code, unlike a pickled
PyTorch `.bin`. We can read the header with nothing but `struct` and `json`:
'''),
code(r'''
import json
import struct

with open(WEIGHTS / "model.safetensors", "rb") as f:
    (header_len,) = struct.unpack("<Q", f.read(8))  # unsigned 64-bit, little-endian
    header = json.loads(f.read(header_len))
print(f"header: {header_len:,} bytes of JSON describing {len(header) - 1} tensors; metadata {header['__metadata__']}")
for name in ("embeddings.word_embeddings.weight", "encoder.layer.0.attention.self.query.weight", "pooler.dense.bias"):
    print(f"  {name:45s} {header[name]}")
'''),
md(r'''
`minadapt.io.weights.read_safetensors` returns every tensor as a NumPy array (via the `safetensors`
package) plus the metadata, and turns a missing or truncated file into an error that says so.
`expected_shapes(cfg)` lists every parameter the encoder needs, by HuggingFace name and shape,
computed from the config alone. Compare the two key sets:
'''),
code(r'''
from minadapt import BertConfig
from minadapt.io.weights import OPTIONAL_PREFIXES, expected_shapes, load_checkpoint, read_safetensors

cfg = BertConfig.from_json(WEIGHTS / "config.json")
tensors, metadata = read_safetensors(WEIGHTS / "model.safetensors")
expected = expected_shapes(cfg)
print(f"{len(tensors)} tensors in the file, {len(expected)} expected by the encoder")
print("in the file but not needed:", sorted(set(tensors) - set(expected)))
print("needed but not in the file:", sorted(set(expected) - set(tensors)))
print("skipped prefixes:", OPTIONAL_PREFIXES)
'''),
md(r'''
The extras are the **pooler** (`BertModel`'s tanh layer on [CLS]; adapter heads read the [CLS]
hidden state directly and do not use it), the `position_ids` buffer (just `arange(512)`), and, in
pre-training checkpoints, the `cls.` heads. A checkpoint saved from a task model
(`BertForSequenceClassification` and friends) has every encoder name prefixed with **`bert.`**;
`load_checkpoint` strips that prefix, skips the optional keys, then insists on exactly the expected
key set and every shape, naming the offending key. Both behaviours, on a tiny made-up checkpoint
written to a temporary folder:
'''),
code(r'''
import tempfile

from minadapt.errors import WeightsError
from minadapt.io.weights import save_tensors

tiny_cfg = BertConfig(vocab_size=20, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=12, max_position_embeddings=16, layer_norm_eps=1e-5)
rng = np.random.default_rng(0)
tiny = {name: rng.standard_normal(shape).astype(np.float32) for name, shape in expected_shapes(tiny_cfg).items()}

with tempfile.TemporaryDirectory() as tmp:
    # as a BertForSequenceClassification would save it: "bert." everywhere, plus a pooler
    prefixed = {"bert." + k: v for k, v in tiny.items()}
    prefixed["bert.pooler.dense.weight"] = np.zeros((8, 8), np.float32)
    save_tensors(f"{tmp}/prefixed.safetensors", prefixed, {"format": "pt"})
    loaded = load_checkpoint(f"{tmp}/prefixed.safetensors", tiny_cfg, np.float64)
    print("prefixed checkpoint loads:", len(loaded), "tensors, e.g.", next(iter(loaded)), loaded[next(iter(loaded))].dtype)

    broken = dict(tiny)
    broken["encoder.layer.1.intermediate.dense.weight"] = np.zeros((12, 7), np.float32)
    save_tensors(f"{tmp}/broken.safetensors", broken, {})
    try:
        load_checkpoint(f"{tmp}/broken.safetensors", tiny_cfg)
    except WeightsError as e:
        print("WeightsError:", str(e).replace(tmp, "<tmp>"))
'''),
md(r'''
## 2. Config, model, and the fused Q|K|V

`BertConfig` (a frozen dataclass in `minadapt/config.py`) keeps only the fields the maths needs, each
with transformers' meaning; `from_json` checks the required ones and refuses activations other than
BERT's exact GELU. `minadapt.load_model(folder, dtype, device)` reads config, checkpoint and tokenizer
and builds a `Model`. Its `params` is one flat dict, HuggingFace name $\to$ array, in torch layout
`(out, in)`, so every linear layer computes `x @ W.T`.

We load it in **float64** here, because section 5 compares against float64 reference numbers, and
with `ops="reference"`: the encoder then runs the plain ops of `minadapt/nn/` that lessons 1–3 read.
(`ops="fast"`, the default, runs their twins in `minadapt/fast/` instead; the equations in
`bert.py` are the same either way, since `bert.py` calls every op through `run.ops`.)
'''),
code(r'''
import minadapt

print(cfg)
model = minadapt.load_model(WEIGHTS, dtype="float64", ops="reference")
print(f"\n{len(model.params)} parameters in model.params, dtype {model.dtype}, device {model.device}")
for name in list(model.params)[:6]:
    print(f"  {name:45s} {model.params[name].shape}")
'''),
md(r'''
**Why Q, K and V are views into one matrix.** Each layer starts with three projections of the same
input $x$: $q = xW_q^\top + b_q$, $k = xW_k^\top + b_k$, $v = xW_v^\top + b_v$. Stacking the three
weights into one `(3H, H)` matrix turns them into a single matmul, $[q\,|\,k\,|\,v] = x\,W_{qkv}^\top + b_{qkv}$:
one BLAS call that reads $x$ once and works on a matrix three times wider, which BLAS runs closer to
its peak. `Model._fuse_qkv` does it once at load time, and then replaces the three dict entries by
*views* into the fused matrix (`model.qkv[i]` holds `(W_qkv, b_qkv)` for layer `i`). So the dict still
has the checkpoint's names and shapes (saving, loading, freezing by name all keep working), and no
memory is duplicated.
'''),
code(r'''
p = "encoder.layer.0.attention.self."
w_qkv, b_qkv = model.qkv[0]
print("fused weight:", w_qkv.shape, "| bias:", b_qkv.shape)
for j, n in enumerate(("query", "key", "value")):
    w = model.params[p + n + ".weight"]
    print(f"  {n:5s}: shape {w.shape}, a view into the fused matrix: {w.base is w_qkv}, "
          f"rows {j * cfg.hidden_size}..{(j + 1) * cfg.hidden_size - 1}")
'''),
code(r'''
x_rows = np.random.default_rng(1).standard_normal((64, cfg.hidden_size))
fused = x_rows @ w_qkv.T + b_qkv  # (N, 3H): one product
three = [x_rows @ model.params[p + n + ".weight"].T + model.params[p + n + ".bias"] for n in ("query", "key", "value")]
print("one fused product == the three separate ones:", np.allclose(fused, np.concatenate(three, axis=-1), rtol=0, atol=1e-12))
'''),
md(r'''
The numbers are the same; what changes is the work's shape. One product three times as wide
reads $x$ once instead of three times, and on a GPU it is one kernel launch instead of three
(lesson 8 says why launches matter there).

## 3. Embeddings: the last op under `minadapt/nn/`

Token $t$ of sentence $b$ starts as the sum of three learned rows:

$$e_{b,t} = W_\text{word}[\text{id}_{b,t}] + W_\text{pos}[t] + W_\text{type}[\text{type}_{b,t}] ,$$

then LayerNorm and dropout (`bert.embeddings_forward`). A table lookup is a matrix product with a
one-hot matrix, $W[\text{id}] = \text{onehot}(\text{id})\,W$, so its backward is the transposed product,
a **scatter-add**: row $v$ of $\bar W_\text{word}$ is the sum of $\bar e_{b,t}$ over every position
whose id is $v$. When a word occurs twice, both contributions must be added; `embedding.backward`
uses `xp.add.at` for that, because fancy-index `+=` silently keeps only one of them:
'''),
code(r'''
from minadapt import gradcheck
from minadapt.nn import embedding

ids = np.array([[1, 4, 4, 0]])  # word 4 occurs twice
contrib = np.ones((4, 2))
with_plus = np.zeros((6, 2))
with_plus[ids.reshape(-1)] += contrib  # buffered: the second "4" overwrites the first
with_add_at = np.zeros((6, 2))
np.add.at(with_add_at, ids.reshape(-1), contrib)
print("row 4 with fancy-index += :", with_plus[4], "   with np.add.at:", with_add_at[4])

tables = [tiny[k].astype(np.float64) for k in ("embeddings.word_embeddings.weight",
                                               "embeddings.position_embeddings.weight",
                                               "embeddings.token_type_embeddings.weight")]
ids = rng.integers(0, 20, (2, 5))
ids[0, 1] = ids[0, 3] = ids[1, 2]  # a repeated word
types = np.array([[0, 0, 0, 1, 1], [0, 0, 0, 0, 0]])
e, emb_cache = embedding.forward(ids, types, *tables)
de = rng.standard_normal(e.shape)
grads = embedding.backward(de, emb_cache)
for j, name in enumerate(("word", "pos", "type")):
    def f(table, j=j):
        args = list(tables)
        args[j] = table
        return embedding.forward(ids, types, *args)[0]
    print(f"rel_error dW_{name}: {gradcheck.check(f, tables[j], de, grads[j]):.1e}")
'''),
md(r'''
(Adapters, LoRA and probes leave the embeddings frozen; full fine-tuning, `--method full`, trains
them through this backward: `encoder_backward` reaches it only when an embedding table is trainable.)

## 4. One encoder layer, by hand

`bert.py`'s docstring gives one layer in seven lines; `layer_forward` is those lines, with the
adapters of lesson 5 as the identity when none is added:

$$\begin{aligned}
[q\,|\,k\,|\,v] &= x\,W_{qkv}^\top + b_{qkv} && (B, T, 3H)\ \text{one matmul}\\
c &= \operatorname{attention}(q, k, v, \text{mask}) && (B, T, H)\ \text{lesson 3}\\
a &= \operatorname{adapter}_\text{attn}\big(\operatorname{dropout}(c\,W_o^\top + b_o)\big)\\
h &= \operatorname{LayerNorm}_1(a + x) && \text{residual, then normalise ("post-LN")}\\
f &= \operatorname{gelu}(h\,W_i^\top + b_i) && (B, T, F)\\
o &= \operatorname{adapter}_\text{ffn}\big(\operatorname{dropout}(f\,W_{o2}^\top + b_{o2})\big)\\
\text{out} &= \operatorname{LayerNorm}_2(o + h)
\end{aligned}$$

The encoder is `embeddings_forward`, then `layer_forward` for $i = 0 \dots 5$, each layer reading its
weights from the dict by name (`encoder.layer.{i}.intermediate.dense.weight`, ...). We run it ourselves
on the six reference sentences used in section 5, watching each layer's output:
'''),
code(r'''
from minadapt import bert
from minadapt.nn import attention

REFERENCE = ROOT / "tests" / "fixtures" / "reference.safetensors"
if REFERENCE.is_file():
    ref, ref_meta = read_safetensors(REFERENCE)
    input_ids, attention_mask, token_type_ids = (ref[f"inputs.{k}"] for k in
                                                 ("input_ids", "attention_mask", "token_type_ids"))
    sentences = json.loads(ref_meta["sentences"])
else:  # the fixture is generated by tests/make_fixtures.py (needs torch + transformers)
    ref = None
    sentences = ["Hello world.", "The movie was surprisingly good, and the acting felt honest.", "Okay."]
    input_ids, attention_mask, token_type_ids = model.tokenizer.encode(sentences)
    print(f"{REFERENCE.relative_to(ROOT)} is not there: run tests/make_fixtures.py to create it. "
          "Using three sentences of our own below.")
real = attention_mask.astype(bool)  # (B, T): True on real tokens, False on [PAD]
print(f"{len(sentences)} sentences, padded to T = {input_ids.shape[1]}; real tokens per sentence: {real.sum(1)}")

run = bert.Run(ops=model.ops)  # the model's ops; evaluation: no dropout, no adapter, nothing trainable
x, emb_cache = bert.embeddings_forward(model.params, model.cfg, input_ids, token_type_ids, run)
bias = attention.mask_bias(attention_mask, model.dtype)
print(f"embeddings  -> {x.shape}, mean |x| over real tokens {np.abs(x[real]).mean():.3f}")
layer_inputs = []
for i in range(model.cfg.num_hidden_layers):
    x_in = x
    layer_inputs.append(x_in)
    x, cache = bert.layer_forward(model.params, i, x, bias, model.qkv[i], model.cfg, run)
    change = np.linalg.norm(x - x_in, axis=-1)[real].mean() / np.linalg.norm(x_in, axis=-1)[real].mean()
    print(f"layer {i}     -> {x.shape}, relative change of the token vectors {change:.2f}")
print("LayerCache fields:", cache._fields)
'''),
md(r'''
`model.encode` does exactly this (through `bert.encoder_forward`), so the two must agree bit for bit:
'''),
code(r'''
h_model = model.encode(input_ids, attention_mask, token_type_ids)
print("layer-by-layer == model.encode:", np.array_equal(x, h_model))
'''),
md(r'''
### The layer's backward

`layer_backward` is the forward read bottom-up. Two places need care, and both are the **residual
adds**. In $h = \operatorname{LayerNorm}_1(a + x)$ the sum's gradient goes *both* to $a$ (and on
through the adapter, dense layer and attention) *and* straight to $x$; likewise for $o + h$. The code
keeps the residual branch in a variable (`do`, `dx_res`) and adds it explicitly where the two
paths meet, rather than accumulating with `+=` into shared buffers (a classic source of bugs):

```
out = LN2(o + h)         ->  do = LN2 backward   (kept: the residual branch to h)
o = adapter(dropout(f Wo2^T + bo2))  ->  adapter, dropout, linear backward  -> df
f = gelu(h Wi^T + bi)    ->  gelu, linear backward -> dh;   dh = dh + do
h = LN1(a + x)           ->  da = LN1 backward;  dx_res = da
a = adapter(dropout(c Wo^T + bo))    ->  ... -> dc
c = attention(q, k, v)   ->  dq, dk, dv
[q|k|v] = x Wqkv^T + b   ->  one linear backward of the concatenated [dq|dk|dv] -> dx;  dx + dx_res
```

The whole layer's backward is checked here against finite differences on a tiny random layer
(`H = 8`, two heads) in float64: the input gradient, and two weights made trainable through
`Run(trainable=...)`. The key weight is a slice of the fused matrix, so its check also tests that the
fused gradient is split back into the three named parameters. (Q, K and V train together or not at
all: one matmul has one weight gradient, and `bert.qkv_frozen` refuses a trainable set that names
only some of them.)
'''),
code(r'''
tiny_model = minadapt.Model(tiny_cfg, {k: v.astype(np.float64) for k, v in tiny.items()}, ops="reference")
tiny_mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
tiny_bias = attention.mask_bias(tiny_mask, np.float64)
tx = rng.standard_normal((2, 5, 8))
p0 = "encoder.layer.0."
trainable = {p0 + m + s for m in ("intermediate.dense", "attention.self.query", "attention.self.key",
                                  "attention.self.value") for s in (".weight", ".bias")}
trun = bert.Run(ops=tiny_model.ops, trainable=frozenset(trainable))
names = (p0 + "intermediate.dense.weight", p0 + "attention.self.key.weight")


def tiny_layer(x_):
    return bert.layer_forward(tiny_model.params, 0, x_, tiny_bias, tiny_model.qkv[0], tiny_cfg, trun)[0]


out, tcache = bert.layer_forward(tiny_model.params, 0, tx, tiny_bias, tiny_model.qkv[0], tiny_cfg, trun)
dout = rng.standard_normal(out.shape)
dx, layer_grads = bert.layer_backward(dout, tcache, 0, trun)
print("gradients returned for:", sorted(layer_grads))
print(f"rel_error dx: {gradcheck.check(tiny_layer, tx, dout, dx):.1e}")
for name in names:  # the weight is perturbed in place inside the dict (for the key: inside the fused matrix)
    err = gradcheck.check(lambda _: tiny_layer(tx), tiny_model.params[name], dout, layer_grads[name])
    print(f"rel_error {name}: {err:.1e}")
'''),
md(r'''
**The fast ops.** Everything so far ran the reference ops of `minadapt/nn/`. A model loaded with the
default `ops="fast"` runs the same equations of `bert.py` with the ops of `minadapt/fast/`. Two of
them change how the encoder works rather than how one op computes (lessons 2 and 3 cover those):
a frozen linear keeps a contiguous copy of $W^\top$ and multiplies by it
([fast/linear.py](../minadapt/fast/linear.py): BLAS first copies its second operand into blocks,
and from the transposed view $W$`.T` that copy is a slow strided gather; the weight is a constant,
so the copy is made once), and the last layer runs for [CLS] only (below). The whole encoder, fast
against reference, in float64:
'''),
code(r'''
fast64 = minadapt.load_model(WEIGHTS, dtype="float64")  # ops="fast", the default
h_fast = fast64.encode(input_ids, attention_mask, token_type_ids)
err = np.abs(h_fast - h_model)[real].max()
print(f"encode, fast ops vs reference ops, float64, real tokens: max abs difference {err:.1e}")
assert err < 1e-10
del fast64
'''),
md(r'''
**Two kinds of skipped work.** A classification head reads only the final [CLS] vector. The
reference computes every row of the last layer and the head reads one. The fast ops skip the rest:
[fast/cls_layer.py](../minadapt/fast/cls_layer.py) computes the last layer's query, attention output, FFN and adapters for
that **one row** per sentence (`encoder_forward(..., cls_only=True)` uses it when `run.ops.cls_layer`
is set); the query still attends to every token, through keys and values that, with Q, K and V
frozen, are never even formed (lesson 7 shows how). After the attention it is the same
`bert.after_attention_forward` on `(B, 1, H)` rows. The [CLS] row is the same:
'''),
code(r'''
last = cfg.num_hidden_layers - 1
from minadapt import ops
from minadapt.fast import cls_layer

fast_run = bert.Run(ops=ops.fast())
cls_out, _ = cls_layer.forward(model.params, last, layer_inputs[last], bias, model.qkv[last], model.cfg, fast_run)
print("cls_only output:", cls_out.shape, "| max |difference| to the full layer's [CLS] row:",
      np.abs(cls_out[:, 0] - h_model[:, 0]).max(), "(rounding: other ops, another order of sums)")
'''),
md(r'''
And in the backward, `encoder_backward(dh, caches, run, lowest)` walks the layers from the top down
to `lowest`, the lowest layer that holds a trainable parameter: nothing below it needs a gradient,
so the layers below are never visited, and the lowest one skips its input gradient (`need_dx=False`).
With adapters in every layer that is layer 0; with adapters only in the top layers, most of the
backward disappears. Lesson 7 measures both.

## 5. Matching transformers

The reference file `tests/fixtures/reference.safetensors` was made by `tests/make_fixtures.py`:
HuggingFace `transformers.BertModel` loaded from the same checkpoint folder, run in float64 and in
float32 on the six sentences above (minadapt itself never imports torch). We compare on **real tokens
only**: rows of padded positions are the outputs of padded queries, which nothing reads (lesson 3).
'''),
code(r'''
if ref is None:
    print("No reference file yet: run `python tests/make_fixtures.py` (needs the `ref` extra) and rerun.")
else:
    model32 = minadapt.load_model(WEIGHTS, dtype="float32")
    h32 = model32.encode(input_ids, attention_mask, token_type_ids)
    torch64, torch32 = ref["bert.f64.last_hidden_state"], ref["bert.f32.last_hidden_state"]
    comparisons = {
        "minadapt float64 vs transformers float64": np.abs(h_model - torch64)[real],
        "minadapt float32 vs transformers float32": np.abs(h32 - torch32)[real],
        "minadapt float32 vs transformers float64": np.abs(h32 - torch64)[real],
        "transformers float32 vs transformers float64": np.abs(torch32 - torch64)[real],
    }
    for name, err in comparisons.items():
        print(f"{name:46s} max abs error {err.max():.1e}")

    fig, ax = plt.subplots(figsize=(9, 3.6))
    bins = np.logspace(-19, -4, 76)
    for (name, err), colour in zip(comparisons.items(), ("C0", "C1", "C2", "grey")):
        ax.hist(np.maximum(err.ravel(), 1e-19), bins=bins, histtype="step", lw=1.5, color=colour, label=name)
    ax.set_xscale("log")
    ax.set_xlabel("|difference| per element of the last hidden state (real tokens; exact zeros drawn at 1e-19)")
    ax.set_ylabel("count")
    ax.set_title("Same function, two implementations: the gap is rounding, set by the precision")
    ax.legend(fontsize=8, loc="upper left")
    plt.show()
'''),
md(r'''
What to look at: in float64 the two implementations agree to about $10^{-14}$, a few dozen times
machine epsilon after six layers of arithmetic done in a different order: it is the same function,
exact GELU included. In float32 all three float32 curves sit around $10^{-7}$–$10^{-6}$: our float32
model is as far from the float64 truth as PyTorch's own float32 run is. That spread is rounding, and
it is why the tests compare float64 against float64.

## 6. Where the parameters are

`model.params` counts 22.6 million numbers. Counting them by role (Q/K/V entries are views, so
counting the dict counts each weight once):
'''),
code(r'''
def part(name):
    if "LayerNorm" in name:
        return "LayerNorms"
    for key, label in (("word_embeddings", "word embeddings"), ("position_embeddings", "position embeddings"),
                       ("token_type_embeddings", "token-type embeddings"), ("attention.self", "attention Q, K, V"),
                       ("attention.output.dense", "attention output"), ("intermediate.dense", "FFN in (H→F)"),
                       ("output.dense", "FFN out (F→H)")):
        if key in name:
            return label
    raise ValueError(name)


counts, per_layer = {}, {}
for name, value in model.params.items():
    counts[part(name)] = counts.get(part(name), 0) + value.size
    if name.startswith("encoder.layer.0."):
        per_layer[part(name)] = per_layer.get(part(name), 0) + value.size
total = sum(counts.values())
print(f"total {total:,} parameters ({total * 4 / 2**20:.0f} MiB in float32); the file also holds a "
      f"{sum(v.size for k, v in tensors.items() if k.startswith('pooler')):,}-parameter pooler we skip")

fig, axes = plt.subplots(1, 2, figsize=(14, 4))
order = sorted(counts, key=counts.get)
axes[0].barh(order, [counts[k] / 1e6 for k in order],
             color=["C1" if "embeddings" in k else "C0" for k in order])
for i, k in enumerate(order):
    axes[0].text(counts[k] / 1e6, i, f" {counts[k]:,} ({100 * counts[k] / total:.2g}%)", va="center", fontsize=8)
axes[0].set_xlabel("millions of parameters")
axes[0].set_title(f"the whole encoder ({total / 1e6:.1f} M): embeddings orange, 6 layers blue")
axes[0].set_xlim(0, max(counts.values()) / 1e6 * 1.35)
order1 = sorted(per_layer, key=per_layer.get)
axes[1].barh(order1, [per_layer[k] / 1e3 for k in order1], color="C0")
for i, k in enumerate(order1):
    axes[1].text(per_layer[k] / 1e3, i, f" {per_layer[k]:,}", va="center", fontsize=8)
axes[1].set_xlabel("thousands of parameters")
axes[1].set_title(f"one layer ({sum(per_layer.values()):,})")
axes[1].set_xlim(0, max(per_layer.values()) / 1e3 * 1.3)
plt.tight_layout()
plt.show()
'''),
md(r'''
What to look at: half of the model is the **word-embedding table** ($V \times H = 30522 \times 384$),
and a table lookup costs nothing to run. The compute is in the six layers, and there in the
feed-forward block: $2 \times H \times F = 2 \times 384 \times 1536$ weights, twice the attention's
$4H^2$. LayerNorms are a rounding error in the count.

This is the model the adapters of lesson 5 are added to, and none of these 22.6 million numbers will
change during adapter training.

**What you now know of `bert.py`:** `Run` (the ops, evaluation or training, the adapter, the
trainable set), `LayerCache`, `embeddings_forward`/`embeddings_backward`,
`layer_forward`/`layer_backward` (with the fused Q|K|V, the frozen linears and the residual
branches), `after_attention_forward`/`after_attention_backward` (the layer from the attention's
context on, which the fast [CLS]-only last layer shares), and `encoder_forward`/`encoder_backward`
(with `cls_only` and `lowest`). The helpers `_linear_forward`, `_ln_forward`, `qkv_frozen` and
`qkv_backward` only look parameters up by name and decide "frozen or not" from `run.trainable`;
`_adapter_forward` and `layer_norm_prefix` are lesson 5.
'''),
md(r'''
## Check your understanding

1. Why fuse $W_Q$, $W_K$, $W_V$ into one matrix?
2. Why can the backward stop at the lowest layer that holds an adapter?
3. Which of the model's parameters never receive a gradient in adapter training?

<details><summary>Answers</summary>

1. One product of $(N, H)$ by $(H, 3H)$ instead of three of $(H, H)$: the input is read once and one large matrix product runs more efficiently than three smaller ones.
2. Below it nothing trains: no gradient is needed there, not even $\bar x$.
3. All of the backbone's: embeddings, attention and feed-forward weights, LayerNorms (unless `train_layer_norms`); only the adapters and the head are trainable.
</details>
'''),
]
