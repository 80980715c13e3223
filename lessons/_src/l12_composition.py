"""Lesson 12: composing adapters: a batch of several tasks equal to its rows run alone, Stack,
Average, and AdapterFusion's attention over two trained adapters, per layer, as a picture."""
from .cells import SETUP, WEIGHTS, code, md

THREADS = code(r'''
# Before NumPy is imported: let OpenBLAS's idle worker threads sleep after a moment instead of
# spinning (lesson 6 says why).
import os

if "OPENBLAS_THREAD_TIMEOUT" not in os.environ:  # a value you set yourself wins
    os.environ["OPENBLAS_THREAD_TIMEOUT"] = "1"
''')

CELLS = [
md(r'''
# Lesson 12 — Adapters that compose

Adapters are kept apart from the backbone so that they can be combined. Lesson 9 ran two tasks on
one backbone, one call per task. This lesson composes them (`minadapt/compose.py`):

1. **a batch of several tasks**: one task per row, the backbone's matmuls once over the batch, each
   adapter and head on its own rows; every row equals that row run alone;
2. **Stack**: one adapter's output into the next at every site (MAD-X: a language adapter, then a
   task adapter) and **Average**: the adapters' outputs averaged;
3. **AdapterFusion** (Pfeiffer et al., 2021): two trained adapters frozen, and at every adapter site
   an attention over their outputs that learns, per token, how much of each to use; its weights
   per layer as a picture.

At each adapter site the encoder hands the composition the sub-layer's output `o` and its input
`res` and gets back `LayerNorm(block(o) + res)`; a block is data (a small tree), not a branch in
the encoder:

| block | h → h' |
|---|---|
| adapter a | h + A_a(h) |
| Stack(a, b) | b(a(h)) |
| Average(a, b; w) | (w_a a(h) + w_b b(h)) / 2 (AdapterHub's mean of the weighted outputs) |
| Fuse(a, b) | Fusion(query h, keys and values A_a(h), A_b(h)) + h |

Each of these equals AdapterHub's in float64 (`tests/test_composition.py`).
'''),
THREADS,
SETUP,
WEIGHTS,
md(r'''
## 1. Two trained adapters

As in lesson 9: an SST-2 adapter (sentiment of a film review, 2 labels) and a BBC News one (5
topics), trained briefly on one model.
'''),
code(r'''
import tempfile

import minadapt
from minadapt import compose
from minadapt.tasks import Examples, get_task, load_task
from minadapt.train import TrainConfig, train

TASKS = {"sst2": get_task("sst2"), "bbc": get_task("bbc-news")}
data = {name: load_task(task) for name, task in TASKS.items()}
model = minadapt.load_model(WEIGHTS, dtype="float32")
runs = tempfile.TemporaryDirectory()
SETTINGS = dict(options={"bottleneck": 16}, batch_size=16, max_length=48, eval_every=0)
STEPS = {"sst2": 60, "bbc": 40}
SUBSET = {"sst2": 2000, "bbc": 800}
DEV = 300


def dev_subset(examples, n=DEV):
    return Examples(examples.texts[:n], None, examples.labels[:n])


for name in TASKS:
    cfg = TrainConfig(task=TASKS[name].name, adapter_name=name, out=f"{runs.name}/{name}",
                      max_steps=STEPS[name], train_subset=SUBSET[name], **SETTINGS)
    result = train(cfg, model=model, data={"train": data[name]["train"],
                                           "dev": dev_subset(data[name]["dev"])}, progress=False)
    print(f"{name}: {result.steps} steps, dev {result.dev_metrics}")
print("the model holds:", model.names())
'''),
md(r'''
## 2. A batch of several tasks

`adapter=` takes one task per row. The embeddings, attention and feed-forward matmuls run once over
the whole batch; at every adapter site each task's adapter runs on its rows only, and each head on
its rows' [CLS] vectors. The logits come back per task, each task's rows in batch order.
'''),
code(r'''
texts = ["a gorgeous , witty , seductive movie .",
         "shares in the carmaker fell sharply after it cut its profit forecast .",
         "the plot is a mess and the acting is worse .",
         "the striker scored twice as the home side won the cup final .",
         "an utterly charming and hilarious film ."]
tasks = ["sst2", "bbc", "sst2", "bbc", "sst2"]
batch = model.tokenizer.encode(texts)
mixed = model.logits(*batch, adapter=tasks)
for name, logits in mixed.items():
    rows = [r for r, t in enumerate(tasks) if t == name]
    for j, r in enumerate(rows):
        alone = model.logits(*(a[r:r + 1] for a in batch), adapter=name)
        # float32: equal to rounding, not bit for bit (BLAS may block a product of another
        # shape differently); tests/test_mixed_batch.py checks float64 to 1e-12
        assert np.allclose(logits[j], alone[0], rtol=1e-4, atol=1e-4)
        label = TASKS[name].names[int(logits[j].argmax())]
        print(f"{name:4s} {label:>13s}   {texts[r][:60]}")
'''),
md(r'''
One forward pass answered two different questions, each row with its own task, and every row's
answer is the one that row gets alone. Training works the same way:
`model.loss_and_grads(..., adapter=tasks)` returns each task's gradients as its own rows alone
would give them (the loss is the sum of each task's mean loss), so one step can train several tasks.

## 3. Stack and Average

A composition is a block built from the adapters' configs. Stacking the SST-2 adapter on the BBC
one, or averaging their outputs, gives a new function of the text at every site; run it with
either task's head (`compose.run_groups` takes a block, a head and the rows it applies to).
'''),
code(r'''
sst2, bbc = model.adapters["sst2"], model.adapters["bbc"]
blocks = {"sst2 alone": sst2, "Stack(bbc, sst2)": compose.Stack(bbc, sst2),
          "Average(bbc, sst2)": compose.Average(bbc, sst2)}
dev = dev_subset(data["sst2"]["dev"], 200)
dev_batch = model.tokenizer.encode(dev.texts)
for what, block in blocks.items():
    (logits,) = compose.run_groups(model, *dev_batch, [(block, "sst2", slice(None))])
    print(f"{what:20s} SST-2 dev accuracy (200 examples), the sst2 head: "
          f"{(logits.argmax(1) == dev.labels).mean():.1%}")
'''),
md(r'''
Neither was trained for this: the SST-2 head reads what the composed adapters write. Stacking the
BBC adapter under the SST-2 one shifts the SST-2 adapter's input away from the one it learned on;
averaging halves the sub-layer's own output (AdapterHub's Average divides the weighted sum by the
number of adapters, weights that sum to 1 included). A stack is useful when it is trained as one, as
MAD-X does: the language adapter frozen, the task adapter trained on top.

## 4. AdapterFusion

A fusion task keeps both adapters frozen and learns, at every adapter site, a query from the
sub-layer's output and keys and values from each adapter's output (nn/fusion.py); a softmax over
the adapters weights their values. It trains the fusion layers and a new head only. From the
command line this is `minadapt train sst2 --fuse sst2.safetensors bbc.safetensors`; here the same
run from Python: the two adapter files, and a fresh model that loads them.
'''),
code(r'''
files = {name: model.save_adapter(f"{runs.name}/{name}.safetensors", adapter=name) for name in TASKS}
fused = minadapt.load_model(WEIGHTS, dtype="float32")
cfg = TrainConfig(task="sst2", adapter_name="sst2-fused", method="fusion", out=f"{runs.name}/fused",
                  options={"fuse": (str(files["sst2"]), str(files["bbc"]))},
                  max_steps=60, train_subset=2000, batch_size=16, max_length=48, eval_every=0)
result = train(cfg, model=fused, data={"train": data["sst2"]["train"], "dev": dev_subset(data["sst2"]["dev"])},
               progress=False)
print(f"sst2-fused: {result.steps} steps, dev {result.dev_metrics}")
print("the fused model holds:", fused.names(), "; the fusion trains",
      len(fused.trainable_names("sst2-fused")), "arrays, e.g.", sorted(fused.trainable_names("sst2-fused"))[0])
for name in TASKS:  # the adapters never moved
    assert all(np.array_equal(fused.params[k], model.params[k]) for k in model.trainable_names(name))
'''),
md(r'''
Each token at each site has its own distribution over the two adapters. Averaged over the tokens of
the dev sentences, per layer and site:
'''),
code(r'''
p = compose.fusion_attention(fused, "sst2-fused", *dev_batch)
mask = dev_batch.attention_mask.astype(bool)
sites = sorted(p)
mean = np.array([p[s][mask].mean(axis=0) for s in sites])  # (sites, 2)
fig, ax = plt.subplots(figsize=(7, 3))
im = ax.imshow(mean.T, vmin=0, vmax=1, cmap="viridis", aspect="auto")
ax.set_xticks(range(len(sites)), [f"L{i}\n{'attn' if w == 'attention.output' else 'ffn'}" for i, w in sites])
ax.set_yticks([0, 1], ["sst2", "bbc"])
ax.set_title("AdapterFusion: mean weight of each adapter, per layer and site")
fig.colorbar(im, ax=ax)
plt.show()
for s, m in zip(sites, mean):
    print(f"layer {s[0]} {s[1]:17s} sst2 {m[0]:.2f}  bbc {m[1]:.2f}")
assert np.allclose(mean.sum(1), 1.0, atol=1e-5)
'''),
md(r'''
What the picture can show after a short run is where the fusion moved first; AdapterFusion's claim
(that fusing helps, or at least does not hurt, the target task) is about fully trained fusions, and
`benchmarks/README.md` has a comparison of a longer run against the SST-2 adapter alone.
'''),
]
